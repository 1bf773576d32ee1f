"""Self-play step: per-phase time, two vs nine generation rounds, weight sync, learner idle.

One `Runtime` (tiny config: real Ray, vLLM CPU rollout, process sandbox pool, buffer actor,
FSDP2 learner over gloo) serves every measurement, so all ratios come from the same run:

1. **Per-phase time** of sync-mode steps driven by the driver's own pieces
   (`StepRunner.run`, `driver.schedule.UpdateSchedule`, `driver.loop.step_record`): generation (propose +
   solve rounds), execution, learner, weight sync, and driver overhead = step wall − the
   four. Target: driver overhead ≤ 5 % of step time.
2. **Schedule**: the same step's work in the reference's nine sequential generation rounds
   (`ReferenceSchedule`: per task type propose → validate → Monte-Carlo round → buffer solve
   round) vs ours (`StepRunner.propose` + `StepRunner.solve`: two rounds), interleaved, same
   prompt counts and sampling sizes. Prints seconds of each and nine/two.
3. **Weight sync** GB/s (`Runtime.sync_weights`) vs a plain in-memory copy of the same bytes
   (`benchmarks/weight_sync.memcpy_gbps`), same run. Target: ≥ 0.5×.
4. **Learner idle**, sync vs async mode, once as is and with generation slowed to GPU-like
   shares (``--gen-ratio``, default 3× and 1.5× the learner time measured in part 1): each
   generate call sleeps k × its uncontended cost (see `SlowedGenerator`). Prints idle
   fraction and idle seconds per step of each mode and the cut 1 − async/sync of both.
   Target: async cuts learner idle time by ≥ 40 % when generation dominates. With one
   learner and generation = r × learner time L, async at best takes the idle seconds per
   step from r·L to (r−1)·L, a 1/r cut (idle fraction: a 1/r² cut); the script prints
   that bound next to the measured cut — ≥ 40 % is reachable only for r ≤ 2.5.

    .venv/bin/python benchmarks/selfplay_step.py [--steps 4 --batch-size 4 --gen-ratio 3 1.5]

Export TMPDIR / RAY_TMPDIR / VLLM_CACHE_ROOT as the tests do. Figures in the module's report
were measured on the 2-core, no-GPU dev box.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.table import Table
from tqdm import tqdm
from weight_sync import memcpy_gbps  # same directory: the learner's sync-vs-memcpy baseline

from azr.config import AZRConfig, SamplingConfig, load_config
from azr.prompts import solve_prompt
from azr.selfplay import (
    Generator,
    Proposal,
    Solve,
    StepRunner,
    _trajectories,
    with_seed,
)
from azr.tasks import Role, TaskType
from driver.checkpoint import LoopState
from driver.loop import step_record
from driver.runtime import Runtime, local_cpus
from driver.schedule import UpdateSchedule
from learner.checkpoint import load_hf_weights
from learner.weight_buckets import tensor_bytes

REPO = Path(__file__).resolve().parent.parent
console = Console(width=120)  # the tables stay readable in a log file
GENERATION = ("generate_propose", "generate_solve")


class CountingGenerator:
    """Counts generate calls, prompts and completion tokens (the 'same work' evidence)."""

    def __init__(self, inner: Generator):
        self.inner = inner
        self.calls = 0
        self.prompts = 0
        self.tokens = 0

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[Any]:
        out = self.inner.generate(prompts, sampling)
        self.calls += 1
        self.prompts += len(prompts)
        self.tokens += sum(len(c.token_ids) for g in out for c in g.completions)
        return out


class SlowedGenerator:
    """Generation stretched to a GPU-like share of the step.

    Each call sleeps ``factor`` × its *uncontended* cost: completion tokens × the seconds per
    token measured in sync mode, where nothing runs beside generation. Sleeping k × the call's
    own wall time instead would also stretch the CPU contention with the learner that exists
    only because both share two cores here (on GPUs they do not), and penalise async mode for
    it. The sleep frees the CPU, so the learner really runs meanwhile, as on its own GPU.
    """

    def __init__(self, inner: Generator, factor: float, seconds_per_token: float):
        self.inner = inner
        self.factor = factor
        self.seconds_per_token = seconds_per_token

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[Any]:
        out = self.inner.generate(prompts, sampling)
        tokens = sum(len(c.token_ids) for g in out for c in g.completions)
        time.sleep(self.factor * tokens * self.seconds_per_token)
        return out


class TwoRounds(StepRunner):
    """Our schedule's generation rounds alone (propose, then solve), without rewards."""

    def rounds(self, step: int) -> dict[str, float]:
        """Run the rounds of one step; returns their phase timings."""
        self._timings = {}
        self.solve(step, self.propose(step))
        return dict(self._timings)


