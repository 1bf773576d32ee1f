"""What a real `azr train` leaves for people to look at: the report's figures, TensorBoard event
files and an offline W&B run holding the step records' scalars, and one timeline after a run
is stopped, killed between checkpoints and resumed.

The runs are the sync chain of real `azr train` processes shared with test_resume.py
(tests/integration/conftest.py), every one logging to metrics.jsonl, TensorBoard and W&B (no
key anywhere: offline): an uninterrupted run (``ref``), and a run (``chain``) Ctrl-C'd in
step 1 or 2, resumed, SIGKILLed one step after its next checkpoint (a record past the newest
checkpoint, in every tracker) and resumed to the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.train_runs import SYNC_STEPS, Chain, Train
from support.wandb_files import history, offline_runs, run_records

from driver.cli import main
from driver.report import FIGURES, OUTCOMES_FILE

# A hang guard for the chain's runs (made by whichever test needs them first), not a timing
# assertion.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ALL_FIGURES = {f.file for f in FIGURES} | {OUTCOMES_FILE}


def all_records(run_dir: Path) -> list[dict]:
    """Every line of metrics.jsonl as a record (a line that is none fails the test)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --- the report ----------------------------------------------------------------------------


def test_azr_train_writes_its_report_with_every_figure_and_prints_its_path(sync_reference: Train):
    report = sync_reference.run_dir / "report"
    assert f"report:     {report / 'report.md'}" in sync_reference.output.replace("\n", "")
    for file in ALL_FIGURES:
        assert (report / file).read_bytes()[:4] == b"\x89PNG", file
    text = (report / "report.md").read_text()
    assert all(f"]({file})" in text for file in ALL_FIGURES)
    assert "Problems reading" not in text and "Not drawn" not in text
    # The step record carries what the figures draw: buffer sizes and planning comments too.
    baseline, *steps = all_records(sync_reference.run_dir)
    assert baseline["step"] == 0 and "eval/probe/induction" in baseline  # before any update
    for record in steps:
        for task in ("deduction", "abduction", "induction"):
            assert record[f"buffer/{task}/size"] >= 0
            assert 0 <= record[f"{task}/propose/comment_before_code"] <= 1
        assert "eval/cruxeval_o" in record and "learner_result/mismatch_kl" in record


def test_azr_report_overlays_two_real_runs_in_every_figure(
    sync_reference: Train, finished_chain: Chain, tmp_path: Path
):
    runs = [sync_reference.run_dir, finished_chain.run_dir]
    out = tmp_path / "overlay"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| metric | ref: first → last | chain: first → last |" in text
    for file in ALL_FIGURES:
        assert (out / file).read_bytes()[:4] == b"\x89PNG", file
    # Each panel's lines: both runs in every figure (the legend is built from the lines drawn).
    from driver.report import write_report
    from driver.run_metrics import read_runs

    report = write_report(read_runs(runs), tmp_path / "again")
    assert report.figures == {file: ["ref", "chain"] for file in ALL_FIGURES}


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


def test_tensorboard_event_files_hold_every_scalar_of_the_run(sync_reference: Train):
    run_dir = sync_reference.run_dir
    _assert_scalars_match(_tensorboard_rows(run_dir), all_records(run_dir))


def test_offline_wandb_run_holds_every_scalar_of_the_run(sync_reference: Train):
    run_dir = sync_reference.run_dir
    (segment,) = offline_runs(run_dir / "wandb")
    state = json.loads((run_dir / "wandb-run.json").read_text())
    assert segment.name == f"run-{state['id']}.wandb" and state["last_step"] == SYNC_STEPS
    _assert_scalars_match(history(segment), all_records(run_dir))


# --- one timeline after a stop, a kill and the resumes --------------------------------------


def test_a_run_killed_between_checkpoints_and_resumed_has_one_record_per_step(
    finished_chain: Chain,
):
    chain = finished_chain
    records = all_records(chain.run_dir)
    # The fresh run's step-0 evaluation (before any update) comes first, once.
    baseline, records = records[0], records[1:]
    assert baseline["step"] == 0 and "eval/probe/deduction" in baseline
    assert [r["step"] for r in records] == list(range(1, SYNC_STEPS + 1))
    # The kill fell between two checkpoints: one step past the resumed run's first checkpoint.
    killed_at = chain.killed_at
    assert killed_at == chain.stopped_at + 1
    assert [r["step"] for r in chain.killed_records] == list(range(1, killed_at + 2))
    # Steps up to the checkpoint are the earlier attempts'; the abandoned step is kept in the
    # side file.
    assert records[:killed_at] == chain.killed_records[:killed_at]
    (side,) = chain.run_dir.glob("metrics.abandoned-*.jsonl")
    abandoned = [json.loads(line) for line in side.read_text().splitlines()]
    assert abandoned == chain.killed_records[killed_at:]
    assert records[killed_at]["step_seconds"] != abandoned[0]["step_seconds"]  # a new step


def test_tensorboard_after_the_resume_shows_one_history(finished_chain: Chain):
    run_dir = finished_chain.run_dir
    _assert_scalars_match(_tensorboard_rows(run_dir), all_records(run_dir))


def test_wandb_after_the_resume_continues_the_same_run_from_the_checkpoint(finished_chain: Chain):
    chain = finished_chain
    stopped, killed, resumed = offline_runs(chain.run_dir / "wandb")
    state = json.loads((chain.run_dir / "wandb-run.json").read_text())
    assert stopped.name == killed.name == resumed.name == f"run-{state['id']}.wandb"
    # Ctrl-C closes the attempt's W&B run: its file holds every step it logged.
    assert sorted(history(stopped)) == list(range(0, chain.stopped_at + 1))  # 0: the baseline
    # The crash lost at most the last second of the killed attempt's file, never a checkpointed
    # step.
    logged = sorted(history(killed))
    attempted = [r["step"] for r in chain.killed_records[chain.stopped_at :]]
    assert logged[: chain.killed_at - chain.stopped_at] == attempted[:-1]
    assert logged == attempted[: len(logged)]
    (run,) = run_records(resumed)
    assert (run.branch_point.run, run.branch_point.value) == (state["id"], chain.killed_at)
    # all_records()[0] is the step-0 evaluation: step s is at index s
    _assert_scalars_match(history(resumed), all_records(chain.run_dir)[chain.killed_at + 1 :])
