"""The tiny model's fixed probe: disjoint from the warm start, reproducible, gold by the sandbox.

Disjointness is checked with the buffer's own keys (`buffer_service.entries`): no probe program
has the program fingerprint of any program the warm start shows (in a prompt or a response),
and no probe input has the normal form of any warm-start input. Gold answers are re-derived in
the real process sandbox, and the probe benchmarks judge them right (and a wrong one wrong).
"""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from azr.config import ExecutorConfig, TinyModelConfig
from azr.eval.benchmark import Answer
from azr.eval.probe_bench import PROBE_BENCHMARKS
from azr.eval.registry import load_benchmarks, metric_key
from azr.eval.run import judge
from azr.tasks import IDENTITY_PROGRAM, TaskType, ValidateRequest
from azr.tiny import data
from azr.tiny.families import FAMILIES, draw_task
from azr.tiny.probe import PER_TYPE, PROBE_FILE, draft_probe, read_probe, validate_requests
from buffer_service.entries import EntryRejected, input_form, program_fingerprint
from executor_pool.executor import SandboxExecutor

FENCE = re.compile(r"```(python|input)\n(.*?)\n```", re.S)


@pytest.fixture(scope="module")
def probe():
    rows, errors = read_probe()
    assert errors == []
    return rows


@pytest.fixture(scope="module")
def sandbox():
    with SandboxExecutor(ExecutorConfig(slots=2, timeout_s=5.0)) as started:
        yield started


def warm_start_texts() -> tuple[set[bytes], set[str]]:
    """Program fingerprints and input forms of every block the warm start shows or teaches."""
    programs, inputs = set(), set()
    for example in data.build_examples(seed=TinyModelConfig().seed):
        for label, block in FENCE.findall(example.prompt + "\n" + example.response):
            try:
                if label == "python":
                    programs.add(program_fingerprint(block))
                else:
                    inputs.add(input_form(block))
            except EntryRejected:  # the answer-format placeholders ("def f(...):")
                continue
    return programs, inputs


def probe_inputs(row) -> list[str]:
    return [row.input] if row.input is not None else [i for i, _ in row.visible + row.hidden]


def test_probe_is_disjoint_from_the_warm_start_by_program_key_and_input(probe):
    warm_programs, warm_inputs = warm_start_texts()
    # the scan found the data: the warm split's programs (and the identity seed), nothing else
    warm_split = {program_fingerprint(f.program(p)) for f in FAMILIES for p in f.split("warm")}
    assert warm_programs <= warm_split | {program_fingerprint(IDENTITY_PROGRAM)}
    assert len(warm_programs) >= len(warm_split) - 2 and len(warm_inputs) > 1000
    clashes = [row.id for row in probe if program_fingerprint(row.program) in warm_programs]
    assert clashes == []
    reused = [
        row.id for row in probe if any(input_form(i) in warm_inputs for i in probe_inputs(row))
    ]
    assert reused == []
    # The check can fail: a warm-start program shown to it is found.
    some_warm = draw_task(random.Random(0), "warm").program
    assert program_fingerprint(some_warm) in warm_programs


def test_probe_has_enough_tasks_of_every_type_and_family(probe):
    counts = Counter(row.task for row in probe)
    assert all(counts[t] >= 200 for t in TaskType), counts
    for task in TaskType:
        families = Counter(row.family for row in probe if row.task == task)
        assert set(families) == {f.name for f in FAMILIES}
        assert max(families.values()) - min(families.values()) <= 1  # balanced
    assert len({(row.task, row.program, tuple(probe_inputs(row))) for row in probe}) == len(probe)


def test_shipped_file_is_the_draw_of_its_seed_with_sandbox_outputs(probe, sandbox):
    """Provenance: data/probe/probe.jsonl = draft_probe() + the executor's outputs."""
    drafts = draft_probe()
    assert len(drafts) == len(probe) == 3 * PER_TYPE
    results = sandbox.validate_many(validate_requests(drafts))
    for draft, result, row in zip(drafts, results, probe, strict=True):
        assert (draft.id, draft.program) == (row.id, row.program)
        assert result.valid, (draft.id, result.reason)
        if row.task == TaskType.INDUCTION:
            assert tuple(zip(draft.inputs, result.outputs, strict=True)) == row.visible + row.hidden
        else:
            assert (draft.inputs[0], result.outputs[0]) == (row.input, row.output)


def test_family_twins_agree_with_the_sandbox(sandbox):
    """The warm start's answers (our own Python twins of each family) are what the executor
    computes: the warm start never teaches a wrong answer."""
    rng = random.Random(7)
    tasks = [draw_task(rng, "warm", 2) for _ in range(300)]
    results = sandbox.validate_many(
        [ValidateRequest(program=t.program, inputs=t.inputs) for t in tasks]
    )
    assert [r.outputs for r in results] == [t.outputs for t in tasks]


def test_probe_benchmarks_judge_gold_answers_right_and_wrong_ones_wrong(sandbox):
    benchmarks = load_benchmarks(["probe"], probe_size=30)
    assert [b.name for b in benchmarks] == list(PROBE_BENCHMARKS)
    assert [metric_key(b.name) for b in benchmarks] == [f"probe/{t}" for t in TaskType]
    for benchmark in benchmarks:
        assert len(benchmark.problems) == 30
        gold = {
            TaskType.DEDUCTION: lambda row: row.output,
            TaskType.ABDUCTION: lambda row: row.input,
            TaskType.INDUCTION: lambda row: row.program,
        }[benchmark.task]
        right = [(row, Answer(gold(row), format_ok=True)) for row in benchmark.problems]
        assert all(v.passed for v in judge(benchmark, sandbox, right)), benchmark.name
        bad = {
            TaskType.DEDUCTION: "'no such output'",
            TaskType.ABDUCTION: "1234567",  # every family raises on it or returns another value
            TaskType.INDUCTION: "def f(x):\n    return 'no such output'",
        }[benchmark.task]
        wrong = [(row, Answer(bad, format_ok=True)) for row in benchmark.problems]
        assert not any(v.passed for v in judge(benchmark, sandbox, wrong)), benchmark.name


def test_probe_file_rows_that_are_bad_are_named(tmp_path):
    good = PROBE_FILE.read_text().splitlines()[0]
    path = tmp_path / "probe.jsonl"
    path.write_text(
        good + "\n{not json\n" + '{"id": "x", "task": "induction", "family": "f", "program": "p"}\n'
    )
    rows, errors = read_probe(path)
    assert len(rows) == 1
    assert [where for where, _ in errors] == [f"{path}:2", f"{path}:3"]
    assert "visible and hidden" in errors[1][1]
