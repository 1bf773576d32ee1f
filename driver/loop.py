"""The training loop: seeding, self-play steps, update and weight sync, eval, checkpoints.

`train` reads top to bottom as the schedule of one run. The Ray world is built by
`driver.runtime`, a step's method by `azr.selfplay`, the update schedule (sync / async) by
`driver.schedule`, checkpoints by `driver.checkpoint`.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from types import FrameType

from rich.console import Console
from tqdm import tqdm

from azr.config import AZRConfig, dump_config
from azr.eval.benchmark import Benchmark
from azr.eval.registry import load_benchmarks
from azr.selfplay import StepRunner
from azr.step_types import StepOutput
from azr.tasks import TaskType
from driver.checkpoint import (
    LoopState,
    checkpoint_root,
    latest_checkpoint,
    restore_loop_state,
    save_checkpoint,
    step_of,
)
from driver.console import configure_driver_logging
from driver.evaluation import eval_config, periodic_eval
from driver.runtime import BufferClient, RunFailed, Runtime
from driver.schedule import UpdateResult, UpdateSchedule
from driver.telemetry import StepTelemetry
from driver.trackers import Trackers

console = Console(stderr=True)


def train(
    config: AZRConfig, resume: str | Path | None = None, verbose: bool = False
) -> dict[str, object]:
    """Run self-play; returns a summary. Ctrl-C stops cleanly after writing a checkpoint.

    A new run (no ``resume``) never reuses the directory of an earlier one (`claim_run_dir`).
    The INFO output of every process goes to ``<run dir>/logs/`` (``verbose``: the console).
    """
    if resume is None:
        config = claim_run_dir(config)
    run_dir = prepare_run_dir(config, verbose)
    eval_set = eval_benchmarks(config)  # a missing eval file fails now, not after start-up
    config = eval_config(config, eval_set)  # the sandbox imports what the benchmarks need
    restart = latest_checkpoint(Path(resume)) if resume is not None else None
    state = LoopState(rng=random.Random(config.seed))
    with (
        # metrics.jsonl, TensorBoard, W&B: a resume first sets aside what came after `restart`
        Trackers.open(config, resumed_at=step_of(restart) if restart else None) as trackers,
        Runtime(config, log_dir=None if verbose else run_dir / "logs") as rt,
        GracefulStop() as stop,
    ):
        # where the run starts: a restored checkpoint, or (optionally) seeded buffers
        saved = start(config, rt, state, restart)
        runner = StepRunner(config, rt.services, state.rng)
        schedule = UpdateSchedule(
            config.selfplay.mode,
            rt.learner,
            max_staleness=config.selfplay.max_staleness,
            version=state.version,
        )
        telemetry = StepTelemetry(enabled=config.metrics.enabled)
        baseline: dict = {}
        if eval_set and state.step == 0:  # the untrained policy's figures: what steps improve on
            baseline = periodic_eval(rt, config, eval_set, 0)
            trackers.log({"step": 0, **baseline})
        bar = tqdm(total=config.selfplay.steps, initial=state.step, desc="self-play", unit="step")
        try:
            while state.step < config.selfplay.steps and not stop.requested:
                step, started = state.step + 1, time.perf_counter()
                # generate, validate and score: the step's samples and metrics
                output = runner.run(step)
                # learner update and weight sync (async: the previous step's, finished now)
                update = schedule.submit(output)
                state.step = step
                record = step_record(step, output, update, state, time.perf_counter() - started)
                record.update(buffer_sizes(rt.store, runner.task_types))
                # the periodic evaluation (azr eval's code, on this runtime)
                if eval_set and step % config.selfplay.eval_every == 0:
                    record.update(periodic_eval(rt, config, eval_set, step))
                # metrics: Prometheus, the trackers (metrics.jsonl ...), the progress bar
                telemetry.publish(record, output)
                trackers.log(record)
                state.history.append(record)
                bar.update(1)
                bar.set_postfix_str(progress_line(record, runner.task_types))
                # a checkpoint holds no update in flight
                every = config.checkpoint.every
                if every and step % every == 0 and step < config.selfplay.steps:
                    saved = checkpoint(config, rt, state, schedule)
            # Not twice for one step (Ctrl-C right after a periodic checkpoint, or a resume with
            # no step left): rewriting it would cost a full save and briefly leave no copy.
            if saved is not None and step_of(saved) == state.step:
                checkpoint_path = saved
            else:
                checkpoint_path = checkpoint(config, rt, state, schedule)
        except RunFailed as exc:
            console.print(f"[red]run stopped: {exc}[/]")
            raise
        finally:
            bar.close()
            schedule.close()
    return summary(config, state, checkpoint_path, stop.requested, baseline)


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


def prepare_run_dir(config: AZRConfig, verbose: bool) -> Path:
    """The run directory with its resolved config and its logs folder, logging set up."""
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(config))
    configure_driver_logging(run_dir / "logs", verbose)
    return run_dir


def start(config: AZRConfig, rt: Runtime, state: LoopState, checkpoint: Path | None) -> Path | None:
    """Restore a checkpoint (learner, buffers, loop state) and serve its weights, or, for a
    new run, fill the buffers in the optional seeding phase. Returns the restored checkpoint
    when it belongs to this run's directory (None otherwise)."""
    if checkpoint is None:
        seed_buffers(config, StepRunner(config, rt.services, state.rng), rt)
        return None
    console.print(f"resuming from {checkpoint}")
    version = rt.restore(checkpoint)
    restore_loop_state(checkpoint, state)
    if version != state.version:
        raise RunFailed(
            f"{checkpoint}: the learner holds policy version {version} but the loop saved "
            f"{state.version}: the checkpoint is inconsistent"
        )
    if version > 0:
        state.version = int(rt.sync_weights()["version"])
    own = checkpoint.resolve().parent == checkpoint_root(config.run_dir).resolve()
    return checkpoint if own else None


