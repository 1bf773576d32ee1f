"""Resume as users do it: `azr train` through the CLI, stopped with Ctrl-C, killed, resumed.

Every run is a real `azr train` process (real Ray, vLLM CPU build, FSDP2 over gloo, process
sandbox, durable buffers) on the tiny config with a few small overrides. The runs are
deterministic, so each interrupted-then-resumed run is compared with an uninterrupted one of
the same config, step by step: step, policy version, the metrics of the next step and the
buffers' contents at each checkpoint.

One chain of processes serves the sync-mode tests (module fixtures, so the tests need no
order): start, Ctrl-C (SIGINT to the process group, as a terminal sends it) -> `azr train
--resume RUN_DIR` -> SIGKILL between two checkpoints -> a leftover ``.tmp`` of a checkpoint
torn mid-write -> `azr train --resume RUN_DIR` to the end. Async mode resumes from a
periodic checkpoint of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import MODEL_CACHE, REPO_ROOT

from buffer_service.record_log import read_log
from driver.checkpoint import STATE_FILE, checkpoint_dir, latest_checkpoint, step_of

# A hang guard for the module's chains of runs (several `azr train` processes in one fixture
# set-up on two shared cores), not a timing assertion.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

AZR = Path(sys.executable).parent / "azr"
STEPS = 4
"""Steps of a sync run."""
ASYNC_STEPS = 6
"""Steps of the async run: a checkpoint after step 3, then three steps without one, so that
after a resume from it an update that overlapped generation is logged (step 6)."""
SMALL = [
    "selfplay.batch_size=4",
    "selfplay.mc_samples=3",
    "selfplay.eval_every=0",
    "learner.num_workers=1",
    "checkpoint.keep_last=10",  # every checkpoint stays, to compare each with the reference
    f"model.cache_dir={MODEL_CACHE}",
]
PROCESS_TIMEOUT_S = 900
"""Hang guard for one `azr train` process."""
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


@dataclass
class Train:
    """One `azr train` process in a session (process group) of its own."""

    run_dir: Path
    log: Path
    process: subprocess.Popen
    records_before: int = 0
    """Lines metrics.jsonl had when this process started (it appends)."""
    output: str = field(default="", init=False)

    @classmethod
    def start(cls, run_dir: Path, name: str, *args: str) -> Train:
        log = run_dir.parent / f"{name}.out"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["COLUMNS"] = "1000"  # rich wraps long paths at the terminal width otherwise
        before = len(records(run_dir))
        process = subprocess.Popen(
            [str(AZR), "train", *args],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        return cls(run_dir, log, process, before)

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"azr train exited ({self.process.returncode}) before {what}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {PROCESS_TIMEOUT_S} s:\n{self.tail()}")
            time.sleep(0.1)

    def signal(self, signum: int) -> None:
        """Signal the whole process group, as a terminal's Ctrl-C or an OOM killer's group kill."""
        os.killpg(self.process.pid, signum)

    def finish(self) -> int:
        try:
            code = self.process.wait(timeout=PROCESS_TIMEOUT_S)
        finally:
            self.kill()
        self.output = self.log.read_text(errors="replace")
        return code

    def kill(self) -> None:
        """Whatever of the process group is still alive (the Ray processes it started)."""
        with contextlib.suppress(ProcessLookupError):  # the group is gone already
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def new_records(self) -> list[dict]:
        return records(self.run_dir)[self.records_before :]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]  # not a torn last line


def said(run: Train, text: str) -> bool:
    """Whether the process printed `text` (whitespace aside: the console may wrap lines)."""
    return "".join(text.split()) in "".join(run.output.split())


def deterministic(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(TIMING_KEYS)}


def assert_same_step(got: dict, want: dict) -> None:
    """Two records of one step agree on every metric that does not measure time."""
    got, want = deterministic(got), deterministic(want)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (want["step"], key)


def whole_checkpoint(run_dir: Path, step: int) -> Callable[[], bool]:
    return lambda: (checkpoint_dir(run_dir, step) / STATE_FILE).exists()


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


def hidden_leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob(".*"))


def train_to_the_end(run_dir: Path, name: str, *args: str) -> Train:
    run = Train.start(run_dir, name, *args)
    code = run.finish()
    assert code == 0, run.output[-3000:]
    return run


# ----------------------------------------------------------------------------- sync: the chain
@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted sync run: a checkpoint after every step."""
    out = tmp_path_factory.mktemp("reference")
    run = train_to_the_end(
        out / "ref", "ref", f"output_dir={out}", "run_name=ref", f"selfplay.steps={STEPS}",
        "checkpoint.every=1", *SMALL,
    )  # fmt: skip
    assert said(run, f"finished: {STEPS} steps, policy version {STEPS}")
    return out / "ref"


