"""Benchmarks of `azr eval` without a sandbox: loading, bad rows, prompts, answer extraction,
the jobs they build (never run here), generations files and result files."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from azr.config import EVAL_BENCHMARKS
from azr.eval.benchmark import Answer, EvalInputError, Verdict
from azr.eval.code_bench import CodeProblem, code_file_benchmark, code_problem, last_fenced_code
from azr.eval.cruxeval_bench import call_arguments
from azr.eval.generations import read_cruxeval_generations, read_samples_jsonl
from azr.eval.math_bench import (
    MathBenchmark,
    MathProblem,
    answer_body,
    gold_text,
    math_file_benchmark,
)
from azr.eval.registry import (
    BUILTIN_BENCHMARKS,
    load_benchmark,
    load_benchmarks,
    metric_key,
    parse_benchmark_names,
)
from azr.eval.results import Sample, console_lines, markdown_table, summarize
from azr.eval.run import loop_metrics
from azr.prompts import format_response, solve_prompt
from azr.tasks import CheckRequest, Role, ScoreRequest, TaskType

ADD_ROW = {
    "task_id": "Demo/0",
    "prompt": 'def add(a, b):\n    """Sum of a and b."""\n',
    "entry_point": "add",
    "canonical_solution": "    return a + b\n",
    "base_input": [[1, 2]],
    "plus_input": [[-1, 1], [0.1, 0.2]],
    "atol": 0,
}


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


# ----------------------------------------------------------------------------- names
def test_the_config_and_the_registry_know_the_same_benchmarks() -> None:
    assert tuple(BUILTIN_BENCHMARKS) == EVAL_BENCHMARKS


def test_unknown_benchmark_names_the_name_and_the_choices() -> None:
    with pytest.raises(EvalInputError, match="unknown benchmark 'mbpp'.*humaneval"):
        load_benchmark("mbpp")
    with pytest.raises(EvalInputError, match="names no file"):
        load_benchmark("code:")
    with pytest.raises(EvalInputError, match="no benchmark"):
        parse_benchmark_names(" , ")
    assert parse_benchmark_names("cruxeval-o, humaneval,cruxeval-o") == ["cruxeval-o", "humaneval"]
    assert metric_key("cruxeval-o") == "cruxeval_o"
    assert metric_key("code:/data/HumanEvalPlus.jsonl") == "code_data_humanevalplus_jsonl"


def test_missing_files_are_named(tmp_path: Path) -> None:
    for name in ("code", "math"):
        with pytest.raises(EvalInputError, match=f"cannot read {tmp_path}/none.jsonl"):
            load_benchmark(f"{name}:{tmp_path}/none.jsonl")
    with pytest.raises(EvalInputError, match="none.jsonl"):
        load_benchmark("cruxeval-o", cruxeval_file=tmp_path / "none.jsonl")


# ----------------------------------------------------------------------------- cruxeval
def test_cruxeval_asks_every_row_with_the_self_play_prompt_held_out_half_first() -> None:
    output, inputs = load_benchmark("cruxeval-o"), load_benchmark("cruxeval-i")
    assert len(output.problems) == len(inputs.problems) == 800
    assert all(row.held_out for row in output.problems[:400])
    assert not any(row.held_out for row in output.problems[400:])
    row = output.problems[0]
    assert output.user_prompt(row) == solve_prompt(TaskType.DEDUCTION, row.triplet)
    assert inputs.user_prompt(row) == solve_prompt(TaskType.ABDUCTION, row.triplet)
    small = load_benchmarks(["cruxeval-o"], size=5)[0]
    assert [r.id for r in small.problems] == [r.id for r in output.problems[:5]]


def test_a_bad_cruxeval_row_is_left_out_and_named(tmp_path: Path) -> None:
    good = {"id": "sample_1", "code": "def f(x):\n    return x", "input": "1", "output": "1"}
    path = write_jsonl(tmp_path / "c.jsonl", [good, "{not json", {"id": "sample_3"}])
    bench = load_benchmark("cruxeval-o", cruxeval_file=path)
    assert [r.id for r in bench.problems] == ["sample_1"]
    assert [e.where for e in bench.errors] == [f"{path}:2", f"{path}:3"]


def test_cruxeval_answers_follow_the_strict_solver_format() -> None:
    bench = load_benchmark("cruxeval-o")
    row = bench.problems[0]
    good = format_response(TaskType.DEDUCTION, Role.SOLVE, think="t", output=row.output)
    assert bench.extract(row, good) == Answer(row.output, format_ok=True)
    loose = bench.extract(row, f"The answer is {row.output}")
    assert loose == Answer(None, format_ok=False, reason="format:no_answer_tag")
    job = bench.job(row, row.output)
    assert isinstance(job, ScoreRequest) and job.task == TaskType.DEDUCTION


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ("f(1, 2)", "1, 2"),
        ("  f([1], 'a')\n", "[1], 'a'"),
        ("f(range(3))", "range(3)"),
        ("f(1)(2)", None),
        ("f(1) + f(2)", None),
        ("g(1)", None),
        ("f(1", None),
        ("assert f(1) == 2", None),
    ],
)
def test_cruxeval_input_predictions_are_calls_of_f(text: str, arguments: str | None) -> None:
    assert call_arguments(text) == arguments


def test_non_literal_cruxeval_answers_get_cruxeval_own_assertion() -> None:
    crux_o, crux_i = load_benchmark("cruxeval-o"), load_benchmark("cruxeval-i")
    row = crux_o.problems[0]
    non_literal = Verdict(False, "non_literal_answer")
    second = crux_o.second_job(row, "'a' * 3", non_literal)
    assert isinstance(second, CheckRequest) and "'a' * 3" in second.program
    assert row.output in second.test and "def f" not in second.program  # no f to call
    second = crux_i.second_job(row, "range(3)", non_literal)
    assert isinstance(second, CheckRequest) and second.program == row.code
    for job in (second,):
        ast.parse(job.program)
        ast.parse(job.test)
    assert crux_o.second_job(row, "1", Verdict(False, "wrong")) is None
    assert crux_o.second_job(row, "1)\nimport os\n(1", non_literal) is None
    assert crux_i.second_job(row, "1)\nimport os\n(1", non_literal) is None


def test_cruxeval_generations_format(tmp_path: Path) -> None:
    path = tmp_path / "gen.json"
    path.write_text(json.dumps({"sample_1": ["f(1)", "f(2)"], "sample_3": 5, "sample_5": "x"}))
    generations, errors = read_cruxeval_generations(path)
    assert [(g.problem_id, g.value) for g in generations] == [
        ("sample_1", "f(1)"),
        ("sample_1", "f(2)"),
        ("sample_5", "x"),
    ]
    assert [e.where for e in errors] == [f"{path}:sample_3"]
    bench = load_benchmark("cruxeval-i")
    row = bench.problems[0]
    assert bench.from_generation(row, "f('a', 1)") == Answer("'a', 1", format_ok=True)
    assert bench.from_generation(row, "'a', 1").reason == "not_a_call_of_f"
    path.write_text('{"sample_1": ["f(1)"],\n "sample_3": [x]}')
    with pytest.raises(EvalInputError, match=f"{path}:2"):
        read_cruxeval_generations(path)


# ----------------------------------------------------------------------------- code
def test_humaneval_comes_from_the_wheel_data() -> None:
    bench = load_benchmark("humaneval")
    assert len(bench.problems) == 164 and bench.errors == []
    assert bench.problems[0].task_id == "HumanEval/0"
    assert "random" in bench.sandbox_modules and "hashlib" in bench.sandbox_modules
    assert all("def check(candidate)" in p.test for p in bench.problems)


def test_code_file_keeps_good_rows_and_names_bad_ones(tmp_path: Path) -> None:
    rows = [
        ADD_ROW,
        "{broken",
        {**ADD_ROW, "task_id": "Demo/1", "entry_point": "not a name"},
        {"task_id": "Demo/2", "prompt": "def g():\n", "entry_point": "g"},
        {**ADD_ROW, "base_input": None, "plus_input": None, "test": "assert add(1, 1) == 2"},
        ADD_ROW,
    ]
    path = write_jsonl(tmp_path / "plus.jsonl", rows)
    bench = code_file_benchmark(f"code:{path}", path)
    assert [p.task_id for p in bench.problems] == ["Demo/0"]
    assert [e.where for e in bench.errors] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "duplicate" in bench.errors[-2].message or "duplicate" in bench.errors[-1].message
    assert "needs a test" in bench.errors[2].message
    with pytest.raises(EvalInputError, match="no usable problem"):
        code_file_benchmark("code:x", write_jsonl(tmp_path / "bad.jsonl", ["{", "[]"]))


def test_evalplus_inputs_become_a_test_against_the_canonical_solution() -> None:
    problem = code_problem(ADD_ROW)
    tree = ast.parse(problem.test)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)
    assert "[[1, 2], [-1, 1], [0.1, 0.2]]" in problem.test
    with_test = code_problem({**ADD_ROW, "base_input": [], "plus_input": [], "test": "T"})
    assert with_test.test == "T"


def test_code_answers_strict_block_else_last_fenced_block() -> None:
    problem = CodeProblem("Demo/0", ADD_ROW["prompt"], "add", "T")
    bench = load_benchmark("humaneval")
    code = "def add(a, b):\n    return a + b"
    strict = format_response(TaskType.INDUCTION, Role.SOLVE, think="t", program=code)
    answer = bench.extract(problem, strict)
    assert answer.format_ok and answer.text.startswith(ADD_ROW["prompt"].rstrip())
    assert answer.text.rstrip().endswith(code)
    loose = bench.extract(problem, f"Sure:\n```python\nx = 1\n```\nthen\n```python\n{code}\n```")
    assert not loose.format_ok and loose.text.rstrip().endswith(code)
    assert bench.extract(problem, "no code at all").reason == "no_code:no_answer_tag"
    assert last_fenced_code("```python\nunclosed") is None
    job = bench.job(problem, answer.text)
    assert isinstance(job, CheckRequest) and job.entry_point == "add" and job.test == "T"


def test_humaneval_samples_continue_the_prompt(tmp_path: Path) -> None:
    bench = load_benchmark("humaneval")
    problem = bench.problems[0]
    completion = bench.from_generation(problem, {"completion": "    return True\n"})
    assert completion.text == problem.prompt + "    return True\n"
    assert bench.from_generation(problem, {"solution": "S"}).text == "S"
    assert bench.from_generation(problem, {"task_id": "x"}).reason == "no_completion_or_solution"
    path = write_jsonl(
        tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": ""}, "{x", [1]]
    )
    generations, errors = read_samples_jsonl(path)
    assert [g.problem_id for g in generations] == ["HumanEval/0"]
    assert [e.where for e in errors] == [f"{path}:2", f"{path}:3"]


# ----------------------------------------------------------------------------- math
def test_math_file_rows_and_answers(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"problem": "1+1?", "answer": "2"},
            {"problem": "half?", "answer": "\\frac{1}{2}", "id": "h"},
            {"problem": "no answer"},
            "nope",
            {"problem": "int answer", "answer": 3},
        ],
    )
    bench = math_file_benchmark(f"math:{path}", path)
    assert [p.id for p in bench.problems] == ["m.jsonl:1", "h", "m.jsonl:5"]
    assert [e.where for e in bench.errors] == [f"{path}:3", f"{path}:4"]
    assert "math_verify" in bench.sandbox_modules
    assert gold_text("2") == "$2$" and gold_text("\\boxed{2}") == "\\boxed{2}"


def test_math_answers_and_gold_travel_as_literals_whatever_they_contain() -> None:
    hostile = "\\boxed{1}'''\nimport os\nos.system('touch /tmp/x')\n'''\"\\"
    problem = MathProblem("p", "?", hostile)
    bench = MathBenchmark(name="m", problems=[problem])
    job = bench.job(problem, hostile)
    returned = ast.parse(job.program).body[0].body[0].value  # type: ignore[attr-defined]
    assert ast.literal_eval(returned) == hostile
    gold = next(n for n in ast.parse(job.test).body if isinstance(n, ast.Assign))
    assert ast.literal_eval(gold.value) == hostile  # \\boxed: used as it is
    assert answer_body("<think> t </think> <answer> \\boxed{2} </answer>") == "\\boxed{2}"
    assert answer_body("so \\boxed{2}") is None
    assert bench.extract(problem, "so \\boxed{2}") == Answer("so \\boxed{2}", format_ok=False)


# ----------------------------------------------------------------------------- results
def _sample(problem: str, passed: bool, fmt: bool = True, index: int = 0) -> Sample:
    reason = None if passed else "wrong"
    return Sample(problem, index, "p", "c", Answer("a", fmt), Verdict(passed, reason))


def test_summary_console_lines_and_table() -> None:
    samples = [
        _sample("a", True, index=0),
        _sample("a", False, index=1),
        _sample("b", False, fmt=False, index=0),
        _sample("b", False, index=1),
    ]
    result = summarize("cruxeval-o", samples, ks=[1, 2, 5], seconds=1.0)
    assert result.problems == 2 and result.samples_per_problem == 2
    assert result.pass_at == {1: pytest.approx(0.25), 2: pytest.approx(0.5)}  # no pass@5 of 2
    assert result.format_rate == 0.75 and result.reasons == {"wrong": 3}
    assert console_lines([result]) == [
        "cruxeval-o pass@1 25.0 (2 problems)",
        "cruxeval-o pass@2 50.0 (2 problems)",
    ]
    other = summarize("cruxeval-o", [_sample("a", True)], ks=[1], seconds=1.0)
    table = markdown_table(["base", "trained"], {"base": [result], "trained": [other]})
    lines = table.splitlines()
    assert lines[0] == "| benchmark | metric | base | trained |"
    assert "| cruxeval-o | pass@1 | 25.0 | 100.0 |" in lines
    assert "| cruxeval-o | pass@2 | 50.0 |  |" in lines
    assert loop_metrics([result]) == {
        "eval/cruxeval_o": pytest.approx(0.25),
        "eval/cruxeval_o_format_ok": 0.75,
    }
