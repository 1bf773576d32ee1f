"""The Ray side of evaluation: `azr eval` over models, its score-only mode, the loop's check.

Models are resolved before anything starts (an unreadable one fails by name). Each model gets
the evaluation parts of `driver.runtime.Runtime` (rollout actors and the executor pool, whose
sandbox also imports what the benchmarks need); the benchmarks run through `azr.eval.run` with
a progress bar each, and the figures and files come from `azr.eval.results`. The training
loop's periodic evaluation calls the same `azr.eval.run.evaluate_benchmark` on its own runtime.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from azr.config import AZRConfig, SamplingConfig
from azr.eval.benchmark import Benchmark, EvalInputError, RowError
from azr.eval.registry import sandbox_modules
from azr.eval.results import BenchmarkResult, SampleLog, write_run
from azr.eval.run import (
    BenchmarkRun,
    Generation,
    evaluate_benchmark,
    loop_metrics,
    score_generations,
)
from azr.models import ModelDirError, resolve_model, validate_model_dir
from driver.checkpoint import latest_checkpoint
from driver.runtime import EVALUATION, SCORING, Runtime


@dataclass(frozen=True)
class EvalModel:
    """A MODEL argument resolved: what the rollout loads and where it is on this node."""

    label: str
    """The argument as given (the column of results.md)."""
    source: str
    """``model.path`` for the rollout actors: a local directory or a hub id."""
    local_dir: str
    """The HF directory on this node (config.json, tokenizer, weights)."""
    checkpoint: str | None = None
    """The run checkpoint it comes from, if any."""


def resolve_eval_model(text: str) -> EvalModel:
    """A run directory (its newest checkpoint), a checkpoint directory, a local HF directory or
    a hub id → `EvalModel`; `EvalInputError` says why ``text`` is none of them."""
    path = Path(text).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        try:
            checkpoint = latest_checkpoint(path)
        except FileNotFoundError:
            raise EvalInputError(
                f"model {text!r}: a directory with neither config.json (a Hugging Face model) "
                "nor checkpoints (a run or checkpoint directory)"
            ) from None
        try:
            local = validate_model_dir(checkpoint / "learner")
        except ModelDirError as exc:
            raise EvalInputError(f"model {text!r}: checkpoint {checkpoint}: {exc}") from None
        return EvalModel(text, str(local), str(local), str(checkpoint))
    try:
        local = resolve_model(text)
    except ModelDirError as exc:
        raise EvalInputError(f"model {text!r}: {exc}") from None
    source = str(local) if path.exists() else text  # a hub id: each node fetches its own copy
    return EvalModel(text, source, str(local))


def labelled(models: Sequence[EvalModel]) -> list[EvalModel]:
    """The models with distinct labels (a repeated argument gets ``#2``, ``#3`` ...)."""
    seen: dict[str, int] = {}
    out = []
    for model in models:
        seen[model.label] = seen.get(model.label, 0) + 1
        count = seen[model.label]
        out.append(
            model
            if count == 1
            else EvalModel(**{**asdict(model), "label": f"{model.label}#{count}"})
        )
    return out


def eval_config(config: AZRConfig, benchmarks: Sequence[Benchmark]) -> AZRConfig:
    """``config`` whose sandbox also imports what ``benchmarks`` need (HumanEval's tests import
    random; math grading imports math-verify)."""
    modules = list(dict.fromkeys([*config.executor.sandbox_modules, *sandbox_modules(benchmarks)]))
    if modules == config.executor.sandbox_modules:
        return config
    executor = config.executor.model_copy(update={"sandbox_modules": modules})
    return config.model_copy(update={"executor": executor})


def prompt_token_limit(model_dir: str, config: AZRConfig, sampling: SamplingConfig) -> int:
    """Longest prompt (in tokens) that leaves ``max_tokens`` of room in the engine."""
    max_len = config.rollout.max_model_len
    try:
        model_config = json.loads((Path(model_dir) / "config.json").read_text())
        max_len = min(max_len, int(model_config.get("max_position_embeddings") or max_len))
    except (OSError, ValueError, TypeError):
        pass
    return max(1, max_len - sampling.max_tokens)


def run_benchmark(
    rt: Runtime,
    benchmark: Benchmark,
    *,
    config: AZRConfig,
    model_dir: str,
    sampling: SamplingConfig,
    ks: Sequence[int],
    desc: str,
    show_progress: bool = True,
) -> BenchmarkRun:
    """One benchmark on the runtime's model, with a progress bar."""
    with tqdm(
        total=len(benchmark.problems), desc=desc, unit="problem", disable=not show_progress
    ) as bar:
        return evaluate_benchmark(
            benchmark,
            generator=rt.services.generator,
            sandbox=rt.pool,
            tokenizer=rt.tokenizer,
            sampling=sampling,
            ks=ks,
            max_prompt_tokens=prompt_token_limit(model_dir, config, sampling),
            progress=bar.update,
        )


def evaluate_models(
    config: AZRConfig,
    models: Sequence[EvalModel],
    benchmarks: Sequence[Benchmark],
    *,
    sampling: SamplingConfig,
    ks: Sequence[int],
    out_dir: Path,
) -> dict[str, list[BenchmarkResult]]:
    """Every benchmark on every model, one model at a time; writes results.json, results.md
    and samples.jsonl into ``out_dir`` (results after each model, so a crash keeps them)."""
    config = eval_config(config, benchmarks)
    results: dict[str, list[BenchmarkResult]] = {}
    settings = eval_settings(benchmarks, sampling, ks)
    with SampleLog(out_dir / "samples.jsonl") as log:
        for model in models:
            model_config = config.model_copy(
                update={"model": config.model.model_copy(update={"path": model.source})}
            )
            with Runtime(model_config, log_dir=out_dir / "logs", parts=EVALUATION) as rt:
                for benchmark in benchmarks:
                    run = run_benchmark(
                        rt,
                        benchmark,
                        config=model_config,
                        model_dir=model.local_dir,
                        sampling=sampling,
                        ks=ks,
                        desc=f"{model.label} {benchmark.name}",
                    )
                    log.write(model.label, benchmark.name, run.samples)
                    results.setdefault(model.label, []).append(run.result)
                    write_run(
                        out_dir,
                        models=[asdict(m) for m in models],
                        results=results,
                        settings=settings,
                    )
    return results


def score_file(
    config: AZRConfig,
    benchmark: Benchmark,
    generations: Sequence[Generation],
    *,
    label: str,
    source: str,
    errors: Sequence[RowError] = (),
    ks: Sequence[int],
    out_dir: Path,
) -> BenchmarkResult:
    """Score-only mode: judge generations read from ``source`` in the sandbox; write files."""
    config = eval_config(config, [benchmark])
    with (
        Runtime(config, log_dir=out_dir / "logs", parts=SCORING) as rt,
        tqdm(total=len(generations), desc=f"{label} {benchmark.name}", unit="answer") as bar,
    ):
        run = score_generations(
            benchmark, generations, sandbox=rt.pool, ks=ks, errors=errors, progress=bar.update
        )
    with SampleLog(out_dir / "samples.jsonl") as log:
        log.write(label, benchmark.name, run.samples)
    write_run(
        out_dir,
        models=[{"label": label, "generations": source}],
        results={label: [run.result]},
        settings={"benchmarks": [benchmark.name], "k": list(ks), "score_only": True},
    )
    return run.result


def eval_settings(
    benchmarks: Sequence[Benchmark], sampling: SamplingConfig, ks: Sequence[int]
) -> dict[str, Any]:
    return {
        "benchmarks": [b.name for b in benchmarks],
        "problems": {b.name: len(b.problems) for b in benchmarks},
        "sampling": sampling.model_dump(),
        "k": list(ks),
    }


def periodic_eval(
    rt: Runtime, config: AZRConfig, benchmarks: Sequence[Benchmark], step: int
) -> dict[str, float]:
    """The training loop's evaluation: pass@1 with ``rollout.eval`` sampling on the configured
    benchmarks; files in ``<run dir>/eval/step_<N>/``; returns the metrics.jsonl fields."""
    started = time.perf_counter()
    sampling = config.rollout.eval.model_copy(update={"n": 1})
    runs = [
        run_benchmark(
            rt,
            benchmark,
            config=config,
            model_dir=rt.model_path,
            sampling=sampling,
            ks=(1,),
            desc=f"eval {benchmark.name}",
            show_progress=False,  # under the loop's own bar
        )
        for benchmark in benchmarks
    ]
    out_dir = config.run_dir / "eval" / f"step_{step:06d}"
    label = f"step {step}"
    with SampleLog(out_dir / "samples.jsonl") as log:
        for benchmark, run in zip(benchmarks, runs, strict=True):
            log.write(label, benchmark.name, run.samples)
    write_run(
        out_dir,
        models=[{"label": label, "step": step}],
        results={label: [run.result for run in runs]},
        settings=eval_settings(benchmarks, sampling, (1,)),
    )
    record = loop_metrics(run.result for run in runs)
    record["time/eval"] = time.perf_counter() - started
    return record
