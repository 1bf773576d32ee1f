"""`azr exec validate|score` as a user runs it: a real subprocess, a real local Ray, real sandbox."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO_ROOT

from azr.cruxeval import load_cruxeval
from executor_pool.cli import parse_line

REPO = REPO_ROOT


def run_azr(
    *args: str, stdin: str | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    scratch = REPO / ".scratch"
    env = {
        **os.environ,
        "TMPDIR": os.environ.get("TMPDIR", str(scratch / "tmp")),
        "RAY_TMPDIR": os.environ.get("RAY_TMPDIR", str(scratch / "ray")),
    }
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own, never someone else's cluster
    return subprocess.run(
        [sys.executable, "-m", "driver.cli", "exec", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    return path


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


# -- line parsing (no Ray) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "bad_json: line 7:"),
        ("[1, 2]", "bad_request: line 7: not a JSON object"),
        ('{"id": 1, "inputs": ["1"]}', "bad_request: missing 'program'"),
        ('{"id": 1, "program": "def f(x): return x", "inputs": [1]}', "bad_request: 'inputs' must"),
        (
            '{"id": 1, "program": "def f(x): return x", "inputs": []}',
            "bad_request: 'inputs' is empty",
        ),
        ('{"id": 1, "program": 5, "inputs": ["1"]}', "bad_request: 'program' must be a string"),
        ("[" * 100_000 + "]" * 100_000, "bad_json: line 7:"),
    ],
)
def test_bad_validate_lines_get_a_reason(text: str, reason: str) -> None:
    line = parse_line("validate", text, 7)
    assert line.request is None
    assert line.reason is not None and line.reason.startswith(reason)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"task": "sorting", "answer": "1"}, "'task' must be one of"),
        ({"task": "deduction", "answer": "1"}, "missing 'output'"),
        ({"task": "abduction", "answer": "1", "output": "2"}, "missing 'program'"),
        ({"task": "induction", "answer": "def f(x): return x"}, "induction needs 'pairs'"),
        (
            {"task": "induction", "answer": "def f(x): return x", "pairs": [["1"]]},
            "induction needs",
        ),
        ({"task": "deduction", "output": "1"}, "missing 'answer'"),
    ],
)
def test_bad_score_lines_get_a_reason(record: dict, reason: str) -> None:
    line = parse_line("score", json.dumps({"id": "x", **record}), 1)
    assert line.request is None and line.id == "x"
    assert line.reason is not None and reason in line.reason


def test_good_lines_become_requests() -> None:
    line = parse_line(
        "score",
        json.dumps({"id": 3, "task": "induction", "program": "", "answer": "def f(x): return x",
                    "pairs": [["1", "1"], ["'a'", "'a'"]]}),
        1,
    )  # fmt: skip
    assert line.id == 3 and line.request is not None
    assert line.request.pairs == (("1", "1"), ("'a'", "'a'"))


# -- the real command --------------------------------------------------------------------------


@pytest.mark.slow
def test_validate_prints_one_result_per_line_in_order(tmp_path: Path) -> None:
    crux = load_cruxeval()[:12]
    lines: list[object] = [{"id": c.id, "program": c.code, "inputs": [c.input]} for c in crux]
    lines[3:3] = [
        "this is not json",
        {"id": "banned", "program": "import os\ndef f(x):\n    return x", "inputs": ["1"]},
        {"id": "raises", "program": "def f(x):\n    return 1 // x", "inputs": ["0"]},
        {"id": "no-inputs", "program": "def f(x):\n    return x"},
        "",
        {"id": 17, "program": "def f(a, b):\n    return [a] * b", "inputs": ["'x', 2", "None, 1"]},
    ]
    source = write_jsonl(tmp_path / "proposals.jsonl", lines)

    done = run_azr("validate", "--backend", "process", "--workers", "2", str(source))

    assert done.returncode == 0, done.stderr[-3000:]
    out = records(done.stdout)
    assert len(out) == len(lines) - 1  # the blank line is no record
    assert [r["id"] for r in out] == [c.id for c in crux[:3]] + [
        None, "banned", "raises", "no-inputs", 17
    ] + [c.id for c in crux[3:]]  # fmt: skip
    by_id = {r["id"]: r for r in out}
    assert out[3]["valid"] is False and out[3]["reason"].startswith("bad_json")
    assert by_id["banned"] == {
        "id": "banned",
        "valid": False,
        "outputs": None,
        "reason": "banned:os",
    }
    assert by_id["raises"]["valid"] is False and "ZeroDivisionError" in by_id["raises"]["reason"]
    assert by_id["no-inputs"]["reason"].startswith("bad_request")
    assert by_id[17] == {
        "id": 17,
        "valid": True,
        "outputs": ["['x', 'x']", "[None]"],
        "reason": None,
    }
    for case in crux:  # CRUXEval's recorded outputs, compared as literal values
        result = by_id[case.id]
        assert result["valid"], result
        assert ast.literal_eval(result["outputs"][0]) == ast.literal_eval(case.output)


SCORE_LINES = [
    {"id": "ded-right", "task": "deduction", "program": "", "output": "6", "answer": "6.0"},
    {"id": "ded-wrong", "task": "deduction", "program": "", "output": "6", "answer": "7"},
    {"id": "ded-code", "task": "deduction", "program": "", "output": "6", "answer": "__import__('os')"},
    {"id": "abd-right", "task": "abduction", "program": "def f(x):\n    return x * 2",
     "output": "[1, 1]", "answer": "[1]"},
    {"id": "abd-inject", "task": "abduction", "program": "def f(x):\n    return x",
     "output": "1", "answer": "1)\nimport os\nf(1"},
    {"id": "ind-right", "task": "induction", "program": "", "answer": "def f(x):\n    return x + 1",
     "pairs": [["1", "2"], ["5", "6"]]},
    {"id": "ind-hack", "task": "induction", "program": "",
     "answer": "class A:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return A()",
     "pairs": [["1", "2"]]},
    {"id": "no-output", "task": "deduction", "program": "", "answer": "1"},
    "{broken",
]  # fmt: skip
SCORE_EXPECTED = {
    "ded-right": 1.0, "ded-wrong": 0.0, "ded-code": 0.0, "abd-right": 1.0, "abd-inject": 0.0,
    "ind-right": 1.0, "ind-hack": 0.0, "no-output": 0.0, None: 0.0,
}  # fmt: skip


def check_scores(out: list[dict]) -> None:
    assert [r["id"] for r in out] == list(SCORE_EXPECTED)
    assert {r["id"]: r["accuracy"] for r in out} == SCORE_EXPECTED
    by_id = {r["id"]: r for r in out}
    assert by_id["ded-right"]["reason"] is None
    assert by_id["ded-wrong"]["reason"] == "wrong"
    assert by_id["no-output"]["reason"] == "bad_request: missing 'output'"
    assert by_id[None]["reason"].startswith("bad_json")


@pytest.mark.slow
def test_score_reads_stdin_and_scores_every_task_type() -> None:
    stdin = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in SCORE_LINES)
    done = run_azr("score", "--backend", "process", "--no-progress", "-", stdin=stdin)
    assert done.returncode == 0, done.stderr[-3000:]
    check_scores(records(done.stdout))


@pytest.mark.slow
@pytest.mark.docker
def test_score_with_the_docker_backend(tmp_path: Path, docker_image: str) -> None:
    source = write_jsonl(tmp_path / "answers.jsonl", SCORE_LINES)
    done = run_azr(
        "score", "--backend", "docker", "--workers", "1", str(source),
        f"executor.docker.image={docker_image}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    check_scores(records(done.stdout))


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    done = run_azr("validate", str(tmp_path / "nope.jsonl"), timeout=60)
    assert done.returncode == 2
    assert "cannot read" in done.stderr and done.stdout == ""
