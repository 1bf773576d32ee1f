"""Running a benchmark: generate, extract, judge in the sandbox, summarise.

The one code path of every evaluation: `azr eval` (driver/eval_cli.py), its score-only mode
and the training loop's periodic check all call `evaluate_benchmark` or `score_generations`,
over the same Protocols self-play uses (a generator, the executor pool), so nothing here
knows Ray. Work goes in chunks of problems: generate a chunk, judge it, report progress.
A problem whose prompt cannot fit the engine is judged ``prompt_too_long`` without being
generated; it never stops the other problems.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from azr.config import SamplingConfig
from azr.eval.benchmark import Answer, Benchmark, Job, RowError, Verdict
from azr.eval.registry import metric_key
from azr.eval.results import BenchmarkResult, Sample, summarize
from azr.prompts import render_chat
from azr.tasks import CheckRequest, Executor, ProgramChecker, ScoreRequest

Progress = Callable[[int], None]
"""Called with the number of problems just finished."""


class Generator(Protocol):
    """The rollout side: one generation (with ``.completions[i].text``) per prompt, in order."""

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[Any]: ...


class Sandbox(Executor, ProgramChecker, Protocol):
    """The executor pool: scores self-play answers and checks programs against tests."""


@dataclass
class BenchmarkRun:
    """A benchmark's samples and figures for one model."""

    samples: list[Sample]
    result: BenchmarkResult


def judge(
    benchmark: Benchmark, sandbox: Sandbox, items: Sequence[tuple[Any, Answer]]
) -> list[Verdict]:
    """The verdict on each (problem, answer), in order: the benchmark's job for each answer,
    and its second job for answers the first one turned down."""
    jobs: list[Job] = [
        benchmark.job(problem, answer.text)
        if answer.text is not None
        else Verdict(False, answer.reason or "no_answer")
        for problem, answer in items
    ]
    verdicts = run_jobs(sandbox, jobs)
    retry: dict[int, Job] = {}
    for index, ((problem, answer), verdict) in enumerate(zip(items, verdicts, strict=True)):
        if not verdict.passed and answer.text is not None:
            second = benchmark.second_job(problem, answer.text, verdict)
            if second is not None:
                retry[index] = second
    if retry:
        for index, verdict in zip(retry, run_jobs(sandbox, list(retry.values())), strict=True):
            verdicts[index] = verdict
    return verdicts


def run_jobs(sandbox: Sandbox, jobs: Sequence[Job]) -> list[Verdict]:
    """Send score requests and check requests to the sandbox (two batches); keep order."""
    scores = [i for i, job in enumerate(jobs) if isinstance(job, ScoreRequest)]
    checks = [i for i, job in enumerate(jobs) if isinstance(job, CheckRequest)]
    verdicts: list[Verdict | None] = [job if isinstance(job, Verdict) else None for job in jobs]
    for indices, call in ((scores, sandbox.score_many), (checks, sandbox.check_many)):
        if not indices:
            continue
        for index, result in zip(indices, call([jobs[i] for i in indices]), strict=True):
            verdicts[index] = Verdict(result.accuracy == 1.0, result.reason)
    return [v if v is not None else Verdict(False, "unjudged") for v in verdicts]


