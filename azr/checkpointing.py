"""Run checkpoints: one directory per step, written whole or not at all.

Layout of ``<run dir>/checkpoints/step_000010/``::

    learner/      HF-format weights (+ tokenizer), optimizer and RNG state of every rank
    buffer/       the buffers as they were at the end of the step (BufferActor.checkpoint)
    driver.json   step, policy version, the driver's RNG state, timing counters
    config.yaml   the resolved config of the run

A checkpoint is first written under a ``.tmp`` name and renamed when complete, so a crash
mid-write never leaves a directory that looks whole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azr.config import AZRConfig, dump_config

if TYPE_CHECKING:
    from azr.driver import LoopState
    from azr.runtime import Runtime

PREFIX = "step_"


def checkpoint_root(config: AZRConfig) -> Path:
    return config.run_dir / "checkpoints"


def save_checkpoint(rt: Runtime, state: LoopState, config: AZRConfig) -> Path:
    root = checkpoint_root(config)
    final = root / f"{PREFIX}{state.step:06d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rt.save(tmp, state.step)
    driver: dict[str, Any] = {
        "step": state.step,
        "version": state.version,
        "rng_state": _jsonable(state.rng.getstate()),
        "learner_busy_s": state.learner_busy_s,
        "wall_s": state.wall_s,
    }
    (tmp / "driver.json").write_text(json.dumps(driver))
    (tmp / "config.yaml").write_text(dump_config(config))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(root.glob(f"{PREFIX}*"))[: -config.checkpoint.keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(path: Path) -> Path:
    """``path`` itself when it is a checkpoint, else the newest checkpoint under it."""
    if (path / "driver.json").exists():
        return path
    for root in (path / "checkpoints", path):
        found = sorted(p for p in root.glob(f"{PREFIX}*") if (p / "driver.json").exists())
        if found:
            return found[-1]
    raise FileNotFoundError(f"no checkpoint (a {PREFIX}* directory with driver.json) under {path}")


def load_driver_state(checkpoint: Path, state: LoopState) -> None:
    data = json.loads((checkpoint / "driver.json").read_text())
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
