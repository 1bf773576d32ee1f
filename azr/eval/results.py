"""An evaluation's figures and files: per-benchmark results, samples, tables, console lines.

Per run (`write_run`): ``results.json`` (every figure, the models, the settings, the rows
left out), ``samples.jsonl`` (one line per completion: prompt, completion, answer, verdict,
reason) and ``results.md`` (one table, one column per model, so base and trained sit side by
side). `console_lines` are the closing lines, ``<benchmark> pass@1 <percent> (<n> problems)``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from azr.eval.benchmark import Answer, RowError, Verdict
from azr.eval.passk import mean_pass_at_k


@dataclass
class Sample:
    """One completion (or one outside generation) of one problem, and its verdict."""

    problem_id: str
    index: int
    """Which sample of the problem (0 .. n-1)."""
    prompt: str | None
    """The prompt as the model saw it (None in score-only mode)."""
    completion: str | None
    """The model's response (None when none was generated, e.g. a prompt too long)."""
    answer: Answer
    verdict: Verdict

    def record(self, model: str, benchmark: str) -> dict[str, Any]:
        """The samples.jsonl line."""
        return {
            "model": model,
            "benchmark": benchmark,
            "problem_id": self.problem_id,
            "sample": self.index,
            "prompt": self.prompt,
            "completion": self.completion,
            "answer": self.answer.text,
            "format_ok": self.answer.format_ok,
            "passed": self.verdict.passed,
            "reason": self.verdict.reason,
        }


@dataclass
class BenchmarkResult:
    """The figures of one benchmark for one model."""

    benchmark: str
    problems: int
    samples_per_problem: int
    """Fewest samples any problem had (pass@k is reported for k up to it)."""
    pass_at: dict[int, float]
    """k → pass@k in [0, 1] (unbiased estimator, mean over problems)."""
    format_rate: float
    """Share of samples in the strict <think>/<answer> format (or the file's format)."""
    reasons: dict[str, int]
    """Why samples failed, most frequent first."""
    seconds: float
    errors: list[str] = field(default_factory=list)
    """Rows left out (``FILE:LINE: why``)."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["pass_at"] = {f"pass@{k}": v for k, v in self.pass_at.items()}
        return data


def summarize(
    benchmark: str,
    samples: Sequence[Sample],
    ks: Iterable[int],
    seconds: float,
    errors: Iterable[RowError] = (),
) -> BenchmarkResult:
    """Per-problem (n, c) counts → pass@k for each k no larger than every problem's n."""
    counts: dict[str, list[int]] = {}
    for sample in samples:
        n_c = counts.setdefault(sample.problem_id, [0, 0])
        n_c[0] += 1
        n_c[1] += int(sample.verdict.passed)
    pairs = [(n, c) for n, c in counts.values()]
    fewest = min((n for n, _ in pairs), default=0)
    reasons = Counter(s.verdict.reason or "unknown" for s in samples if not s.verdict.passed)
    return BenchmarkResult(
        benchmark=benchmark,
        problems=len(pairs),
        samples_per_problem=fewest,
        pass_at={k: mean_pass_at_k(pairs, k) for k in sorted(set(ks)) if 1 <= k <= fewest},
        format_rate=sum(s.answer.format_ok for s in samples) / len(samples) if samples else 0.0,
        reasons=dict(reasons.most_common()),
        seconds=seconds,
        errors=[str(e) for e in errors],
    )


def console_lines(results: Iterable[BenchmarkResult]) -> list[str]:
    """``<benchmark> pass@<k> <percent, one decimal> (<n> problems)`` per benchmark and k."""
    return [
        f"{r.benchmark} pass@{k} {100 * value:.1f} ({r.problems} problems)"
        for r in results
        for k, value in r.pass_at.items()
    ]


def markdown_table(models: Sequence[str], results: dict[str, list[BenchmarkResult]]) -> str:
    """One row per benchmark and figure, one column per model (in ``models`` order)."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for model in models:
        for r in results.get(model, []):
            for k, value in r.pass_at.items():
                rows.setdefault((r.benchmark, f"pass@{k}"), {})[model] = f"{100 * value:.1f}"
            rows.setdefault((r.benchmark, "format"), {})[model] = f"{100 * r.format_rate:.1f}"
            rows.setdefault((r.benchmark, "problems"), {})[model] = str(r.problems)
    header = ["benchmark", "metric", *(_cell(m) for m in models)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (benchmark, metric), by_model in rows.items():
        cells = [_cell(benchmark), metric, *(by_model.get(m, "") for m in models)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def write_run(
    out_dir: Path,
    *,
    models: Sequence[dict[str, Any]],
    results: dict[str, list[BenchmarkResult]],
    settings: dict[str, Any],
) -> dict[str, Path]:
    """results.json and results.md (samples.jsonl is appended as samples are judged, by
    `SampleLog`). ``models``: one dict per model with at least its ``label``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [m["label"] for m in models]
    data = {
        "models": list(models),
        "settings": settings,
        "results": {label: [r.to_json() for r in results.get(label, [])] for label in labels},
    }
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path = out_dir / "results.md"
    md_path.write_text(f"# azr eval\n\n{markdown_table(labels, results)}")
    return {"results": json_path, "table": md_path, "samples": out_dir / "samples.jsonl"}


class SampleLog:
    """samples.jsonl, appended one benchmark at a time (a crash keeps what was judged)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("a")

    def write(self, model: str, benchmark: str, samples: Iterable[Sample]) -> None:
        for sample in samples:
            self._handle.write(json.dumps(sample.record(model, benchmark)) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> SampleLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
