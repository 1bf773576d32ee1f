"""`azr report` on written metrics files: every figure, several runs overlaid, and bad input
(a missing or empty run dir, a truncated or garbage line, a repeated step) reported by file and
line while everything readable is still drawn. The figures of a real run are checked in
tests/integration/test_run_tracking.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driver.cli import main
from driver.report import FIGURES, OUTCOMES_FILE, write_report
from driver.run_metrics import read_run, read_runs

TASKS = ("deduction", "abduction", "induction")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_FIGURES = {f.file for f in FIGURES} | {OUTCOMES_FILE}


def record(step: int, scale: float = 1.0) -> dict[str, float]:
    """A step record with every family of metric the loop writes (values made up)."""
    r: dict[str, float] = {"step": step, "policy_version": step, "step_seconds": 10.0 + step}
    for t in TASKS:
        r[f"{t}/propose/valid_rate"] = 0.1 * scale
        r[f"{t}/propose/learnability"] = 0.2 * scale
        r[f"{t}/solve/accuracy"] = 0.3 * scale
        r[f"{t}/propose/outcome/valid"] = 2.0
        r[f"{t}/propose/outcome/invalid:error"] = 1.0
        r[f"{t}/propose/comment_before_code"] = 0.5
        r[f"{t}/propose/comment_lines"] = 1.5
        r[f"buffer/{t}/size"] = 3.0 * step
        for role in ("propose", "solve"):
            r[f"trr/{t}/{role}/mean"] = 0.1 * step
    for key in ("entropy", "clip_fraction", "mismatch_kl"):
        r[f"learner_result/{key}"] = 0.01 * step
    for phase in ("generate_propose", "execute", "learner"):
        r[f"time/{phase}"] = 1.0
    if step % 2 == 0:
        r["eval/cruxeval_o"] = 0.1 * step
        r["eval/probe/deduction"] = 0.05 * step
    return r


def write_run(run_dir: Path, steps: int, scale: float = 1.0, extra: list[str] = ()) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(record(s, scale)) for s in range(1, steps + 1)] + list(extra)
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000


def test_every_figure_is_drawn_with_every_run_overlaid(tmp_path: Path) -> None:
    trained = write_run(tmp_path / "trained", 6)
    frozen = write_run(tmp_path / "frozen", 6, scale=0.5)
    report = write_report(read_runs([trained, frozen]), tmp_path / "out")
    assert set(report.figures) == ALL_FIGURES and not report.skipped and not report.problems
    for file, labels in report.figures.items():
        assert _is_png(tmp_path / "out" / file), file
        assert labels == ["trained", "frozen"], file
    text = report.markdown.read_text()
    for file in ALL_FIGURES:
        assert f"]({file})" in text
    assert "| metric | trained: first → last | frozen: first → last |" in text
    row = next(line for line in text.splitlines() if "`deduction/solve/accuracy`" in line)
    assert "0.3 (step 1) → 0.3 (step 6)" in row and "0.15 (step 1) → 0.15 (step 6)" in row
    row = next(line for line in text.splitlines() if "`eval/cruxeval_o`" in line)
    assert "0.2 (step 2) → 0.6 (step 6)" in row  # eval keys: their own first and last step


def test_runs_with_the_same_directory_name_get_distinct_legend_names(tmp_path: Path) -> None:
    runs = read_runs([write_run(tmp_path / "a" / "tiny", 2), write_run(tmp_path / "b" / "tiny", 2)])
    assert [r.name for r in runs] == ["a/tiny", "b/tiny"]


def test_a_truncated_and_a_garbage_line_are_named_and_the_rest_is_drawn(tmp_path: Path) -> None:
    good = json.dumps(record(4))
    run_dir = write_run(tmp_path / "run", 3, extra=["garbage", "[1, 2]", good[:50]])
    run = read_run(run_dir)
    assert [int(r["step"]) for r in run.records] == [1, 2, 3]
    file = run_dir / "metrics.jsonl"
    assert run.problems[0].startswith(f"{file}:4: not JSON")
    assert run.problems[1] == f"{file}:5: a JSON list, not a step record: line skipped"
    assert run.problems[2].startswith(f"{file}:6: not JSON") and "truncated" in run.problems[2]
    report = write_report([run], tmp_path / "out")
    assert set(report.figures) == ALL_FIGURES
    assert all(p in report.markdown.read_text() for p in run.problems)


def test_a_repeated_step_is_reported_and_the_later_record_drawn(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", 3)
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(record(3, scale=2.0)) + "\n")
    run = read_run(run_dir)
    assert [int(r["step"]) for r in run.records] == [1, 2, 3]
    assert run.records[-1]["deduction/solve/accuracy"] == pytest.approx(0.6)
    assert "step(s) 3 recorded more than once" in run.problems[0]


def test_missing_and_empty_run_dirs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "metrics.jsonl").write_text("\n")
    missing = read_run(tmp_path / "missing")
    assert missing.problems == [f"{tmp_path / 'missing'}: no such run directory"]
    empty = read_run(tmp_path / "empty")
    assert empty.problems == [
        f"{tmp_path / 'empty' / 'metrics.jsonl'}: missing (not a run directory, or no step "
        "finished yet)"
    ]
    blank = read_run(tmp_path / "blank")
    assert blank.problems == [f"{tmp_path / 'blank' / 'metrics.jsonl'}: no step record"]


def test_the_log_file_named_in_the_runs_config_is_read(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("metrics:\n  log_file: steps.jsonl\n")
    (run_dir / "steps.jsonl").write_text(json.dumps(record(1)) + "\n")
    assert len(read_run(run_dir).records) == 1


def test_only_the_figures_with_data_are_drawn(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "step_seconds": 3.0, "deduction/propose/valid_rate": 0.5}) + "\n"
    )
    report = write_report([read_run(run_dir)], tmp_path / "out")
    assert set(report.figures) == {"valid_rate.png", "step_times.png"}
    assert any(s.startswith("eval.png") for s in report.skipped)
    assert "Not drawn:" in report.markdown.read_text()


def test_cli_draws_what_it_can_and_exits_1_naming_the_unreadable_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_run(tmp_path / "good", 3, extra=['{"step": 4, "deduct'])
    code = main(["report", str(good), str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"azr report: {tmp_path / 'missing'}: no such run directory" in err
    assert f"azr report: {good / 'metrics.jsonl'}:4: not JSON" in err
    assert out.strip() == f"report: {tmp_path / 'out' / 'report.md'} ({len(ALL_FIGURES)} figures)"
    assert _is_png(tmp_path / "out" / "valid_rate.png")


def test_cli_default_output_is_the_first_runs_report_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = write_run(tmp_path / "run", 2)
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report" / "report.md").exists()
    assert capsys.readouterr().err == ""


def test_cli_with_nothing_readable_draws_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "nothing drawn" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "report").exists()
