"""`azr eval` end to end on the tiny model (real Ray, vLLM CPU build, the executor pool):
two MODELs side by side, score-only mode on gold generations, and the loop's periodic check."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT

from azr.config import ModelConfig, TinyModelConfig, load_config
from azr.cruxeval import load_cruxeval
from azr.eval.registry import load_benchmarks
from azr.models import ensure_model
from azr.tasks import TaskType
from driver.evaluation import eval_config, periodic_eval
from driver.runtime import EVALUATION, Runtime

pytestmark = pytest.mark.slow

MODELS = REPO_ROOT / ".scratch" / "models"
BENCHMARKS = ["cruxeval-o", "cruxeval-i", "humaneval", "probe"]
RESULTS = ["cruxeval-o", "cruxeval-i", "humaneval", *(f"probe/{t}" for t in TaskType)]
"""What BENCHMARKS evaluates: `probe` is the tiny model's probe, one benchmark per task type."""
LIMIT = 3


@pytest.fixture(scope="module")
def base_model() -> Path:
    """The tiny model before its warm start."""
    return ensure_model(
        ModelConfig(cache_dir=str(MODELS), tiny=TinyModelConfig(warm_start_steps=0))
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose newest checkpoint holds the warm-started tiny model."""
    warm = ensure_model(ModelConfig(cache_dir=str(MODELS)))
    run = tmp_path_factory.mktemp("run")
    for step in (1, 2):
        checkpoint = run / "checkpoints" / f"step_{step:06d}"
        shutil.copytree(warm, checkpoint / "learner")
        (checkpoint / "driver.json").write_text(json.dumps({"step": step, "version": step}))
    return run


def azr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "driver.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )


def test_two_models_side_by_side(base_model: Path, trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = azr(
        "eval", str(base_model), str(trained_run),
        "--benchmarks", ",".join(BENCHMARKS), "--limit", str(LIMIT), "--max-tokens", "48",
        "--output", str(out), f"model.cache_dir={MODELS}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    expected = []
    for model in (base_model, trained_run):
        expected.append(f"[{model}]")
        expected += [rf"{b} pass@1 \d+\.\d \({LIMIT} problems\)" for b in RESULTS]
    assert len(lines) >= len(expected)
    for line, pattern in zip(lines[-len(expected) :], expected, strict=True):
        assert re.fullmatch(pattern if "pass@" in pattern else re.escape(pattern), line), line
    table = (out / "results.md").read_text().splitlines()
    assert table[2] == f"| benchmark | metric | {base_model} | {trained_run} |"
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * len(RESULTS) * LIMIT
    assert {s["model"] for s in samples} == {str(base_model), str(trained_run)}
    for s in samples:
        assert s["prompt"] and s["completion"] is not None and isinstance(s["passed"], bool)
        assert s["passed"] or s["reason"]
    results = json.loads((out / "results.json").read_text())
    [trained] = [m for m in results["models"] if m["label"] == str(trained_run)]
    assert trained["checkpoint"] == str(trained_run / "checkpoints" / "step_000002")
    for label, benchmarks in results["results"].items():
        assert [b["benchmark"] for b in benchmarks] == RESULTS
        for b in benchmarks:
            mine = [s for s in samples if s["model"] == label and s["benchmark"] == b["benchmark"]]
            assert b["pass_at"]["pass@1"] == sum(s["passed"] for s in mine) / LIMIT
    # the warm-started model writes the self-play answer format; the base model does not
    format_rates = {
        label: sum(b["format_rate"] for b in benchmarks)
        for label, benchmarks in results["results"].items()
    }
    assert format_rates[str(trained_run)] > format_rates[str(base_model)]


def test_score_only_gold_cruxeval_scores_100_percent(tmp_path: Path) -> None:
    rows = load_cruxeval()
    gold = tmp_path / "gold-i.json"
    gold.write_text(json.dumps({row.id: [f"f({row.input})"] for row in rows}))
    done = azr(
        "eval", "score", "--benchmark", "cruxeval-i", str(gold), "--output", str(tmp_path / "o"),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "cruxeval-i pass@1 100.0 (800 problems)"
    lines = (tmp_path / "o" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 800 and all(json.loads(line)["passed"] for line in lines)


def test_the_loops_periodic_eval_runs_the_same_code(tmp_path: Path) -> None:
    config = load_config(
        overrides=[
            f"output_dir={tmp_path}",
            "run_name=loop",
            f"model.cache_dir={MODELS}",
            "selfplay.eval_benchmarks=[cruxeval-o, humaneval]",
            "selfplay.eval_size=2",
        ]
    )
    benchmarks = load_benchmarks(config.selfplay.eval_benchmarks, size=config.selfplay.eval_size)
    config = eval_config(config, benchmarks)
    assert "random" in config.executor.sandbox_modules
    with Runtime(config, parts=EVALUATION) as rt:
        assert rt.learner is None and rt.store is None
        record = periodic_eval(rt, config, benchmarks, step=3)
    assert set(record) == {
        "eval/cruxeval_o",
        "eval/cruxeval_o_format_ok",
        "eval/humaneval",
        "eval/humaneval_format_ok",
        "time/eval",
    }
    out = config.run_dir / "eval" / "step_000003"
    results = json.loads((out / "results.json").read_text())
    [(label, figures)] = results["results"].items()
    assert [f["problems"] for f in figures] == [2, 2]
    assert record["eval/cruxeval_o"] == figures[0]["pass_at"]["pass@1"]
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4
