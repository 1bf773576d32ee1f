"""Generations made elsewhere (score-only mode), read into `Generation`s.

- CRUXEval's format, for ``cruxeval-o`` / ``cruxeval-i``: one JSON object
  ``{"sample_N": [answer, ...]}``; an output prediction is the value as written, an input
  prediction the call ``f(...)``.
- HumanEval's ``samples.jsonl`` (and EvalPlus's), for code and math benchmarks: one JSON object
  per line with ``task_id`` and ``completion`` (continues the prompt) or ``solution`` (a whole
  program); math rows give the response as ``completion``.

A bad row or key is left out with a message naming its line or key; a file that cannot be read
or parsed at all raises `EvalInputError`.
"""

from __future__ import annotations

import json
from pathlib import Path

from azr.eval.benchmark import EvalInputError, RowError
from azr.eval.code_bench import read_lines
from azr.eval.cruxeval_bench import TASKS
from azr.eval.run import Generation


def read_generations(benchmark: str, path: str | Path) -> tuple[list[Generation], list[RowError]]:
    """The generations in ``path`` for ``benchmark``, in the format that benchmark takes."""
    if benchmark in TASKS:
        return read_cruxeval_generations(path)
    return read_samples_jsonl(path)


def read_cruxeval_generations(path: str | Path) -> tuple[list[Generation], list[RowError]]:
    """``{"sample_N": [answer, ...]}`` → one Generation per answer."""
    text = "\n".join(read_lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EvalInputError(
            f"{path}:{exc.lineno}: not CRUXEval generations (a JSON object of answer lists): "
            f"{exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise EvalInputError(f"{path}: CRUXEval generations must be a JSON object of lists")
    generations: list[Generation] = []
    errors: list[RowError] = []
    for key, answers in data.items():
        where = f"{path}:{key}"
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not answers:
            errors.append(RowError(where, "expected a non-empty list of answers"))
            continue
        generations.extend(Generation(str(key), answer, where) for answer in answers)
    return generations, errors


def read_samples_jsonl(path: str | Path) -> tuple[list[Generation], list[RowError]]:
    """HumanEval/EvalPlus samples: ``{"task_id", "completion" | "solution"}`` per line."""
    generations: list[Generation] = []
    errors: list[RowError] = []
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(RowError(where, f"not JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), str):
            errors.append(RowError(where, "expected an object with a text task_id"))
            continue
        generations.append(Generation(row["task_id"], row, where))
    if not generations and not errors:
        raise EvalInputError(f"{path}: no generations")
    return generations, errors
