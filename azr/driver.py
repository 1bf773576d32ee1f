"""The training loop: seeding, self-play steps, update, weight sync, eval, checkpoints.

Reads top to bottom. The Ray world (actors, pool) is built by :mod:`azr.runtime`; the step's
method by :mod:`azr.selfplay`; this file owns the schedule:

* **sync** (the paper): step t generates with weights t, the learner updates, the new weights
  are synced before step t+1 generates.
* **async**: the learner update of step t runs while step t+1 generates with weights t; the
  sync happens between steps. Samples more than ``selfplay.max_staleness`` versions behind
  the learner are dropped before the update.
"""

from __future__ import annotations

import json
import random
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from tqdm import tqdm

from azr.checkpointing import latest_checkpoint, load_driver_state, save_checkpoint
from azr.config import AZRConfig, dump_config
from azr.cruxeval import load_cruxeval
from azr.evaluation import cruxeval_accuracy, eval_subset
from azr.logs import configure_driver_logging
from azr.runtime import RunFailed, Runtime
from azr.selfplay import StepOutput, StepRunner
from azr.tasks import TaskType, TrainSample
from azr.telemetry import StepTelemetry

console = Console(stderr=True)


@dataclass
class LoopState:
    """What the loop carries between steps (and what a checkpoint restores)."""

    step: int = 0
    version: int = 0
    rng: random.Random = field(default_factory=random.Random)
    learner_busy_s: float = 0.0
    wall_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def admit(
    samples: list[TrainSample], learner_version: int, max_staleness: int
) -> list[TrainSample]:
    """Samples generated at most ``max_staleness`` versions behind the learner."""
    return [s for s in samples if learner_version - s.policy_version <= max_staleness]


def seed_buffers(config: AZRConfig, runner: StepRunner, store, tasks: list[TaskType]) -> None:
    """Optional seeding phase: propose with the untrained model until each buffer is full."""
    want = config.buffer.seed_size
    if want <= 0:
        return
    for round_ in tqdm(range(config.buffer.seed_max_rounds), desc="seeding buffers", unit="round"):
        short = [t for t in tasks if store.size(t) < want]
        if not short:
            return
        for proposal in runner.propose(step=-(round_ + 1), tasks=short):
            if proposal.new_task is not None:
                store.add(proposal.task, [proposal.new_task])
    console.print(f"[yellow]seeding stopped after {config.buffer.seed_max_rounds} rounds[/]")


def claim_run_dir(config: AZRConfig) -> AZRConfig:
    """The config of a new run, renamed ``<run_name>-2``, ``-3`` ... if its run directory
    already holds a run: reusing it would reload that run's durable buffers into this one and
    append to its metrics, and clearing it would destroy it."""
    name, n = config.run_name, 1
    while (Path(config.output_dir) / name).exists() and any(
        (Path(config.output_dir) / name).iterdir()
    ):
        n += 1
        name = f"{config.run_name}-{n}"
    if name != config.run_name:
        console.print(f"[yellow]{config.run_dir} holds an earlier run: this run is {name}[/]")
    return config.model_copy(update={"run_name": name})


def train(
    config: AZRConfig, resume: str | Path | None = None, verbose: bool = False
) -> dict[str, object]:
    """Run self-play; returns a summary. Ctrl-C stops cleanly after writing a checkpoint.

    A new run (no ``resume``) never reuses the directory of an earlier one (`claim_run_dir`).
    The INFO output of every process goes to ``<run dir>/logs/`` (``verbose``: the console).
    """
    if resume is None:
        config = claim_run_dir(config)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    log_dir = run_dir / "logs"
    configure_driver_logging(log_dir, verbose)
    eval_set = _eval_set(config)  # a missing eval file fails now, not after the actors start
    state = LoopState(rng=random.Random(config.seed))
    metrics_log = (run_dir / config.metrics.log_file).open("a")
    with Runtime(config, log_dir=None if verbose else log_dir) as rt:
        runner = StepRunner(config, rt.services, state.rng)
        telemetry = StepTelemetry(enabled=config.metrics.enabled)
        if resume is not None:
            checkpoint = latest_checkpoint(Path(resume))
            console.print(f"resuming from {checkpoint}")
            rt.restore(checkpoint)
            load_driver_state(checkpoint, state)
            rt.sync_weights(state.version)
        else:
            seed_buffers(config, runner, rt.store, runner.task_types)
        interrupted = False

        def _on_sigint(signum, frame):  # finish the current step, then checkpoint and stop
            nonlocal interrupted
            if interrupted:
                raise KeyboardInterrupt
            interrupted = True
            console.print("[yellow]Ctrl-C: stopping after this step (again to abort)[/]")

        previous = signal.signal(signal.SIGINT, _on_sigint)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner")
        pending: Future | None = None
        bar = tqdm(total=config.selfplay.steps, initial=state.step, desc="self-play", unit="step")
        try:
            while state.step < config.selfplay.steps and not interrupted:
                step = state.step + 1
                started = time.perf_counter()
                output = runner.run(step)
                phases = dict(runner.timings)
                pending = schedule_update(
                    config.selfplay.mode, pool, pending, rt, output, state, phases
                )
                state.step = step
                record = _record(step, output, phases, state, time.perf_counter() - started)
                if (
                    eval_set
                    and config.selfplay.eval_every
                    and step % config.selfplay.eval_every == 0
                ):
                    record.update(_evaluate(rt, config, eval_set))
                telemetry.publish(record, output)
                metrics_log.write(json.dumps(record) + "\n")
                metrics_log.flush()
                state.history.append(record)
                bar.update(1)
                bar.set_postfix_str(_postfix(record, runner.task_types))
                every = config.checkpoint.every
                if every and step % every == 0 and step < config.selfplay.steps:
                    pending = _drain(pending, rt, state)
                    save_checkpoint(rt, state, config)
            pending = _drain(pending, rt, state)
            checkpoint = save_checkpoint(rt, state, config)
        except RunFailed as exc:
            console.print(f"[red]run stopped: {exc}[/]")
            raise
        finally:
            bar.close()
            pool.shutdown(wait=True)
            signal.signal(signal.SIGINT, previous)
            metrics_log.close()
    return _summary(config, state, checkpoint, interrupted)


