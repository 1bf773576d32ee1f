"""Resume as users do it: `azr train` through the CLI, stopped with Ctrl-C, killed, resumed.

Every run is a real `azr train` process (real Ray, vLLM CPU build, FSDP2 over gloo, process
sandbox, durable buffers) on the tiny config with a few small overrides. The runs are
deterministic, so each interrupted-then-resumed run is compared with an uninterrupted one of
the same config, step by step: step, policy version, the metrics of the next step and the
buffers' contents at each checkpoint.

The sync-mode tests read one chain of processes, shared with test_run_tracking.py (session
fixtures of tests/integration/conftest.py, so the tests need no order): start, Ctrl-C (SIGINT
to the process group, as a terminal sends it) -> `azr train --resume RUN_DIR` -> SIGKILL
between two checkpoints -> a leftover ``.tmp`` of a checkpoint torn mid-write -> `azr train
--resume RUN_DIR` to the end. Async mode resumes from a periodic checkpoint of an
uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import MODEL_CACHE
from support.train_runs import (
    SYNC_STEPS,
    Chain,
    Train,
    hidden_leftovers,
    records,
    said,
    train_to_the_end,
)

from buffer_service.record_log import read_log
from driver.checkpoint import STATE_FILE, checkpoint_dir, latest_checkpoint, step_of

# A hang guard for the chains of runs (several `azr train` processes in one fixture set-up on
# two shared cores), not a timing assertion.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

STEPS = SYNC_STEPS
"""Steps of a sync run."""
ASYNC_STEPS = 6
"""Steps of the async run: a checkpoint after step 3, then three steps without one, so that
after a resume from it an update that overlapped generation is logged (step 6)."""
ASYNC_RUN = [
    "selfplay.mode=async",
    f"selfplay.steps={ASYNC_STEPS}",
    "checkpoint.every=3",
    "selfplay.batch_size=4",
    "selfplay.mc_samples=3",
    "selfplay.eval_every=0",
    # Two FSDP2 ranks (the sync chain has one): an update in flight over a sharded learner,
    # and a resume that loads its checkpoint into a new group of two.
    "learner.num_workers=2",
    "checkpoint.keep_last=10",  # every checkpoint stays, to compare each with the reference
    "metrics.report=false",  # the end-of-run report is checked in test_run_tracking.py
    f"model.cache_dir={MODEL_CACHE}",
]
TIMING_KEYS = (
    "time/",
    "step_seconds",
    "sync/seconds",
    "sync/verify_seconds",
    "sync/gbps",
    "sync/gather",
    "sync/put",
    "learner_result/seconds",
    "learner_result/busy",
    "learner_idle",
)
"""Metrics that measure time: the only ones two runs of one config may disagree on."""


def deterministic(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(TIMING_KEYS)}


def assert_same_step(got: dict, want: dict) -> None:
    """Two records of one step agree on every metric that does not measure time."""
    got, want = deterministic(got), deterministic(want)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (want["step"], key)


def driver_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE_FILE).read_text())


def buffer_contents(checkpoint: Path) -> dict:
    """The buffers a checkpoint holds: every entry per task in order, and the sampling RNG."""
    (log,) = (checkpoint / "buffer").glob("buffers-step*.log")
    payloads, report = read_log(log)
    assert not report.damaged, report.as_dict()
    meta, adds = payloads[0], payloads[1:]
    return {
        "step": meta["checkpoint_step"],
        "rng": meta["rng"],
        "entries": [(p["task"], p["step"], p["keys"], p["entries"]) for p in adds],
    }


# ----------------------------------------------------------------------------- sync: the chain
def test_the_reference_run_checkpoints_every_step_and_resumes_from_its_newest(sync_reference):
    reference = sync_reference.run_dir
    assert said(sync_reference, f"finished: {STEPS} steps, policy version {STEPS}")
    steps = [r["step"] for r in records(reference)]
    assert steps == list(range(1, STEPS + 1))
    assert [r["policy_version"] for r in records(reference)] == steps
    assert latest_checkpoint(reference) == checkpoint_dir(reference, STEPS)
    for step in steps:
        state = driver_state(checkpoint_dir(reference, step))
        assert (state["step"], state["version"]) == (step, step)
        assert buffer_contents(checkpoint_dir(reference, step))["step"] == step
    assert hidden_leftovers(reference) == []


def test_ctrl_c_finishes_the_step_checkpoints_and_exits_cleanly(
    stopped_chain: Chain, sync_reference: Train
):
    chain, reference = stopped_chain, sync_reference.run_dir
    assert chain.stopped is not None
    assert chain.stopped_code == 0, chain.stopped.output[-3000:]
    last = chain.stopped_at
    assert 1 <= last < STEPS
    assert said(chain.stopped, f"stopped by Ctrl-C: {last} steps, policy version {last}")
    done = chain.stopped_records
    assert [r["step"] for r in done] == list(range(1, last + 1))
    for got, want in zip(done, records(reference), strict=False):
        assert_same_step(got, want)
    newest = checkpoint_dir(chain.run_dir, last)
    assert chain.newest_after_stop == newest
    assert (driver_state(newest)["step"], driver_state(newest)["version"]) == (last, last)
    assert buffer_contents(newest) == buffer_contents(checkpoint_dir(reference, last))
    assert chain.leftovers_after_stop == []


def test_resume_through_the_cli_continues_where_ctrl_c_stopped(
    killed_chain: Chain, sync_reference: Train
):
    chain, reference = killed_chain, sync_reference.run_dir
    assert chain.resumed is not None
    stopped_at = chain.stopped_at
    assert said(chain.resumed, f"resuming from {checkpoint_dir(chain.run_dir, stopped_at)}")
    new = chain.killed_records[stopped_at:]  # what the resumed process logged before its kill
    assert new and new[0]["step"] == stopped_at + 1
    assert new[0]["policy_version"] == stopped_at + 1
    for got in new:
        assert_same_step(got, records(reference)[got["step"] - 1])
    first = checkpoint_dir(chain.run_dir, stopped_at + 1)
    assert driver_state(first)["version"] == stopped_at + 1
    assert buffer_contents(first) == buffer_contents(checkpoint_dir(reference, stopped_at + 1))


def test_sigkill_between_checkpoints_then_resume_reproduces_the_run(
    finished_chain: Chain, sync_reference: Train
):
    chain, reference = finished_chain, sync_reference.run_dir
    assert chain.finished is not None and chain.killed_at is not None
    killed_at = chain.killed_at
    assert said(chain.finished, f"resuming from {checkpoint_dir(chain.run_dir, killed_at)}")
    new = records(chain.run_dir)[killed_at:]  # the records past the checkpoint are set aside
    assert [r["step"] for r in new] == list(range(killed_at + 1, STEPS + 1))
    assert [r["policy_version"] for r in new] == list(range(killed_at + 1, STEPS + 1))
    for got in new:
        assert_same_step(got, records(reference)[got["step"] - 1])
    assert said(chain.finished, f"finished: {STEPS} steps, policy version {STEPS}")
    for step in range(killed_at + 1, STEPS + 1):
        mine, theirs = checkpoint_dir(chain.run_dir, step), checkpoint_dir(reference, step)
        assert driver_state(mine)["version"] == step
        assert buffer_contents(mine) == buffer_contents(theirs), step


def test_a_checkpoint_torn_mid_write_is_ignored_then_removed(finished_chain: Chain):
    chain = finished_chain
    assert chain.torn is not None and chain.killed_at is not None
    # The resume used the newest whole checkpoint, not the torn one of the next step ...
    assert said(chain.finished, f"resuming from {checkpoint_dir(chain.run_dir, chain.killed_at)}")
    # ... and the first save of the resumed run replaced it by a whole one.
    assert not chain.torn.exists()
    assert hidden_leftovers(chain.run_dir) == []
    assert step_of(checkpoint_dir(chain.run_dir, chain.killed_at + 1)) == chain.killed_at + 1


# ----------------------------------------------------------------------------- async
@pytest.fixture(scope="module")
def async_reference(tmp_path_factory, train_ray_tmp) -> Train:
    """An uninterrupted async run with one periodic checkpoint, after step 3 (a checkpoint
    holds no update in flight: it finishes step 3's)."""
    out = tmp_path_factory.mktemp("async")
    return train_to_the_end(
        out / "async", "async", train_ray_tmp, f"output_dir={out}", "run_name=async", *ASYNC_RUN
    )


def test_async_mode_overlaps_update_and_admits_one_version_old_samples(async_reference):
    reference = records(async_reference.run_dir)
    # Step t+1 generated with weights t-1 while the learner trained on step t: one version lag.
    assert reference[2]["learner_result/staleness_max"] == 1
    assert reference[2]["learner_result/dropped_stale"] == 0
    assert reference[2]["learner_result/admitted"] > 0
    # The last checkpoint finishes the update in flight: every step's update is in.
    assert said(async_reference, f"finished: {ASYNC_STEPS} steps, policy version {ASYNC_STEPS}")


def test_async_resume_from_a_checkpoint_reproduces_the_run(
    async_reference, train_ray_tmp, tmp_path
):
    reference_dir = async_reference.run_dir
    reference = records(reference_dir)
    # Step t's update finishes during step t+1 and is logged there; the checkpoint after step
    # 3 finished step 3's update (version 3 saved), so step 4 reports no update.
    assert [r["policy_version"] for r in reference] == [0, 1, 2, 3, 4, 5]
    assert driver_state(checkpoint_dir(reference_dir, 3))["version"] == 3
    assert [r.get("learner_result/staleness_max") for r in reference] == [
        None, 0, 1, None, 0, 1,
    ]  # fmt: skip
    run = train_to_the_end(
        tmp_path / "resumed", "resumed", train_ray_tmp,
        "--resume", str(checkpoint_dir(reference_dir, 3)),
        f"output_dir={tmp_path}", "run_name=resumed",
    )  # fmt: skip
    assert said(run, f"resuming from {checkpoint_dir(reference_dir, 3)}")
    new = records(tmp_path / "resumed")
    assert [r["step"] for r in new] == [4, 5, 6]
    assert [r["policy_version"] for r in new] == [3, 4, 5]
    # Updates overlap generation again after the resume: step 5's update trained on samples
    # one version old while the engines generated step 6.
    assert new[2]["learner_result/staleness_max"] == 1
    for got, want in zip(new, reference[3:], strict=True):
        assert_same_step(got, want)
    assert said(run, f"finished: {ASYNC_STEPS} steps, policy version {ASYNC_STEPS}")
    final = checkpoint_dir(tmp_path / "resumed", ASYNC_STEPS)
    assert driver_state(final)["version"] == ASYNC_STEPS
    assert buffer_contents(final) == buffer_contents(checkpoint_dir(reference_dir, ASYNC_STEPS))