@dataclass
class Chain:
    run_dir: Path
    stopped: Train | None = None
    stopped_code: int | None = None
    stopped_at: int | None = None
    """Steps logged when the Ctrl-C'd process had exited."""
    newest_after_stop: Path | None = None
    leftovers_after_stop: list[str] = field(default_factory=list)
    resumed: Train | None = None
    killed_at: int | None = None
    """Step of the newest whole checkpoint when the resumed process was SIGKILLed."""
    torn: Path | None = None
    finished: Train | None = None


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Iterator[Chain]:
    out = tmp_path_factory.mktemp("chain")
    state = Chain(out / "chain")
    yield state
    for run in (state.stopped, state.resumed, state.finished):
        if run is not None:
            run.kill()


@pytest.fixture(scope="module")
def stopped(chain: Chain) -> Chain:
    """Ctrl-C once the first step is logged: the run finishes its step, checkpoints, exits."""
    run = Train.start(
        chain.run_dir,
        "stopped",
        f"output_dir={chain.run_dir.parent}",
        "run_name=chain",
        f"selfplay.steps={STEPS}",
        "checkpoint.every=1",
        *SMALL,
    )
    chain.stopped = run
    run.wait_for(lambda: len(records(chain.run_dir)) >= 1, "a first step")
    run.signal(signal.SIGINT)
    chain.stopped_code = run.finish()
    # What the stop left, as seen before the later fixtures of the chain change the run.
    chain.stopped_at = len(records(chain.run_dir))
    chain.newest_after_stop = latest_checkpoint(chain.run_dir)
    chain.leftovers_after_stop = hidden_leftovers(chain.run_dir)
    return chain


@pytest.fixture(scope="module")
def resumed(stopped: Chain) -> Chain:
    """`azr train --resume RUN_DIR`, SIGKILLed (with every process of its group) once it has
    written its first new checkpoint: the next step is under way, between two checkpoints."""
    first_new = len(records(stopped.run_dir)) + 1
    run = Train.start(stopped.run_dir, "resumed", "--resume", str(stopped.run_dir))
    stopped.resumed = run
    run.wait_for(whole_checkpoint(stopped.run_dir, first_new), f"checkpoint {first_new}")
    run.signal(signal.SIGKILL)
    run.finish()
    stopped.killed_at = step_of(latest_checkpoint(stopped.run_dir))
    return stopped


@pytest.fixture(scope="module")
def finished(resumed: Chain) -> Chain:
    """A checkpoint torn mid-write (what a kill during the save leaves: no driver.json), then
    `azr train --resume RUN_DIR` to the end."""
    assert resumed.killed_at is not None
    torn = resumed.run_dir / "checkpoints" / f".step_{resumed.killed_at + 1:06d}.tmp"
    (torn / "learner").mkdir(parents=True)
    (torn / "learner" / "model.safetensors").write_bytes(b"\0" * 100)  # half-written
    resumed.torn = torn
    resumed.finished = train_to_the_end(
        resumed.run_dir, "finished", "--resume", str(resumed.run_dir)
    )
    return resumed


def test_the_reference_run_checkpoints_every_step_and_resumes_from_its_newest(reference):
    steps = [r["step"] for r in records(reference)]
    assert steps == list(range(1, STEPS + 1))
    assert [r["policy_version"] for r in records(reference)] == steps
    assert latest_checkpoint(reference) == checkpoint_dir(reference, STEPS)
    for step in steps:
        state = driver_state(checkpoint_dir(reference, step))
        assert (state["step"], state["version"]) == (step, step)
        assert buffer_contents(checkpoint_dir(reference, step))["step"] == step
    assert hidden_leftovers(reference) == []


def test_ctrl_c_finishes_the_step_checkpoints_and_exits_cleanly(stopped, reference):
    assert stopped.stopped is not None and stopped.stopped_at is not None
    assert stopped.stopped_code == 0, stopped.stopped.output[-3000:]
    last = stopped.stopped_at
    assert 1 <= last < STEPS
    assert said(stopped.stopped, f"stopped by Ctrl-C: {last} steps, policy version {last}")
    done = records(stopped.run_dir)[:last]
    assert [r["step"] for r in done] == list(range(1, last + 1))
    for got, want in zip(done, records(reference), strict=False):
        assert_same_step(got, want)
    newest = checkpoint_dir(stopped.run_dir, last)
    assert stopped.newest_after_stop == newest
    assert (driver_state(newest)["step"], driver_state(newest)["version"]) == (last, last)
    assert buffer_contents(newest) == buffer_contents(checkpoint_dir(reference, last))
    assert stopped.leftovers_after_stop == []


