"""Run checkpoints on disk (driver/checkpoint.py): which one a resume picks, what a crash leaves.

The learner's and the buffer's parts are written by a stand-in here (they have their own tests,
and tests/integration/test_resume.py runs the whole thing); what is checked is the layout, the
choice of the newest checkpoint and the handling of a save interrupted at each point.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from azr.config import AZRConfig
from driver.checkpoint import (
    STATE_FILE,
    LoopState,
    checkpoint_dir,
    checkpoint_root,
    latest_checkpoint,
    restore_loop_state,
    save_checkpoint,
    step_of,
)


def config(keep_last: int = 3) -> AZRConfig:
    return AZRConfig.model_validate({"checkpoint": {"keep_last": keep_last}})


def components(directory: Path) -> None:
    """Stand-in for Runtime.save: one file per part."""
    (directory / "learner").mkdir()
    (directory / "learner" / "weights").write_text("w")
    (directory / "buffer").mkdir()


def save(run_dir: Path, step: int, keep_last: int = 3, version: int | None = None) -> Path:
    state = LoopState(step=step, version=step if version is None else version)
    return save_checkpoint(run_dir, state, config(keep_last), components)


def test_latest_checkpoint_of_a_run_directory_is_the_newest(tmp_path):
    for step in (2, 10, 3, 9):  # not in order: the step decides, not the creation time
        save(tmp_path, step, keep_last=10)
    newest = checkpoint_dir(tmp_path, 10)
    assert latest_checkpoint(tmp_path) == newest
    assert latest_checkpoint(checkpoint_root(tmp_path)) == newest
    assert latest_checkpoint(checkpoint_dir(tmp_path, 3)) == checkpoint_dir(tmp_path, 3)
    assert step_of(latest_checkpoint(tmp_path)) == 10


def test_no_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoints" / "step_000001").mkdir(parents=True)  # no driver.json: not one
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        latest_checkpoint(tmp_path)


def test_save_keeps_the_newest_and_restores_the_loop_state(tmp_path):
    rng = random.Random(7)
    rng.random()
    state = LoopState(step=4, version=3, rng=rng, learner_busy_s=1.5, wall_s=9.0)
    for step in (1, 2, 3):
        save(tmp_path, step, keep_last=2)
    path = save_checkpoint(tmp_path, state, config(keep_last=2), components)
    assert sorted(p.name for p in checkpoint_root(tmp_path).iterdir()) == [
        "step_000003",
        "step_000004",
    ]
    assert sorted(p.name for p in path.iterdir()) == [
        "buffer",
        "config.yaml",
        "driver.json",
        "learner",
    ]
    restored = LoopState()
    restore_loop_state(path, restored)
    assert (restored.step, restored.version) == (4, 3)
    assert (restored.learner_busy_s, restored.wall_s) == (1.5, 9.0)
    assert restored.rng.random() == rng.random()


def test_a_crash_mid_write_leaves_a_tmp_that_is_ignored_then_removed(tmp_path):
    save(tmp_path, 1)

    def crash(directory: Path) -> None:
        components(directory)
        raise KeyboardInterrupt  # killed while the learner's part was being written

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, LoopState(step=2, version=2), config(), crash)
    leftover = checkpoint_root(tmp_path) / ".step_000002.tmp"
    assert leftover.is_dir() and not (leftover / STATE_FILE).exists()
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 1)
    assert leftover.is_dir()  # a resume does not touch it ...
    save(tmp_path, 2)  # ... the next save removes it
    assert sorted(p.name for p in checkpoint_root(tmp_path).iterdir()) == [
        "step_000001",
        "step_000002",
    ]


def test_a_crash_between_removing_the_old_copy_and_the_rename_loses_nothing(tmp_path):
    """Re-saving a step removes the old copy before the rename: a crash there leaves only a
    whole ``.tmp``. The resume must find that step (not an older one, or none at all)."""
    save(tmp_path, 3, keep_last=1)
    final = checkpoint_dir(tmp_path, 3)
    tmp = checkpoint_root(tmp_path) / ".step_000003.tmp"
    final.rename(tmp)  # the state after `shutil.rmtree(final)`, before `tmp.rename(final)`
    assert latest_checkpoint(tmp_path) == final
    assert step_of(final) == 3 and not tmp.exists()
    assert json.loads((final / STATE_FILE).read_text())["version"] == 3
    # The same through a save of the next step, with no resume in between.
    shutil.move(final, tmp)
    save(tmp_path, 4, keep_last=2)
    assert sorted(p.name for p in checkpoint_root(tmp_path).iterdir()) == [
        "step_000003",
        "step_000004",
    ]
