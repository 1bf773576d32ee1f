"""Fixtures several integration modules share.

The sync chain of real `azr train` runs (support/train_runs.py) serves test_resume.py (every
resume reproduces the uninterrupted run) and test_run_tracking.py (the report, TensorBoard
and W&B of a run, and one timeline after a kill and a resume). Each process start costs about
a minute on two cores, so the runs are made once per session, by whichever test needs them
first (session fixtures: no test depends on the order):

- ``sync_reference``: an uninterrupted run, a checkpoint after every step;
- ``stopped_chain``: a run of the same config, Ctrl-C'd once its first step is logged: it
  finishes the step under way (step 1 or 2), checkpoints it and exits;
- ``killed_chain``: `azr train --resume RUN_DIR` with one checkpoint due (after its first
  step: ``checkpoint.every`` = stop step + 1), SIGKILLed once the step after that is logged
  and handed to W&B: a crash between two checkpoints with a record past the newest one;
- ``finished_chain``: a checkpoint torn mid-write left in the way, then `azr train --resume
  RUN_DIR` (a checkpoint after every step) to the end.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
from support.train_runs import (
    SYNC_RUN,
    SYNC_STEPS,
    Chain,
    Train,
    hidden_leftovers,
    records,
    train_to_the_end,
    wandb_last_step,
    whole_checkpoint,
)

from driver.checkpoint import latest_checkpoint, step_of


@pytest.fixture(scope="session")
def train_ray_tmp() -> Iterator[str]:
    """A Ray temp dir for the `azr train` processes of this session (short: Ray's socket paths
    stop at 107 bytes), so that a killed run's Ray processes can be found, and only those."""
    path = tempfile.mkdtemp(prefix="azr-rt-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def sync_reference(tmp_path_factory: pytest.TempPathFactory, train_ray_tmp: str) -> Train:
    """An uninterrupted sync run of the chain's config: a checkpoint after every step."""
    out = tmp_path_factory.mktemp("reference")
    return train_to_the_end(
        out / "ref", "ref", train_ray_tmp,
        f"output_dir={out}", "run_name=ref", "checkpoint.every=1", *SYNC_RUN,
    )  # fmt: skip


@pytest.fixture(scope="session")
def sync_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    state = Chain(tmp_path_factory.mktemp("chain") / "chain")
    yield state
    for run in (state.stopped, state.resumed, state.finished):
        if run is not None:
            run.kill()


@pytest.fixture(scope="session")
def stopped_chain(sync_chain: Chain, train_ray_tmp: str) -> Chain:
    chain = sync_chain
    run = Train.start(
        chain.run_dir, "stopped", train_ray_tmp,
        f"output_dir={chain.run_dir.parent}", "run_name=chain", "checkpoint.every=1", *SYNC_RUN,
        "metrics.report=false",  # the reference's is checked; its resumes keep this config
    )  # fmt: skip
    chain.stopped = run
    run.wait_for(lambda: len(records(chain.run_dir)) >= 1, "a first step")
    run.interrupt()
    chain.stopped_code = run.finish()
    # What the stop left, as seen before the later stages change the run.
    chain.stopped_records = records(chain.run_dir)
    chain.newest_after_stop = latest_checkpoint(chain.run_dir)
    chain.leftovers_after_stop = hidden_leftovers(chain.run_dir)
    return chain


@pytest.fixture(scope="session")
def killed_chain(stopped_chain: Chain, train_ray_tmp: str) -> Chain:
    chain = stopped_chain
    # The stop lands in the step after the first record; the kill needs a step after the
    # resumed run's checkpoint that is not the last (whose end always checkpoints).
    assert 1 <= chain.stopped_at <= SYNC_STEPS - 3, chain.stopped.tail()
    checkpointed, killed = chain.stopped_at + 1, chain.stopped_at + 2
    run = Train.start(
        chain.run_dir, "resumed", train_ray_tmp,
        "--resume", str(chain.run_dir), f"checkpoint.every={checkpointed}",
    )  # fmt: skip
    chain.resumed = run
    # Logged to every tracker (W&B's state file is written last): the resume must rewind each.
    run.wait_for(
        lambda: len(records(chain.run_dir)) >= killed and wandb_last_step(chain.run_dir) >= killed,
        f"step {killed} logged",
    )
    run.crash()
    chain.killed_records = records(chain.run_dir)
    chain.killed_at = step_of(latest_checkpoint(chain.run_dir))
    assert whole_checkpoint(chain.run_dir, checkpointed)(), "no checkpoint before the killed step"
    return chain


@pytest.fixture(scope="session")
def finished_chain(killed_chain: Chain, train_ray_tmp: str) -> Chain:
    chain = killed_chain
    assert chain.killed_at is not None
    # What a kill during a save leaves: a .tmp without driver.json (the newer step's).
    torn = chain.run_dir / "checkpoints" / f".step_{chain.killed_at + 1:06d}.tmp"
    (torn / "learner").mkdir(parents=True)
    (torn / "learner" / "model.safetensors").write_bytes(b"\0" * 100)  # half-written
    chain.torn = torn
    chain.finished = train_to_the_end(
        chain.run_dir, "finished", train_ray_tmp,
        "--resume", str(chain.run_dir), "checkpoint.every=1",
    )  # fmt: skip
    return chain