def test_resume_through_the_cli_continues_where_ctrl_c_stopped(resumed, reference):
    assert resumed.resumed is not None and resumed.stopped is not None
    stopped_at = resumed.stopped_at
    assert said(resumed.resumed, f"resuming from {checkpoint_dir(resumed.run_dir, stopped_at)}")
    new = resumed.resumed.new_records()
    assert new and new[0]["step"] == stopped_at + 1
    assert new[0]["policy_version"] == stopped_at + 1
    for got in new:
        assert_same_step(got, records(reference)[got["step"] - 1])
    first = checkpoint_dir(resumed.run_dir, stopped_at + 1)
    assert driver_state(first)["version"] == stopped_at + 1
    assert buffer_contents(first) == buffer_contents(checkpoint_dir(reference, stopped_at + 1))


def test_sigkill_between_checkpoints_then_resume_reproduces_the_run(finished, reference):
    assert finished.finished is not None and finished.killed_at is not None
    killed_at = finished.killed_at
    assert said(finished.finished, f"resuming from {checkpoint_dir(finished.run_dir, killed_at)}")
    new = finished.finished.new_records()
    assert [r["step"] for r in new] == list(range(killed_at + 1, STEPS + 1))
    assert [r["policy_version"] for r in new] == list(range(killed_at + 1, STEPS + 1))
    for got in new:
        assert_same_step(got, records(reference)[got["step"] - 1])
    assert said(finished.finished, f"finished: {STEPS} steps, policy version {STEPS}")
    for step in range(killed_at + 1, STEPS + 1):
        mine, theirs = checkpoint_dir(finished.run_dir, step), checkpoint_dir(reference, step)
        assert driver_state(mine)["version"] == step
        assert buffer_contents(mine) == buffer_contents(theirs), step


def test_a_checkpoint_torn_mid_write_is_ignored_then_removed(finished):
    assert finished.torn is not None and finished.killed_at is not None
    # The resume used the newest whole checkpoint, not the torn one of the next step ...
    assert said(
        finished.finished, f"resuming from {checkpoint_dir(finished.run_dir, finished.killed_at)}"
    )
    # ... and the first save of the resumed run replaced it by a whole one.
    assert not finished.torn.exists()
    assert hidden_leftovers(finished.run_dir) == []
    assert (
        step_of(checkpoint_dir(finished.run_dir, finished.killed_at + 1)) == finished.killed_at + 1
    )


# ----------------------------------------------------------------------------- async
@pytest.fixture(scope="module")
def async_reference(tmp_path_factory) -> Path:
    """An uninterrupted async run with one periodic checkpoint, after step 3 (a checkpoint
    holds no update in flight: it finishes step 3's)."""
    out = tmp_path_factory.mktemp("async")
    train_to_the_end(
        out / "async", "async", f"output_dir={out}", "run_name=async", "selfplay.mode=async",
        f"selfplay.steps={ASYNC_STEPS}", "checkpoint.every=3", *SMALL,
    )  # fmt: skip
    return out / "async"


def test_async_resume_from_a_checkpoint_reproduces_the_run(async_reference, tmp_path):
    reference = records(async_reference)
    # Step t's update finishes during step t+1 and is logged there; the checkpoint after step
    # 3 finished step 3's update (version 3 saved), so step 4 reports no update.
    assert [r["policy_version"] for r in reference] == [0, 1, 2, 3, 4, 5]
    assert driver_state(checkpoint_dir(async_reference, 3))["version"] == 3
    assert [r.get("learner_result/staleness_max") for r in reference] == [
        None, 0, 1, None, 0, 1,
    ]  # fmt: skip
    run = train_to_the_end(
        tmp_path / "resumed", "resumed", "--resume", str(checkpoint_dir(async_reference, 3)),
        f"output_dir={tmp_path}", "run_name=resumed",
    )  # fmt: skip
    assert said(run, f"resuming from {checkpoint_dir(async_reference, 3)}")
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
    assert buffer_contents(final) == buffer_contents(checkpoint_dir(async_reference, ASYNC_STEPS))
