"""`azr eval` refuses bad input with a clear message before it starts anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driver.cli import main
from driver.evaluation import labelled, resolve_eval_model


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_unknown_benchmark(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "eval", str(tmp_path), "--benchmarks", "cruxeval-o,mbpp")
    assert code == 2 and "unknown benchmark 'mbpp'" in err


def test_unreadable_models(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "eval", str(tmp_path), "--benchmarks", "cruxeval-o")
    assert code == 2 and f"model {str(tmp_path)!r}" in err and "checkpoints" in err
    code, err = run(capsys, "eval", "/nonexistent/model", "--benchmarks", "cruxeval-o")
    assert code == 2 and "not a directory" in err
    (tmp_path / "config.json").write_text("{}")
    code, err = run(capsys, "eval", str(tmp_path), "--benchmarks", "cruxeval-o")
    assert code == 2 and "no tokenizer" in err


def test_a_run_directory_means_its_newest_checkpoint(tmp_path: Path) -> None:
    for step in (2, 10):
        learner = tmp_path / "checkpoints" / f"step_{step:06d}" / "learner"
        learner.mkdir(parents=True)
        (learner.parent / "driver.json").write_text(json.dumps({"step": step}))
        (learner / "config.json").write_text("{}")
        (learner / "tokenizer.json").write_text("{}")
    model = resolve_eval_model(str(tmp_path))
    assert model.checkpoint == str(tmp_path / "checkpoints" / "step_000010")
    assert model.local_dir == model.source == str(tmp_path / "checkpoints/step_000010/learner")
    twice = labelled([model, model])
    assert [m.label for m in twice] == [str(tmp_path), f"{tmp_path}#2"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--samples", "4"], "needs --temperature"),
        (["--samples", "2", "--temperature", "0.8", "--k", "1,5"], "--k 5 is more than"),
        (["--k", "0"], "at least 1"),
        (["--limit", "0"], "--limit 0"),
        (["--max-tokens", "0"], "bad sampling option"),
    ],
)
def test_bad_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, options: list[str], message: str
) -> None:
    code, err = run(capsys, "eval", str(tmp_path), *options)
    assert code == 2 and message in err


def test_score_only_bad_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "eval", "score", "--benchmark", "cruxeval-o", str(tmp_path / "x"))
    assert code == 2 and "no such file" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{nope\n")
    code, err = run(capsys, "eval", "score", "--benchmark", "humaneval", str(bad))
    assert code == 2 and f"{bad}:1" in err
    code, err = run(capsys, "eval", "score", "--benchmark", "nope", str(bad))
    assert code == 2 and "unknown benchmark 'nope'" in err
