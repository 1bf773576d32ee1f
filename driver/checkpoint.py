"""Run checkpoints: the loop's state and where checkpoints live, written whole or not at all.

Layout of ``<run dir>/checkpoints/step_000010/``::

    learner/      HF-format weights (+ tokenizer), optimizer and RNG state of every rank
    buffer/       the buffers as they were at the end of the step (BufferActor.checkpoint)
    driver.json   step, policy version, the driver's RNG state, timing counters
    config.yaml   the resolved config of the run

A checkpoint is written under ``.step_000010.tmp``, ``driver.json`` last, and renamed when
complete: a directory named ``step_*`` is always whole. A leftover ``.tmp`` without
``driver.json`` (a crash mid-write) is never used and is removed by the next save; one with it is
whole (a crash between the removal of an older copy of the same step and the rename) and is
renamed into place by `latest_checkpoint` and the next save, so such a crash loses nothing.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azr.config import AZRConfig, dump_config

PREFIX = "step_"
STATE_FILE = "driver.json"


@dataclass
class LoopState:
    """What the loop carries between steps (and what a checkpoint restores)."""

    step: int = 0
    """Last completed self-play step."""
    version: int = 0
    """Policy version the rollout engines serve (as the last weight sync reported it)."""
    rng: random.Random = field(default_factory=random.Random)
    """The driver's randomness (reference draws, which Monte-Carlo sample is the solve)."""
    learner_busy_s: float = 0.0
    wall_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    """This process's step records (not checkpointed: metrics.jsonl holds them)."""


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return checkpoint_root(run_dir) / f"{PREFIX}{step:06d}"


def step_of(checkpoint: Path) -> int:
    """The step a checkpoint directory was written at (read from its state file)."""
    return int(json.loads((checkpoint / STATE_FILE).read_text())["step"])


def save_checkpoint(
    run_dir: Path,
    state: LoopState,
    config: AZRConfig,
    save_components: Callable[[Path], None],
) -> Path:
    """Write the checkpoint of ``state.step``; ``save_components(dir)`` writes the learner's
    and the buffer's parts into ``dir``. Keeps the newest ``config.checkpoint.keep_last``."""
    root = checkpoint_root(run_dir)
    final = checkpoint_dir(run_dir, state.step)
    tmp = root / f".{final.name}.tmp"
    finish_interrupted_saves(root)
    for leftover in root.glob(f".{PREFIX}*.tmp"):  # a crash mid-write left it: never whole
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_components(tmp)
    driver: dict[str, Any] = {
        "step": state.step,
        "version": state.version,
        "rng_state": _jsonable(state.rng.getstate()),
        "learner_busy_s": state.learner_busy_s,
        "wall_s": state.wall_s,
    }
    (tmp / "config.yaml").write_text(dump_config(config))
    (tmp / STATE_FILE).write_text(json.dumps(driver))  # last: its presence marks a whole checkpoint
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(root.glob(f"{PREFIX}*"))[: -config.checkpoint.keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(path: Path) -> Path:
    """``path`` itself when it is a checkpoint, else the newest checkpoint of a run directory
    (or of a ``checkpoints/`` folder)."""
    if (path / STATE_FILE).exists():
        return path
    for root in (checkpoint_root(path), path):
        finish_interrupted_saves(root)
        found = sorted(p for p in root.glob(f"{PREFIX}*") if (p / STATE_FILE).exists())
        if found:
            return found[-1]
    raise FileNotFoundError(f"no checkpoint (a {PREFIX}* directory with {STATE_FILE}) under {path}")


def finish_interrupted_saves(root: Path) -> None:
    """Rename into place each whole ``.step_*.tmp`` (it has ``driver.json``) whose ``step_*``
    is missing: a save that crashed after removing the older copy of its step and before the
    rename. Without this the newest checkpoint would be ignored, or deleted by the next save."""
    for leftover in root.glob(f".{PREFIX}*.tmp"):
        final = root / leftover.name[1 : -len(".tmp")]
        if (leftover / STATE_FILE).exists() and not final.exists():
            leftover.rename(final)


def restore_loop_state(checkpoint: Path, state: LoopState) -> None:
    """Load a checkpoint's loop state into ``state`` (in place: the step runner holds its RNG)."""
    data = json.loads((checkpoint / STATE_FILE).read_text())
    state.step = int(data["step"])
    state.version = int(data["version"])
    state.rng.setstate(_tupled(data["rng_state"]))
    state.learner_busy_s = float(data.get("learner_busy_s", 0.0))
    state.wall_s = float(data.get("wall_s", 0.0))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value