class ReferenceSchedule(TwoRounds):
    """The reference's order: for each task type, propose → validate → estimate → solve.

    Three sequential generation rounds per task type (nine per step), with the same prompts
    and sampling sizes as `StepRunner`: the proposals, one Monte-Carlo prompt per sample of
    each valid proposal, and buffer solves for the rest of the solve batch.
    """

    def _generate(self, prompts: list[str], sampling: SamplingConfig, phase: str) -> list[Any]:
        # A key per round: StepRunner keeps one per phase, and propose runs once per type here.
        round_ = sum(k.startswith("generate_") for k in self._timings) + 1
        return super()._generate(prompts, sampling, f"{phase}_round{round_}")

    def rounds(self, step: int) -> dict[str, float]:
        self._timings = {}
        sp = self.config.selfplay
        proposals: list[Proposal] = []
        solves: list[Solve] = []
        for index, task in enumerate(self.task_types):
            mine = self.propose(step, tasks=[task])  # round 1 of this type, then validation
            proposals.extend(mine)
            fresh = [p for p in mine if p.new_task is not None]
            mc_jobs = [(p.new_task, p) for p in fresh for _ in range(sp.mc_samples)]
            estimates = self._solve_round(step, task, [item for item, _ in mc_jobs], 10 + index)
            for solve_, (_, proposal) in zip(estimates, mc_jobs, strict=True):
                proposal.mc_accuracies.append(solve_.accuracy)
            fill = self.services.store.tasks(task, max(0, sp.batch_size - len(fresh)))
            solves.extend(estimates)
            solves.extend(self._solve_round(step, task, fill, 20 + index))
        return dict(self._timings)

    def _solve_round(self, step: int, task: TaskType, items: list, round_: int) -> list[Solve]:
        prompts = [self._chat(solve_prompt(task, item)) for item in items]
        sampling = with_seed(self.config.rollout.solve, self._request_seed(step, round_), n=1)
        generations = self._generate(prompts, sampling, f"solve_{task}_{round_}")
        solves = [
            Solve(task, item, _trajectories(task, Role.SOLVE, [generation])[0])
            for item, generation in zip(items, generations, strict=True)
        ]
        self.score(solves)
        return solves


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


