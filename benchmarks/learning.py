"""Learning: the embedded default trained vs a frozen control, on the fixed probe.

The same config (configs/tiny.yaml unless --config) runs twice from seed S: *trained*, and a
*frozen* control with ``learner.apply_updates=false`` (the learner computes every loss and
gradient but applies no optimizer step; generation, execution, buffers, weight syncs and
evaluation run alike). Both evaluate the fixed probe (`azr eval`'s ``probe`` benchmarks:
``eval/probe/<type>``) at step 0 and every ``selfplay.eval_every`` steps. The frozen arm is the
baseline measured in the same run: its figures are what self-play's data alone, without an
update, gives.

Prints per task type the probe accuracy at step 0 and over the last ``--window`` evaluations
of both arms, the valid-proposal rates (first and last steps), each arm's wall time with the
load average, whether the frozen arm's final weights equal its starting weights (checksum),
and as its last line::

    learning: trained X frozen Y gain Z

X and Y: mean probe accuracy over task types over the last ``--window`` evaluations, in
percent; Z = X − Y in points. Target: Z >= +10 on seeds not tuned on, each arm <= 15 minutes
on the 2-core dev box.

    .venv/bin/python benchmarks/learning.py --seed 1 [--window 3] [section.key=value ...]

Export TMPDIR / RAY_TMPDIR / VLLM_CACHE_ROOT as the tests do. Runs go to
``<output_dir>/learning/seed<S>-<arm>`` (an earlier run there is renamed, never reused).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from tqdm import tqdm

from azr.config import AZRConfig, load_config
from azr.models import ensure_model
from azr.tasks import TaskType
from driver.loop import train
from learner.checkpoint import weights_digest

ARMS = {"trained": [], "frozen": ["learner.apply_updates=false"]}


def read_metrics(run_dir: Path, log_file: str) -> list[dict]:
    with (run_dir / log_file).open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def probe_curve(records: list[dict]) -> list[tuple[int, dict[str, float]]]:
    """(step, {task type: probe accuracy}) of every evaluation, in step order."""
    out = []
    for r in records:
        accs = {str(t): r[f"eval/probe/{t}"] for t in TaskType if f"eval/probe/{t}" in r}
        if accs:
            out.append((r["step"], accs))
    return out


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def arm_figures(records: list[dict], window: int, tasks: list[str]) -> dict:
    curve = probe_curve(records)
    if not curve or curve[0][0] != 0:
        raise SystemExit(
            "no step-0 probe evaluation in the metrics: is `probe` in eval_benchmarks?"
        )
    last = curve[-window:]
    steps = [r for r in records if r["step"] > 0]
    head, tail = steps[:window], steps[-window:]
    return {
        "step0": {t: curve[0][1][t] for t in tasks},
        "last": {t: mean([accs[t] for _, accs in last]) for t in tasks},
        "last_steps": [s for s, _ in last],
        "valid_first": {t: mean([r[f"{t}/propose/valid_rate"] for r in head]) for t in tasks},
        "valid_last": {t: mean([r[f"{t}/propose/valid_rate"] for r in tail]) for t in tasks},
        "curve": curve,
    }


def run_arm(config: AZRConfig, arm: str) -> tuple[Path, float, tuple[float, float]]:
    """Train one arm; its run directory, wall seconds and (load before, load after)."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    summary = train(config)
    seconds = time.perf_counter() - started
    return Path(summary["metrics_log"]).parent, seconds, (load_before, os.getloadavg()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True, help="the runs' seed")
    parser.add_argument("--config", default=None, help="YAML config (default configs/tiny.yaml)")
    parser.add_argument("--window", type=int, default=3, help="last evaluations averaged")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args()

    figures, walls, loads, run_dirs = {}, {}, {}, {}
    for arm in tqdm(ARMS, desc="learning arms", unit="arm"):
        config = load_config(
            args.config,
            [*args.overrides, f"seed={args.seed}", *ARMS[arm]],
        )
        config = config.model_copy(
            update={
                "output_dir": str(Path(config.output_dir) / "learning"),
                "run_name": f"seed{args.seed}-{arm}",
            }
        )
        if arm == "frozen":
            start_digest = weights_digest(ensure_model(config.model))
        run_dir, walls[arm], loads[arm] = run_arm(config, arm)
        run_dirs[arm] = run_dir
        tasks = config.selfplay.task_types
        figures[arm] = arm_figures(
            read_metrics(run_dir, config.metrics.log_file), args.window, tasks
        )
    checkpoints = sorted((run_dirs["frozen"] / "checkpoints").glob("step_*"))
    frozen_digest = weights_digest(checkpoints[-1] / "learner")

    print(f"seed {args.seed}; probe accuracy (%) at step 0 and over the evaluations at steps "
          f"{figures['trained']['last_steps']}")  # fmt: skip
    print(
        f"{'task type':<10} {'trained 0':>9} {'trained':>8} {'frozen 0':>9} {'frozen':>8} {'gain':>6}"
    )
    for t in tasks:
        tr, fr = figures["trained"], figures["frozen"]
        print(
            f"{t:<10} {100 * tr['step0'][t]:9.1f} {100 * tr['last'][t]:8.1f} "
            f"{100 * fr['step0'][t]:9.1f} {100 * fr['last'][t]:8.1f} "
            f"{100 * (tr['last'][t] - fr['last'][t]):+6.1f}"
        )
    print("valid-proposal rate (first -> last steps):")
    for t in tasks:
        parts = [
            f"{arm} {figures[arm]['valid_first'][t]:.2f} -> {figures[arm]['valid_last'][t]:.2f}"
            for arm in ARMS
        ]
        print(f"  {t:<10} " + ", ".join(parts))
    for arm in ARMS:
        curve = " ".join(
            f"{step}:{100 * mean(list(accs.values())):.0f}" for step, accs in figures[arm]["curve"]
        )
        print(f"{arm:<8} wall {walls[arm] / 60:5.1f} min (load average {loads[arm][0]:.1f} -> "
              f"{loads[arm][1]:.1f} on {os.cpu_count()} cores); mean probe by step {curve}; "
              f"run {run_dirs[arm]}")  # fmt: skip
    unchanged = "yes" if frozen_digest == start_digest else "NO"
    print(f"frozen weights unchanged: {unchanged} (sha256 {frozen_digest[:16]})")
    trained = 100 * mean([figures["trained"]["last"][t] for t in tasks])
    frozen = 100 * mean([figures["frozen"]["last"][t] for t in tasks])
    print(f"learning: trained {trained:.1f} frozen {frozen:.1f} gain {trained - frozen:+.1f}")


if __name__ == "__main__":
    main()
