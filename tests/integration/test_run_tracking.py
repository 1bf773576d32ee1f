"""What a real `azr train` leaves for people to look at: the report's figures, TensorBoard event
files and an offline W&B run holding the step records' scalars, and one timeline after a run
is killed between checkpoints and resumed.

Two real runs of configs/tiny.yaml through the CLI (subprocesses: the kill is a real SIGKILL)
are shared by every test here: a 2-step run, and a run killed after step 3 with its newest
checkpoint at step 2, then resumed to step 4.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import REPO_ROOT
from support.processes import kill_session
from support.wandb_files import history, offline_runs, run_records

from driver.checkpoint import latest_checkpoint, step_of
from driver.cli import main
from driver.report import FIGURES, OUTCOMES_FILE

pytestmark = pytest.mark.slow

AZR = Path(sys.executable).parent / "azr"
ALL_FIGURES = {f.file for f in FIGURES} | {OUTCOMES_FILE}
LOGGERS = "metrics.loggers=[jsonl,tensorboard,wandb]"
RUN_TIMEOUT_S = 1500  # two shared cores: start-up (Ray, vLLM, learner) takes minutes


@dataclass
class Run:
    dir: Path
    stdout: str

    def records(self) -> list[dict]:
        return [json.loads(line) for line in (self.dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ray_tmp() -> Iterator[str]:
    """A Ray temp dir of this module's own (short: Ray's socket paths stop at 107 bytes), so
    that the killed run's Ray processes can be found and stopped, and only those."""
    path = tempfile.mkdtemp(prefix="azr-rt-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def azr_train(args: list[str], ray_tmp: str) -> subprocess.Popen:
    # No W&B key anywhere: metrics.wandb_mode=auto must choose offline and need no network.
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, NETRC=os.devnull, COLUMNS="400")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        env.pop(name, None)
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [str(AZR), "train", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its Ray processes share its session: all of them can go
    )


def finish(process: subprocess.Popen, ray_tmp: str) -> str:
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        kill_session(process.pid, also_matching=ray_tmp)  # whatever it left behind
    assert process.returncode == 0, f"azr train failed:\n{out[-3000:]}\n{err[-3000:]}"
    return out


def tiny(output_dir: Path, name: str, *extra: str) -> list[str]:
    return [
        "--config",
        "configs/tiny.yaml",
        f"output_dir={output_dir}",
        f"run_name={name}",
        f"model.cache_dir={REPO_ROOT / '.scratch' / 'models'}",
        LOGGERS,
        *extra,
    ]


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory: pytest.TempPathFactory, ray_tmp: str) -> Run:
    out = tmp_path_factory.mktemp("runs")
    args = tiny(out, "two", "selfplay.steps=2", "selfplay.eval_every=1", "selfplay.eval_size=4")
    return Run(out / "two", finish(azr_train(args, ray_tmp), ray_tmp))


@dataclass
class ResumedRun(Run):
    killed_records: list[dict]
    """metrics.jsonl as the kill left it."""
    checkpoint_step: int


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory: pytest.TempPathFactory, ray_tmp: str) -> ResumedRun:
    out = tmp_path_factory.mktemp("runs")
    run_dir = out / "killed"
    args = tiny(
        out,
        "killed",
        "selfplay.steps=4",
        "checkpoint.every=2",
        "selfplay.batch_size=4",
        "selfplay.mc_samples=3",
        "selfplay.eval_every=2",
        "selfplay.eval_size=4",
    )
    process = azr_train(args, ray_tmp)
    log = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while not (log.exists() and len(log.read_text().splitlines()) >= 3):
            assert process.poll() is None, f"azr train ended early: {process.communicate()}"
            assert time.monotonic() < deadline, "step 3 never came"
            time.sleep(0.2)
    finally:
        kill_session(process.pid, also_matching=ray_tmp)  # SIGKILL: a crash, no cleanup
    process.communicate()
    killed = [json.loads(line) for line in log.read_text().splitlines()]
    checkpoint_step = step_of(latest_checkpoint(run_dir))
    assert checkpoint_step < killed[-1]["step"], "the kill did not fall between checkpoints"
    stdout = finish(azr_train(["--resume", str(run_dir)], ray_tmp), ray_tmp)
    return ResumedRun(run_dir, stdout, killed, checkpoint_step)


# --- the report ----------------------------------------------------------------------------


