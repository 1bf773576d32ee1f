"""A run's step records as `azr report` reads them: ``metrics.jsonl``, one JSON object per step.

`read_run` never raises on bad input: a missing or empty run directory, a truncated or garbage
line, a record without a step, a step recorded twice become `Run.problems`, each naming its
file (and line), and every readable record is kept (the last one of a repeated step).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_LOG_FILE = "metrics.jsonl"


@dataclass
class Run:
    """One run's metrics: a record per step, in step order."""

    name: str
    """Legend label: the run directory's name (made unique among the runs of a report)."""
    path: Path
    records: list[dict[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def keys(self) -> set[str]:
        return {key for record in self.records for key in record}

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of ``key`` (only the steps that have it: eval keys are sparse)."""
        pairs = [(int(r["step"]), r[key]) for r in self.records if key in r]
        return [s for s, _ in pairs], [v for _, v in pairs]


def metrics_file(run_dir: Path) -> Path:
    """The run's metrics log: ``metrics.log_file`` of its config.yaml, else metrics.jsonl."""
    log_file = DEFAULT_LOG_FILE
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        log_file = str(config["metrics"]["log_file"])
    except (OSError, yaml.YAMLError, TypeError, KeyError):
        pass
    return run_dir / log_file


def read_run(path: Path) -> Run:
    """The records of a run directory (or of a metrics file given directly); problems noted."""
    path = Path(path)
    name = path.stem if path.is_file() else path.name
    run = Run(name=name or str(path), path=path)
    if not path.exists():
        run.problems.append(f"{path}: no such run directory")
        return run
    file = path if path.is_file() else metrics_file(path)
    if not file.exists():
        run.problems.append(f"{file}: missing (not a run directory, or no step finished yet)")
        return run
    by_step: dict[int, dict[str, float]] = {}
    counts: Counter[int] = Counter()
    with file.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record, problem = _parse_record(line)
            if problem:
                run.problems.append(f"{file}:{number}: {problem}: line skipped")
                continue
            step = int(record["step"])
            by_step[step] = record
            counts[step] += 1
    repeated = sorted(step for step, n in counts.items() if n > 1)
    if repeated:
        run.problems.append(
            f"{file}: step(s) {_ranges(repeated)} recorded more than once (a resume before "
            "abandoned steps were set aside?): drawing the last record of each"
        )
    if not by_step:
        run.problems.append(f"{file}: no step record")
    run.records = [by_step[step] for step in sorted(by_step)]
    return run


def _parse_record(line: str) -> tuple[dict[str, float], str | None]:
    """A step record's numeric entries, or why the line is not one."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return {}, f"not JSON ({exc.msg}, column {exc.colno}: truncated?)"
    if not isinstance(data, dict):
        return {}, f"a JSON {type(data).__name__}, not a step record"
    step = data.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return {}, f"no integer 'step' (got {step!r})"
    numeric = {
        key: float(value)
        for key, value in data.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return numeric, None


def _ranges(steps: list[int]) -> str:
    return ", ".join(str(s) for s in steps[:10]) + (" ..." if len(steps) > 10 else "")


def read_runs(paths: Iterable[Path]) -> list[Run]:
    """Every run, with unique legend names (``parent/name`` where two share a name)."""
    runs = [read_run(Path(p)) for p in paths]
    clashes = Counter(run.name for run in runs)
    for run in runs:
        if clashes[run.name] > 1:
            run.name = f"{run.path.resolve().parent.name}/{run.name}"
    seen: Counter[str] = Counter()
    for run in runs:
        seen[run.name] += 1
        if seen[run.name] > 1:
            run.name = f"{run.name} ({seen[run.name]})"
    return runs