def schedule_update(
    mode: str,
    pool: ThreadPoolExecutor,
    pending: Future | None,
    rt: Runtime,
    output: StepOutput,
    state: LoopState,
    phases: dict,
) -> Future | None:
    """Schedule the learner update of one step; returns the update still in flight.

    sync: update now, then sync the new weights. async: finish the previous step's update and
    sync it, then start this step's update, which runs while the next step generates.
    """
    if mode == "async":
        if pending is not None:
            state.version = _finish_update(pending, rt, state, phases)
        return pool.submit(_update, rt, output, state.version)
    state.version = _finish_update(
        pool.submit(_update, rt, output, state.version), rt, state, phases
    )
    return None


def _update(rt: Runtime, output: StepOutput, learner_version: int) -> dict:
    """Learner update on the admitted samples of one step (runs on the learner thread).

    Touches no shared state: the main thread generates the next step meanwhile (async mode).
    """
    samples = admit(output.samples, learner_version, rt.config.selfplay.max_staleness)
    started = time.perf_counter()
    result = dict(rt.learner.train_step(samples)) if samples else {}
    result["busy_seconds"] = time.perf_counter() - started
    result["admitted"] = float(len(samples))
    result["dropped_stale"] = float(len(output.samples) - len(samples))
    result["staleness_max"] = float(
        max((learner_version - s.policy_version for s in output.samples), default=0)
    )
    return result


def _finish_update(pending: Future, rt: Runtime, state: LoopState, phases: dict) -> int:
    """Wait for the learner, then push the new weights to the rollout actors."""
    result = pending.result()
    state.learner_busy_s += result["busy_seconds"]
    phases["learner"] = result["busy_seconds"]
    phases["learner_result"] = result
    version = state.version + 1
    started = time.perf_counter()
    phases["sync"] = rt.sync_weights(version)
    phases["sync_seconds"] = time.perf_counter() - started
    return version


def _drain(pending: Future | None, rt: Runtime, state: LoopState) -> None:
    if pending is not None:
        state.version = _finish_update(pending, rt, state, {})
    return None


def _record(step: int, output: StepOutput, phases: dict, state: LoopState, seconds: float) -> dict:
    state.wall_s += seconds
    record: dict = {"step": step, "policy_version": state.version, "step_seconds": seconds}
    record.update(output.metrics)
    for key, value in phases.items():
        if isinstance(value, dict):
            record.update({f"{key}/{k}": v for k, v in value.items() if isinstance(v, int | float)})
        else:
            record[f"time/{key}"] = value
    record["learner_idle_fraction"] = max(0.0, 1.0 - state.learner_busy_s / max(state.wall_s, 1e-9))
    return record


def _eval_set(config: AZRConfig):
    if not config.selfplay.eval_every:
        return []
    return eval_subset(load_cruxeval(config.selfplay.eval_data), config.selfplay.eval_size)


def _evaluate(rt: Runtime, config: AZRConfig, triplets) -> dict[str, float]:
    started = time.perf_counter()
    scores = cruxeval_accuracy(
        triplets,
        generator=rt.services.generator,
        executor=rt.services.executor,
        tokenizer=rt.services.tokenizer,
        sampling=config.rollout.eval,
    )
    out = {f"eval/{k}": v for k, v in scores.items()}
    out["time/eval"] = time.perf_counter() - started
    return out


def _postfix(record: dict, tasks: list[TaskType]) -> str:
    parts = []
    for t in tasks:
        parts.append(
            f"{t[:3]} valid={record.get(f'{t}/propose/valid_rate', 0):.2f}"
            f" solve={record.get(f'{t}/solve/accuracy', 0):.2f}"
        )
    learn = [record.get(f"{t}/propose/learnability", 0.0) for t in tasks]
    parts.append(f"learn={sum(learn) / max(len(learn), 1):.2f}")
    parts.append(f"{record['step_seconds']:.1f}s")
    return " | ".join(parts)


def _summary(config: AZRConfig, state: LoopState, checkpoint: Path, interrupted: bool) -> dict:
    tasks = [TaskType(t) for t in config.selfplay.task_types]
    history = state.history
    summary: dict[str, object] = {
        "steps": state.step,
        "policy_version": state.version,
        "interrupted": interrupted,
        "checkpoint": str(checkpoint),
        "metrics_log": str(config.run_dir / config.metrics.log_file),
        "logs": str(config.run_dir / "logs"),
        "learner_idle_fraction": history[-1]["learner_idle_fraction"] if history else None,
    }
    for t in tasks:
        for key in ("propose/valid_rate", "propose/learnability", "solve/accuracy"):
            values = [r.get(f"{t}/{key}", 0.0) for r in history]
            summary[f"{t}/{key}"] = sum(values) / len(values) if values else 0.0
    evals = [r for r in history if any(k.startswith("eval/") for k in r)]
    if evals:  # the newest periodic evaluation
        summary.update({k: v for k, v in evals[-1].items() if k.startswith("eval/")})
    return summary