class Bench:
    """The shared runtime plus a weight-version counter (rollout versions must increase)."""

    def __init__(self, rt: Runtime, config: AZRConfig):
        self.rt = rt
        self.config = config
        self.version = 0
        self.next_step = 1

    def loop(
        self, mode: str, steps: int, generator: Generator | None = None, desc: str = ""
    ) -> list[dict]:
        """``steps`` driver steps in ``mode`` (the driver's pieces, in its order)."""
        rt = self.rt
        services = dataclasses.replace(rt.services, generator=generator or rt.services.generator)
        runner = StepRunner(self.config, services, random.Random(self.config.seed + self.version))
        state = LoopState(version=self.version)
        schedule = UpdateSchedule(
            mode,
            rt.learner,
            max_staleness=self.config.selfplay.max_staleness,
            version=state.version,
        )
        records: list[dict] = []
        try:
            for _ in tqdm(range(steps), desc=desc or mode, unit="step", leave=False):
                step, self.next_step = self.next_step, self.next_step + 1
                started = time.perf_counter()
                output = runner.run(step)
                update = schedule.submit(output)
                records.append(
                    step_record(step, output, update, state, time.perf_counter() - started)
                )
            finished = schedule.drain()  # not timed: the loop's last update drains after the run
            if finished is not None:
                state.version = finished.version
        finally:
            schedule.close()
            self.version = state.version
        return records

    def schedules(self, repeats: int) -> dict[str, dict[str, float]]:
        """Seconds, generate calls, prompts and tokens of two- vs nine-round steps."""
        figures: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for _ in tqdm(range(repeats), desc="two vs nine rounds", unit="pair", leave=False):
            step, self.next_step = self.next_step, self.next_step + 1
            for name in ("two", "nine"):  # same step number: same request seeds
                counter = CountingGenerator(self.rt.services.generator)
                services = dataclasses.replace(self.rt.services, generator=counter)
                runner_type = ReferenceSchedule if name == "nine" else TwoRounds
                runner = runner_type(self.config, services, random.Random(step))
                started = time.perf_counter()
                timings = runner.rounds(step)
                seconds = time.perf_counter() - started
                row = figures[name]
                row["seconds"] += seconds
                row["generate_s"] += sum(v for k, v in timings.items() if k.startswith("generate_"))
                row["execute_s"] += timings.get("execute", 0.0)
                row["rounds"] += sum(k.startswith("generate_") for k in timings)
                row["calls"] += counter.calls
                row["prompts"] += counter.prompts
                row["tokens"] += counter.tokens
        return {k: {kk: vv / repeats for kk, vv in v.items()} for k, v in figures.items()}

    def weight_sync(self, repeats: int) -> dict[str, float]:
        results = []
        for _ in tqdm(range(repeats + 1), desc="weight sync", unit="sync", leave=False):
            self.version += 1  # the same weights again: each sync needs a newer version
            results.append(self.rt.sync_weights(self.version))
        results = results[1:]  # warm-up excluded
        state = load_hf_weights(Path(self.rt.model_path))
        sent = results[0]["bytes"]
        if "lm_head.weight" in state and sum(tensor_bytes(t) for t in state.values()) > sent:
            state.pop("lm_head.weight")  # tied: not sent by the sync
        seconds = statistics.median(r["seconds"] for r in results)
        return {
            "bytes": sent,
            "copied_bytes": float(sum(tensor_bytes(t) for t in state.values())),
            "sync_gbps": sent / seconds / 1e9,
            "sync_ms": seconds * 1e3,
            "gather_ms": statistics.median(r["gather_s"] for r in results) * 1e3,
            "put_ms": statistics.median(r["put_s"] for r in results) * 1e3,
            "rollout_ms": statistics.median(r["rollout"][0]["seconds"] for r in results) * 1e3,
            # Many repeats: a 3 MB copy takes ~0.1 ms and a busy shared box makes single runs noisy.
            "copy_gbps": memcpy_gbps(state, repeats=50, allocate=False),
        }


def phase_table(records: list[dict]) -> tuple[Table, float, float, float]:
    """Per-phase seconds (mean over steps) and driver overhead; returns (table, G, L, share)."""
    rows: dict[str, list[float]] = defaultdict(list)
    for r in records:
        generation = sum(r.get(f"time/{k}", 0.0) for k in GENERATION)
        parts = {
            "generation (propose + solve)": generation,
            "execution (validate + score)": r.get("time/execute", 0.0),
            "learner": r.get("time/learner", 0.0),
            "weight sync": r.get("time/sync_seconds", 0.0),
        }
        for name, value in parts.items():
            rows[name].append(value)
        rows["driver overhead"].append(r["step_seconds"] - sum(parts.values()))
        rows["step wall"].append(r["step_seconds"])
    wall = _mean(rows["step wall"])
    table = Table(title=f"per-phase time, sync mode, mean of {len(records)} steps")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    table.add_column("% of step", justify="right")
    for name, values in rows.items():
        table.add_row(name, f"{_mean(values):.3f}", f"{100 * _mean(values) / wall:.1f} %")
    share = _mean(rows["driver overhead"]) / wall
    generation = _mean(rows["generation (propose + solve)"])
    return table, generation, _mean(rows["learner"]), share