def seed_buffers(config: AZRConfig, runner: StepRunner, rt: Runtime) -> None:
    """Optional seeding phase: propose with the untrained model until each buffer is full."""
    want = config.buffer.seed_size
    if want <= 0:
        return
    for round_ in tqdm(range(config.buffer.seed_max_rounds), desc="seeding buffers", unit="round"):
        short = [t for t in runner.task_types if rt.store.size(t) < want]
        if not short:
            return
        for proposal in runner.propose(step=-(round_ + 1), tasks=short):
            if proposal.new_task is not None:
                rt.store.add(proposal.task, [proposal.new_task])
    console.print(f"[yellow]seeding stopped after {config.buffer.seed_max_rounds} rounds[/]")


def step_record(
    step: int, output: StepOutput, update: UpdateResult | None, state: LoopState, seconds: float
) -> dict:
    """One line of metrics.jsonl: the step's metrics, phase times and the update that finished."""
    state.wall_s += seconds
    if update is not None:
        state.version = update.version
        state.learner_busy_s += update.learner["busy_seconds"]
    record: dict = {"step": step, "policy_version": state.version, "step_seconds": seconds}
    record.update(output.metrics)
    record.update({f"time/{phase}": value for phase, value in output.timings.items()})
    if update is not None:
        record.update(update.record())
    record["learner_idle_fraction"] = max(0.0, 1.0 - state.learner_busy_s / max(state.wall_s, 1e-9))
    return record


def buffer_sizes(store: BufferClient, tasks: list[TaskType]) -> dict[str, float]:
    """Tasks in each buffer after the step (``buffer/<task>/size``)."""
    return {f"buffer/{task}/size": float(store.size(task)) for task in tasks}


def checkpoint(config: AZRConfig, rt: Runtime, state: LoopState, schedule: UpdateSchedule) -> Path:
    """Finish the update in flight (async), then write the checkpoint of ``state.step``."""
    finished = schedule.drain()
    if finished is not None:
        state.version = finished.version
        state.learner_busy_s += finished.learner["busy_seconds"]
    return save_checkpoint(config.run_dir, state, config, lambda d: rt.save(d, state.step))


def eval_benchmarks(config: AZRConfig) -> list[Benchmark]:
    """The periodic evaluation's benchmarks, each cut to ``selfplay.eval_size`` problems."""
    sp = config.selfplay
    if not sp.eval_every:
        return []
    return load_benchmarks(
        sp.eval_benchmarks,
        size=sp.eval_size,
        cruxeval_file=sp.eval_data,
        probe_size=sp.eval_size if sp.probe_size is None else sp.probe_size,
    )


def progress_line(record: dict, tasks: list[TaskType]) -> str:
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


def summary(
    config: AZRConfig, state: LoopState, checkpoint: Path, interrupted: bool, baseline: dict
) -> dict:
    """Means over this process's steps per task type, the step-0 and newest evals, and the
    run's files."""
    tasks = [TaskType(t) for t in config.selfplay.task_types]
    history = state.history
    out: dict[str, object] = {
        "steps": state.step,
        "policy_version": state.version,
        "interrupted": interrupted,
        "checkpoint": str(checkpoint),
        "run_dir": str(config.run_dir),
        "metrics_log": str(config.run_dir / config.metrics.log_file),
        "logs": str(config.run_dir / "logs"),
        "learner_idle_fraction": history[-1]["learner_idle_fraction"] if history else None,
    }
    for t in tasks:
        for key in ("propose/valid_rate", "propose/learnability", "solve/accuracy"):
            values = [r.get(f"{t}/{key}", 0.0) for r in history]
            out[f"{t}/{key}"] = sum(values) / len(values) if values else 0.0
    evals = [r for r in history if any(k.startswith("eval/") for k in r)]
    if evals:
        out.update({k: v for k, v in evals[-1].items() if k.startswith("eval/")})
    out.update({f"step0_{k}": v for k, v in baseline.items() if k.startswith("eval/")})
    return out


class GracefulStop:
    """Ctrl-C (SIGINT) finishes the current step, checkpoints and stops; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> GracefulStop:
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        console.print("[yellow]Ctrl-C: stopping after this step (again to abort)[/]")