def test_azr_train_writes_its_report_with_every_figure_and_prints_its_path(two_step_run):
    report = two_step_run.dir / "report"
    assert f"report:     {report / 'report.md'}" in two_step_run.stdout.replace("\n", "")
    for file in ALL_FIGURES:
        assert (report / file).read_bytes()[:4] == b"\x89PNG", file
    text = (report / "report.md").read_text()
    assert all(f"]({file})" in text for file in ALL_FIGURES)
    assert "Problems reading" not in text and "Not drawn" not in text
    # The step record carries what the figures draw: buffer sizes and planning comments too.
    for record in two_step_run.records():
        for task in ("deduction", "abduction", "induction"):
            assert record[f"buffer/{task}/size"] >= 0
            assert 0 <= record[f"{task}/propose/comment_before_code"] <= 1
        assert "eval/cruxeval_o" in record and "learner_result/mismatch_kl" in record


def test_azr_report_overlays_two_real_runs_in_every_figure(two_step_run, resumed_run, tmp_path):
    out = tmp_path / "overlay"
    assert main(["report", str(two_step_run.dir), str(resumed_run.dir), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| metric | two: first → last | killed: first → last |" in text
    for file in ALL_FIGURES:
        assert (out / file).read_bytes()[:4] == b"\x89PNG", file
    # Each panel's lines: both runs in every figure (the legend is built from the lines drawn).
    from driver.report import write_report
    from driver.run_metrics import read_runs

    report = write_report(read_runs([two_step_run.dir, resumed_run.dir]), tmp_path / "again")
    assert report.figures == {file: ["two", "killed"] for file in ALL_FIGURES}


# --- TensorBoard and W&B hold the step records -----------------------------------------------


def _assert_scalars_match(rows: dict[int, dict[str, float]], records: list[dict]) -> None:
    assert sorted(rows) == [r["step"] for r in records]
    for record in records:
        row = rows[record["step"]]
        for key, value in record.items():
            assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (record["step"], key)


def _tensorboard_rows(run_dir: Path) -> dict[int, dict[str, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    rows: dict[int, dict[str, float]] = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            assert tag not in rows.setdefault(event.step, {}), f"{tag} twice at {event.step}"
            rows[event.step][tag] = event.value
    return rows


def test_tensorboard_event_files_hold_every_scalar_of_the_run(two_step_run):
    _assert_scalars_match(_tensorboard_rows(two_step_run.dir), two_step_run.records())


def test_offline_wandb_run_holds_every_scalar_of_the_run(two_step_run):
    (segment,) = offline_runs(two_step_run.dir / "wandb")
    state = json.loads((two_step_run.dir / "wandb-run.json").read_text())
    assert segment.name == f"run-{state['id']}.wandb" and state["last_step"] == 2
    _assert_scalars_match(history(segment), two_step_run.records())


# --- one timeline after a kill and a resume --------------------------------------------------


def test_a_run_killed_between_checkpoints_and_resumed_has_one_record_per_step(resumed_run):
    records = resumed_run.records()
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert resumed_run.checkpoint_step == 2
    # Steps 1-2 are the first attempt's; the abandoned step 3 is kept in the side file.
    assert records[:2] == resumed_run.killed_records[:2]
    (side,) = resumed_run.dir.glob("metrics.abandoned-*.jsonl")
    abandoned = [json.loads(line) for line in side.read_text().splitlines()]
    assert abandoned == resumed_run.killed_records[2:]
    assert records[2]["step_seconds"] != abandoned[0]["step_seconds"]  # a new step 3


def test_tensorboard_after_the_resume_shows_one_history(resumed_run):
    _assert_scalars_match(_tensorboard_rows(resumed_run.dir), resumed_run.records())


def test_wandb_after_the_resume_continues_the_same_run_from_the_checkpoint(resumed_run):
    first, resumed = offline_runs(resumed_run.dir / "wandb")
    state = json.loads((resumed_run.dir / "wandb-run.json").read_text())
    assert first.name == resumed.name == f"run-{state['id']}.wandb"
    # The crash lost at most the last second of the first attempt's file, never a checkpointed step.
    logged = sorted(history(first))
    assert (
        logged[:2] == [1, 2]
        and logged == [r["step"] for r in resumed_run.killed_records][: len(logged)]
    )
    (run,) = run_records(resumed)
    assert (run.branch_point.run, run.branch_point.value) == (state["id"], 2)
    _assert_scalars_match(history(resumed), resumed_run.records()[2:])