def learner_idle(records: list[dict], mode: str) -> tuple[float, float]:
    """(idle fraction, idle seconds per step) of the learner in the steady state.

    Every sync step trains on its own samples. An async step finishes the *previous* step's
    update, so its first step (pipeline fill: no update to finish) is left out, and the last
    update, drained after the loop, is not counted either: wall and busy cover the same
    updates. (The driver's cumulative ``learner_idle_fraction`` includes the fill step.)
    """
    steady = records[1:] if mode == "async" and len(records) > 1 else records
    wall = sum(r["step_seconds"] for r in steady)
    busy = sum(r.get("time/learner", 0.0) for r in steady)
    return max(0.0, 1.0 - busy / wall), (wall - busy) / len(steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per loop run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--mc-samples", type=int, default=3)
    parser.add_argument("--schedule-repeats", type=int, default=2)
    parser.add_argument("--sync-repeats", type=int, default=3)
    parser.add_argument(
        "--gen-ratio",
        type=float,
        nargs="+",
        default=[3.0, 1.5],
        help="slowed generation ≈ this × learner time (one sync + one async run per value)",
    )
    args = parser.parse_args()

    scratch = REPO / ".scratch"
    scratch.mkdir(exist_ok=True)
    out_dir = tempfile.mkdtemp(prefix="azr-bench-step-", dir=scratch)
    config = load_config(
        overrides=[
            f"output_dir={out_dir}",
            "run_name=bench",
            f"selfplay.batch_size={args.batch_size}",
            f"selfplay.mc_samples={args.mc_samples}",
            "selfplay.eval_every=0",
            "checkpoint.every=0",
            "metrics.enabled=false",
        ]
    )
    started = time.perf_counter()
    # Our own cluster with the actors' logs kept off stdout (the figures go there);
    # Runtime joins it and leaves it to us.
    ray.init(
        address="local",
        num_cpus=local_cpus(config),
        include_dashboard=False,
        log_to_driver=False,
    )
    rt = Runtime(config)
    try:
        with console.status("starting the executor pool, the buffer, vLLM and the learner"):
            rt.__enter__()
        console.print(f"runtime up in {time.perf_counter() - started:.1f} s (not timed below)")
        bench = Bench(rt, config)
        bench.loop("sync", 1, desc="warm-up")

        # 1 + 4a: sync mode as is (the per-phase figures), then async as is.
        counter = CountingGenerator(rt.services.generator)
        sync_plain = bench.loop("sync", args.steps, counter, desc="sync, as is")
        table, generation, learner, overhead = phase_table(sync_plain)
        console.print(table)
        console.print(
            f"driver overhead  : {100 * overhead:.1f} % of step time (target <= 5 %)"
            f" -> {'met' if overhead <= 0.05 else 'MISSED'}"
        )
        async_plain = bench.loop("async", args.steps, desc="async, as is")

        # 2: two rounds vs nine rounds.
        sched = bench.schedules(args.schedule_repeats)
        two, nine = sched["two"], sched["nine"]
        for name, row in (("two rounds (ours)", two), ("nine rounds (reference)", nine)):
            console.print(
                f"{name:24}: {row['seconds']:.2f} s/step (generate {row['generate_s']:.2f} s,"
                f" execute {row['execute_s']:.2f} s), {row['rounds']:.0f} rounds,"
                f" {row['calls']:.0f} non-empty generate calls,"
                f" {row['prompts']:.0f} prompts, {row['tokens']:.0f} tokens"
            )
        console.print(
            f"ratio nine/two   : {nine['seconds'] / two['seconds']:.2f}x step time"
            f" ({nine['generate_s'] / two['generate_s']:.2f}x generation time;"
            f" tokens nine/two {nine['tokens'] / max(two['tokens'], 1):.2f})"
        )

        # 3: weight sync against an in-memory copy of the same bytes.
        sync = bench.weight_sync(args.sync_repeats)
        ratio = sync["sync_gbps"] / sync["copy_gbps"]
        console.print(
            f"weight sync      : {sync['sync_gbps']:.3f} GB/s ({sync['bytes'] / 1e6:.1f} MB in"
            f" {sync['sync_ms']:.1f} ms, median of {args.sync_repeats}: gather"
            f" {sync['gather_ms']:.1f} ms, ray.put {sync['put_ms']:.1f} ms, rollout fetch +"
            f" reload {sync['rollout_ms']:.1f} ms, rest Ray calls)"
        )
        console.print(
            f"in-memory copy   : {sync['copy_gbps']:.3f} GB/s"
            f" ({sync['copied_bytes'] / 1e6:.1f} MB, same run)"
        )
        console.print(
            f"ratio sync/copy  : {ratio:.3f}x (target >= 0.5x) -> {'met' if ratio >= 0.5 else 'MISSED'}"
        )

        # 4b: generation slowed to GPU-like shares, sync then async for each.
        seconds_per_token = generation * len(sync_plain) / max(counter.tokens, 1)
        runs = {"as is": (sync_plain, async_plain)}
        for ratio_wanted in args.gen_ratio:
            factor = max(0.0, ratio_wanted * learner / max(generation, 1e-9) - 1.0)
            name = f"slowed {ratio_wanted:g}x learner"
            console.print(
                f"{name:17}: generation x{1 + factor:.2f} (learner {learner:.2f} s,"
                f" generation {generation:.2f} s, {seconds_per_token * 1e3:.2f} ms/token)"
            )
            slow = SlowedGenerator(rt.services.generator, factor, seconds_per_token)
            runs[name] = (
                bench.loop("sync", args.steps, slow, desc=f"sync, {name}"),
                bench.loop("async", args.steps, slow, desc=f"async, {name}"),
            )
        idle = Table(title="learner idle, sync vs async (steady state)")
        for column in ("generation", "sync idle", "async idle", "cut (fraction)", "cut (s/step)"):
            idle.add_column(column, justify="right")
        idle.add_column("1-learner bound (s/step)", justify="right")
        for name, (sync_records, async_records) in runs.items():
            fs, ss = learner_idle(sync_records, "sync")
            fa, sa = learner_idle(async_records, "async")
            gen_share = _mean(
                [sum(r.get(f"time/{k}", 0.0) for k in GENERATION) for r in sync_records]
            ) / max(_mean([r.get("time/learner", 0.0) for r in sync_records]), 1e-9)
            cut_s = 1 - sa / ss if ss else 0.0
            idle.add_row(
                f"{name} (gen {gen_share:.1f}x learner)",
                f"{fs:.3f} ({ss:.2f} s/step)",
                f"{fa:.3f} ({sa:.2f} s/step)",
                f"{100 * (1 - fa / fs if fs else 0.0):.1f} %",
                f"{100 * cut_s:.1f} % {'(>=40 %: met)' if cut_s >= 0.4 else '(<40 %)'}",
                f"{100 * min(1.0, 1 / max(gen_share, 1e-9)):.0f} %",
            )
        console.print(idle)
        console.print(
            "async hides at most one learner update per step: with generation = r x learner"
            " the idle seconds per step go from r·L to (r-1)·L at best (a 1/r cut)."
        )
        console.print(f"total benchmark time: {time.perf_counter() - started:.0f} s")
    finally:
        rt.__exit__(None, None, None)
        ray.shutdown()
        shutil.rmtree(out_dir, ignore_errors=True)  # the run's buffer files: scratch only


if __name__ == "__main__":
    main()