def evaluate_benchmark(
    benchmark: Benchmark,
    *,
    generator: Generator,
    sandbox: Sandbox,
    tokenizer: Any,
    sampling: SamplingConfig,
    ks: Iterable[int] = (1,),
    max_prompt_tokens: int | None = None,
    chunk_size: int = 64,
    progress: Progress | None = None,
) -> BenchmarkRun:
    """Generate ``sampling.n`` completions per problem, judge them, summarise."""
    started = time.perf_counter()
    samples: list[Sample] = []
    problems = benchmark.problems
    for start in range(0, len(problems), chunk_size):
        chunk = problems[start : start + chunk_size]
        prompts = [render_chat(tokenizer, benchmark.user_prompt(p)) for p in chunk]
        fits = [
            max_prompt_tokens is None or len(tokenizer.encode(prompt)) < max_prompt_tokens
            for prompt in prompts
        ]
        asked = [i for i, ok in enumerate(fits) if ok]
        generations = generator.generate([prompts[i] for i in asked], sampling) if asked else []
        texts: dict[int, list[str | None]] = {i: [None] * sampling.n for i in range(len(chunk))}
        for i, generation in zip(asked, generations, strict=True):
            texts[i] = [c.text for c in generation.completions]
        items: list[tuple[Any, Answer]] = []
        for i, problem in enumerate(chunk):
            for text in texts[i]:
                answer = (
                    benchmark.extract(problem, text)
                    if text is not None
                    else Answer(None, format_ok=False, reason="prompt_too_long")
                )
                items.append((problem, answer))
        verdicts = judge(benchmark, sandbox, items)
        position = 0
        for i, problem in enumerate(chunk):
            for index, text in enumerate(texts[i]):
                _, answer = items[position]
                samples.append(
                    Sample(
                        problem_id=benchmark.problem_id(problem),
                        index=index,
                        prompt=prompts[i],
                        completion=text,
                        answer=answer,
                        verdict=verdicts[position],
                    )
                )
                position += 1
        if progress is not None:
            progress(len(chunk))
    seconds = time.perf_counter() - started
    return BenchmarkRun(samples, summarize(benchmark.name, samples, ks, seconds, benchmark.errors))


@dataclass(frozen=True)
class Generation:
    """One answer written elsewhere (score-only mode): which problem, where it came from."""

    problem_id: str
    value: Any
    """The benchmark-specific payload (`Benchmark.from_generation`)."""
    where: str
    """``FILE:LINE`` or ``FILE:KEY`` of the generation."""


def score_generations(
    benchmark: Benchmark,
    generations: Sequence[Generation],
    *,
    sandbox: Sandbox,
    ks: Iterable[int] = (1,),
    errors: Sequence[RowError] = (),
    chunk_size: int = 256,
    progress: Progress | None = None,
) -> BenchmarkRun:
    """Judge outside generations with the benchmark's own rules; a generation for an unknown
    problem is left out (and listed), the others are judged. ``errors``: rows the reader
    could not use. The problems are those with at least one generation."""
    started = time.perf_counter()
    by_id = {benchmark.problem_id(p): p for p in benchmark.problems}
    left_out = [*benchmark.errors, *errors]
    known: list[tuple[Generation, Any]] = []
    for generation in generations:
        problem = by_id.get(generation.problem_id)
        if problem is None:
            left_out.append(
                RowError(
                    generation.where, f"no problem {generation.problem_id!r} in {benchmark.name}"
                )
            )
            continue
        known.append((generation, problem))
    samples: list[Sample] = []
    counts: dict[str, int] = {}
    for start in range(0, len(known), chunk_size):
        chunk = known[start : start + chunk_size]
        items = [(problem, benchmark.from_generation(problem, g.value)) for g, problem in chunk]
        verdicts = judge(benchmark, sandbox, items)
        for (generation, _), (_, answer), verdict in zip(chunk, items, verdicts, strict=True):
            index = counts.get(generation.problem_id, 0)
            counts[generation.problem_id] = index + 1
            samples.append(Sample(generation.problem_id, index, None, None, answer, verdict))
        if progress is not None:
            progress(len(chunk))
    seconds = time.perf_counter() - started
    return BenchmarkRun(samples, summarize(benchmark.name, samples, ks, seconds, left_out))


def loop_metrics(results: Iterable[BenchmarkResult]) -> dict[str, float]:
    """The training loop's metrics.jsonl fields of a periodic eval: ``eval/<key>`` (pass@1)
    and ``eval/<key>_format_ok`` per benchmark."""
    out: dict[str, float] = {}
    for result in results:
        key = metric_key(result.benchmark)
        out[f"eval/{key}"] = result.pass_at.get(1, 0.0)
        out[f"eval/{key}_format_ok"] = result.format_rate
    return out
