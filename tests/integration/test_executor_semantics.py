"""AZR_SPEC validate/score semantics of SandboxExecutor, on every backend (`executor` fixture)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from azr.tasks import ScoreRequest, ScoreResult, TaskType, ValidateRequest, ValidationResult
from executor_pool.executor import SandboxExecutor

SQUARE = "def f(x):\n    return x * x"


def validate(
    executor: SandboxExecutor, program: str, *inputs: str, distinct: bool = False
) -> ValidationResult:
    request = ValidateRequest(program=program, inputs=inputs, require_distinct_inputs=distinct)
    return executor.validate_many([request])[0]


def score(executor: SandboxExecutor, **fields: object) -> ScoreResult:
    return executor.score_many([ScoreRequest(**fields)])[0]  # type: ignore[arg-type]


def test_valid_program_gives_canonical_outputs_in_input_order(executor: SandboxExecutor) -> None:
    result = validate(executor, SQUARE, "3", "1.5", "2j")
    assert result == ValidationResult(valid=True, outputs=("9", "2.25", "(-4+0j)"))
    sets = validate(
        executor, "def f(words):\n    return set(words), frozenset(words)", "['b', 'a', 'c']"
    )
    assert sets.outputs == ("({'a', 'b', 'c'}, frozenset({'a', 'b', 'c'}))",)


def test_results_come_back_in_request_order(executor: SandboxExecutor) -> None:
    requests = [ValidateRequest(program=SQUARE, inputs=(str(n),)) for n in range(12)]
    requests.insert(5, ValidateRequest(program="import os\n" + SQUARE, inputs=("1",)))
    results = executor.validate_many(requests)
    assert [r.outputs[0] if r.valid else r.reason for r in results] == [
        *(str(n * n) for n in range(5)),
        "banned:os",
        *(str(n * n) for n in range(5, 12)),
    ]


def test_static_rejections_never_reach_the_sandbox(executor: SandboxExecutor) -> None:
    runs_before = executor.stats()["runs"]
    assert validate(executor, "import os\n" + SQUARE, "1").reason == "banned:os"
    assert validate(executor, SQUARE, "__import__('os')").reason == "non_literal_input"
    assert validate(executor, SQUARE, "1)\nTrue or (1").reason == "non_literal_input"
    assert validate(executor, "def g(x):\n    return x", "1").reason == "no_entry"
    assert validate(executor, SQUARE).reason == "no_inputs"
    assert executor.stats()["runs"] == runs_before


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("return 1 / x", "exception:ZeroDivisionError"),
        ("raise ValueError('no error word here')", "exception:ValueError"),
        ("raise StopIteration", "exception:StopIteration"),
        ("raise SystemExit(0)", "exception:SystemExit"),
        ("raise KeyboardInterrupt", "exception:KeyboardInterrupt"),
        ("raise GeneratorExit", "exception:GeneratorExit"),
        ("return [1] * 2000", "output_too_large"),
        ("return 'x' * 4001", "output_too_large"),
        ("return float('nan')", "non_literal_output"),
        ("return float('inf')", "non_literal_output"),
        ("return len", "non_literal_output"),
        ("return (i for i in range(3))", "non_literal_output"),
        ("return range(3)", "non_literal_output"),
        ("return Ellipsis", "non_literal_output"),
    ],
)
def test_failures_are_invalid_with_a_reason(
    executor: SandboxExecutor, body: str, reason: str
) -> None:
    result = validate(executor, f"def f(x):\n    {body}", "0")
    assert result == ValidationResult(valid=False, reason=reason)


def test_output_size_limit_is_exact_and_never_truncates(executor: SandboxExecutor) -> None:
    limit = executor.config.max_output_chars
    fits = validate(executor, f"def f(x):\n    return 'a' * {limit - 2}", "0")
    assert fits.valid and len(fits.outputs[0]) == limit
    assert (
        validate(executor, f"def f(x):\n    return 'a' * {limit - 1}", "0").reason
        == "output_too_large"
    )


def test_nondeterminism_is_caught_three_ways(executor: SandboxExecutor) -> None:
    by_hash_seed = "def f(x):\n    return hash(x) % 1000003"
    by_set_order = "def f(x):\n    return list({str(i) * 3 for i in range(40)})"
    by_hidden_state = "seen = []\ndef f(x):\n    seen.append(x)\n    return len(seen)"
    for program in (by_hash_seed, by_set_order, by_hidden_state):
        assert validate(executor, program, "'abc'").reason == "nondeterministic", program
    # Sorting or int hashing is deterministic, and so is a set returned as a value.
    assert validate(
        executor, "def f(x):\n    return sorted({str(i) for i in range(40)})[:2]", "0"
    ).valid
    assert validate(executor, "def f(x):\n    return {str(i) for i in range(5)}", "0").valid


def test_each_call_gets_a_fresh_copy_of_the_input(executor: SandboxExecutor) -> None:
    mutating = "def f(xs):\n    xs.append(len(xs))\n    return xs"
    assert validate(executor, mutating, "[7]").outputs == ("[7, 1]",)


def test_induction_inputs_must_be_distinct(executor: SandboxExecutor) -> None:
    assert validate(executor, SQUARE, "1", "2", "1 ", distinct=True).reason == "duplicate_inputs"
    result = validate(executor, SQUARE, "1", "2", "3", distinct=True)
    assert result.outputs == ("1", "4", "9")
    # One bad input of N makes the whole proposal invalid.
    assert validate(executor, "def f(x):\n    return 10 // x", "1", "0", "2").reason == (
        "exception:ZeroDivisionError"
    )


def test_deduction_scoring(executor: SandboxExecutor) -> None:
    task = {
        "task": TaskType.DEDUCTION,
        "program": SQUARE,
        "input": "2",
        "output": "[6, {'a': (1,)}]",
    }
    assert score(executor, **task, answer="[6.0, {'a': (1,)}]").accuracy == 1.0  # 6 == 6.0
    assert score(executor, **task, answer=" [6, {'a': (1, )}] ").accuracy == 1.0
    assert score(executor, **task, answer="[6, {'a': (2,)}]") == ScoreResult(
        accuracy=0.0, reason="wrong"
    )
    for hack in ("A()", "[6, x]", "__import__('os')", "f(2)"):
        assert score(executor, **task, answer=hack) == ScoreResult(
            accuracy=0.0, reason="non_literal_answer"
        )


def test_abduction_scoring(executor: SandboxExecutor) -> None:
    task = {"task": TaskType.ABDUCTION, "program": "def f(a, b):\n    return a + b", "output": "5"}
    assert score(executor, **task, answer="2, 3").accuracy == 1.0
    assert score(executor, **task, answer="5, 0,").accuracy == 1.0  # any input that works
    assert score(executor, **task, answer="1, 1") == ScoreResult(accuracy=0.0, reason="wrong")
    assert score(executor, **task, answer="'a', 1").reason == "exception:TypeError"
    injected = score(executor, **task, answer="1)\nTrue or (1")
    assert injected == ScoreResult(accuracy=0.0, reason="non_literal_answer")


def test_induction_scoring_binary_and_fraction(executor_config) -> None:  # type: ignore[no-untyped-def]
    pairs = (("1", "2"), ("2", "4"), ("3", "7"))
    task = {"task": TaskType.INDUCTION, "program": "", "pairs": pairs}
    with SandboxExecutor(executor_config, induction_scoring="fraction") as fraction:
        doubling = score(fraction, **task, answer="def f(x):\n    return 2 * x")
        assert doubling.accuracy == pytest.approx(2 / 3) and doubling.reason == "wrong"
        crashes_once = "def f(x):\n    return 2 * x if x < 3 else 1 / 0"
        assert score(fraction, **task, answer=crashes_once).accuracy == pytest.approx(2 / 3)
    binary_task = {**task, "pairs": pairs[:2]}
    with SandboxExecutor(executor_config) as binary:
        assert score(binary, **task, answer="def f(x):\n    return 2 * x").accuracy == 0.0
        assert score(binary, **binary_task, answer="def f(x):\n    return x + x").accuracy == 1.0
        assert score(
            binary, **binary_task, answer="import os\ndef f(x):\n    return 2 * x"
        ).reason == ("banned:os")


def test_stats_count_runs_timeouts_and_latency(executor: SandboxExecutor) -> None:
    before = executor.stats()
    validate(executor, "def f(x):\n    while True:\n        pass", "0")
    validate(executor, "def f(x):\n    return [0] * (10 ** 10)", "0")
    after = executor.stats()
    assert after["runs"] == before["runs"] + 2
    assert after["timeouts"] == before["timeouts"] + 1
    assert after["memory_kills"] == before["memory_kills"] + 1
    assert after["latency_s"]["count"] == before["latency_s"]["count"] + 2
    assert after["sandbox_restarts"] == 0


# ----------------------------------------------------------------------------- client healing
def _busy_request(n: int) -> ValidateRequest:
    program = (
        "def f(n):\n    total = 0\n    for i in range(n):\n        total += i\n    return total"
    )
    return ValidateRequest(program=program, inputs=(str(n),))


def test_a_dead_server_is_replaced_and_in_flight_work_rerun() -> None:
    from azr.config import ExecutorConfig

    config = ExecutorConfig(slots=2, timeout_s=5.0, memory_mb=256)
    with SandboxExecutor(config) as executor:
        first_pid = executor.sandbox.pid
        # Long enough (~0.1 s per call unloaded) that the kill lands while work is in flight.
        requests = [_busy_request(3_000_000 + n) for n in range(6)]
        outcome: list = []
        worker = threading.Thread(target=lambda: outcome.extend(executor.validate_many(requests)))
        worker.start()
        time.sleep(0.15)
        os.killpg(first_pid, signal.SIGKILL)  # the fork-server and its zygotes die mid-batch
        worker.join(timeout=60)
        assert [r.outputs for r in outcome] == [
            (str(n * (n - 1) // 2),) for n in range(3_000_000, 3_000_006)
        ]
        assert executor.sandbox.pid != first_pid
        assert executor.stats()["sandbox_restarts"] == 1, "\n".join(executor.sandbox.stderr_tail())


def test_a_wedged_server_is_detected_and_replaced() -> None:
    from azr.config import ExecutorConfig
    from executor_pool.sandbox import ProcessSandbox

    config = ExecutorConfig(slots=1, timeout_s=0.5, memory_mb=256)
    with SandboxExecutor(config, sandbox=ProcessSandbox(config, margin_s=0.5)) as executor:
        first_pid = executor.sandbox.pid
        os.kill(first_pid, signal.SIGSTOP)  # alive but silent: only the watchdog can tell
        start = time.monotonic()
        result = executor.validate_many([ValidateRequest(program=SQUARE, inputs=("4",))])
        assert result[0].outputs == ("16",)
        assert time.monotonic() - start < 10
        assert executor.sandbox.pid != first_pid
        assert executor.stats()["sandbox_restarts"] == 1
