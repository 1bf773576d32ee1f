"""Greedy CRUXEval-I/O check: abduction skill = CRUXEval-I, deduction skill = CRUXEval-O.

Runs the solver prompts of AZR on a fixed subset of real (program, input, output) triplets and
scores the answers in the executor pool exactly as self-play scores them.
"""

from __future__ import annotations

from azr.config import SamplingConfig
from azr.cruxeval import CruxEvalRow, split_rows
from azr.parsing import FormatError, parse_response
from azr.prompts import render_chat, solve_prompt
from azr.selfplay import Generator
from azr.tasks import Executor, Role, ScoreRequest, TaskType, Triplet


def eval_subset(rows: list[CruxEvalRow], size: int) -> list[Triplet]:
    """The first `size` triplets of the held-out half (the train half warm-starts the tiny model)."""
    _, held_out = split_rows(rows)
    return [row.triplet for row in held_out[:size]]


def cruxeval_accuracy(
    triplets: list[Triplet],
    *,
    generator: Generator,
    executor: Executor,
    tokenizer: object,
    sampling: SamplingConfig,
) -> dict[str, float]:
    """Greedy accuracy on CRUXEval-O (deduction) and CRUXEval-I (abduction)."""
    results: dict[str, float] = {}
    for task, name in ((TaskType.DEDUCTION, "cruxeval_o"), (TaskType.ABDUCTION, "cruxeval_i")):
        prompts = [render_chat(tokenizer, solve_prompt(task, t)) for t in triplets]
        generations = generator.generate(prompts, sampling.model_copy(update={"n": 1}))
        requests, formatted = [], 0
        for triplet, generation in zip(triplets, generations, strict=True):
            parsed = parse_response(generation.completions[0].text, task, Role.SOLVE)
            if isinstance(parsed, FormatError):
                continue
            formatted += 1
            answer = parsed.output if task == TaskType.DEDUCTION else parsed.inputs[0]
            requests.append(
                ScoreRequest(
                    task=task,
                    program=triplet.program,
                    input=triplet.input,
                    output=triplet.output,
                    answer=answer or "",
                )
            )
        scores = executor.score_many(requests) if requests else []
        results[name] = sum(s.accuracy for s in scores) / len(triplets) if triplets else 0.0
        results[f"{name}_format_ok"] = formatted / len(triplets) if triplets else 0.0
    return results
