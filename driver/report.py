"""Figures and a markdown report drawn from the step records of one or more runs.

`write_report` draws each figure whose metrics any run has, several runs overlaid (a colour and
a line style per run, legend = run name), and writes ``report.md`` that embeds them above a
table of each metric's first and last value per run and the problems met reading the runs
(`driver.run_metrics`: bad input is named, never fatal). matplotlib is imported only to draw,
on its Agg backend (no display needed).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driver.run_metrics import Run, read_runs

log = logging.getLogger(__name__)

TASK_ORDER = ("deduction", "abduction", "induction")
ROLES = ("propose", "solve")
LEARNER_KEYS = ("entropy", "clip_fraction", "mismatch_kl", "loss", "grad_norm")


# --- which figures: each one is a grid of panels, one metric per panel ---------------------


def task_types(keys: set[str]) -> list[str]:
    """Task types present, in the method's order (others after, alphabetically)."""
    found = {k.split("/")[0] for k in keys if re.fullmatch(r"[a-z_]+/propose/valid_rate", k)}
    found |= {k.split("/")[1] for k in keys if re.fullmatch(r"trr/[a-z_]+/[a-z_]+/mean", k)}
    found |= {k.split("/")[1] for k in keys if re.fullmatch(r"buffer/[a-z_]+/size", k)}
    return [t for t in TASK_ORDER if t in found] + sorted(found - set(TASK_ORDER))


@dataclass(frozen=True)
class Figure:
    """One PNG: a grid of panels, each drawing one metric of every run."""

    file: str
    title: str
    panels: Callable[[set[str]], list[str]]
    """The metric keys drawn (one panel each), given every key the runs have."""
    columns: int = 3
    ylabel: str = ""
    share: bool = False
    """Values are shares in [0, 1]: every panel gets that range, so runs compare at a glance."""


def _per_task(template: str) -> Callable[[set[str]], list[str]]:
    return lambda keys: [template.format(t) for t in task_types(keys)]


def _present(keys: set[str], wanted: Iterable[str]) -> list[str]:
    return [k for k in wanted if k in keys]


def _rewards(keys: set[str]) -> list[str]:
    return [f"trr/{t}/{r}/mean" for t in task_types(keys) for r in ROLES]


def _evals(keys: set[str]) -> list[str]:
    return sorted(k for k in keys if k.startswith("eval/"))


def _learner(keys: set[str]) -> list[str]:
    return _present(keys, (f"learner_result/{k}" for k in LEARNER_KEYS))


def _phases(keys: set[str]) -> list[str]:
    return ["step_seconds", *sorted(k for k in keys if k.startswith("time/"))]


def _comments(keys: set[str]) -> list[str]:
    tasks = task_types(keys)
    return [f"{t}/propose/comment_before_code" for t in tasks] + [
        f"{t}/propose/comment_lines" for t in tasks
    ]


FIGURES = [
    Figure("rewards.png", "Mean reward per task type x role", _rewards, columns=2),
    Figure("valid_rate.png", "Valid-proposal rate", _per_task("{}/propose/valid_rate"), share=True),
    Figure(
        "learnability.png",
        "Learnability (r_propose) of valid proposals",
        _per_task("{}/propose/learnability"),
    ),
    Figure("solve_accuracy.png", "Solve accuracy", _per_task("{}/solve/accuracy"), share=True),
    Figure("eval.png", "Held-out accuracy (probe, CRUXEval; greedy)", _evals, share=True),
    Figure("learner.png", "Learner: entropy, clip fraction, mismatch KL", _learner),
    Figure("step_times.png", "Seconds per step and per phase", _phases, ylabel="s"),
    Figure("buffer_sizes.png", "Tasks in each buffer", _per_task("buffer/{}/size")),
    Figure(
        "comments.png",
        "Comments in valid programs: share before code, lines per program",
        _comments,
    ),
]
OUTCOMES_FILE = "proposal_outcomes.png"


@dataclass
class Report:
    """What `write_report` wrote and what it could not read."""

    markdown: Path
    figures: dict[str, list[str]]
    """Each PNG drawn, with the runs (legend labels) it shows."""
    problems: list[str]
    skipped: list[str]
    """Figures not drawn: no run has any of their metrics."""


def write_report(runs: list[Run], out_dir: Path) -> Report:
    """Draw every figure that has data from the runs that have records, and ``report.md``
    (which also lists every run's reading problems); returns what was written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    drawable = [run for run in runs if run.records]
    keys = set().union(*(run.keys() for run in drawable))
    drawn: dict[str, list[str]] = {}
    sections: list[tuple[str, str, list[str]]] = []  # (file, title, metric keys)
    skipped: list[str] = []
    for figure in FIGURES:
        panels = [k for k in figure.panels(keys) if k in keys]
        if not panels:
            skipped.append(f"{figure.file} ({figure.title}): no run has these metrics")
            continue
        drawn[figure.file] = _draw(plt, figure, panels, drawable, out_dir)
        sections.append((figure.file, figure.title, panels))
        if figure.file == "valid_rate.png":  # the reasons belong beside the rate
            if _draw_outcomes(plt, drawable, keys, out_dir):
                drawn[OUTCOMES_FILE] = [run.name for run in drawable]
                sections.append((OUTCOMES_FILE, "Proposal outcomes (share per step)", []))
            else:
                skipped.append(f"{OUTCOMES_FILE}: no run has proposal outcomes")
    problems = [p for run in runs for p in run.problems]
    markdown = out_dir / "report.md"
    markdown.write_text(_markdown(runs, drawable, sections, problems, skipped))
    return Report(markdown, drawn, problems, skipped)


def write_run_report(run_dir: Path) -> Path | None:
    """The report of one finished run in ``<run dir>/report`` (`azr train`'s last act); None,
    with a warning in the driver log, when it cannot be drawn: a report never fails the run."""
    try:
        return write_report(read_runs([run_dir]), run_dir / "report").markdown
    except Exception:
        log.warning("the report of %s could not be drawn", run_dir, exc_info=True)
        return None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and safe in a headless driver process
    import matplotlib.pyplot as plt

    return plt


LINE_STYLES = ("-", "--", ":", "-.")


def _styles(plt: Any, runs: list[Run]) -> dict[str, dict[str, Any]]:
    """A colour and a line style per run: runs with equal values still show both lines."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {
        run.name: {"color": cycle[i % len(cycle)], "linestyle": LINE_STYLES[i % len(LINE_STYLES)]}
        for i, run in enumerate(runs)
    }


def _grid(plt: Any, count: int, columns: int, title: str) -> tuple[Any, list[Any]]:
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 3.0 * rows + 0.6), squeeze=False
    )
    fig.suptitle(title)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _draw(plt: Any, figure: Figure, panels: list[str], runs: list[Run], out: Path) -> list[str]:
    """One figure; returns the legend's labels (the runs drawn in it)."""
    styles = _styles(plt, runs)
    fig, axes = _grid(plt, len(panels), figure.columns, figure.title)
    for ax, key in zip(axes, panels, strict=True):
        for run in runs:
            steps, values = run.series(key)
            if steps:
                sparse = len(steps) <= 30  # evals (every few steps) and short runs: show points
                marker = "o" if sparse else None
                ax.plot(
                    steps, values, marker=marker, markersize=3, label=run.name, **styles[run.name]
                )
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        if figure.ylabel:
            ax.set_ylabel(figure.ylabel)
        if figure.share:
            ax.set_ylim(-0.03, 1.03)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    labels = _legend(fig, runs)
    _save(plt, fig, out / figure.file)
    return labels


def _legend(fig: Any, runs: list[Run]) -> list[str]:
    handles, labels = [], []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8)
    return labels


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw_outcomes(plt: Any, runs: list[Run], keys: set[str], out: Path) -> bool:
    """Share of each proposal outcome (valid, invalid:<reason>, format_error:<reason>) per step:
    one stacked panel per task type (rows) and run (columns)."""
    tasks = [
        t for t in task_types(keys) if any(k.startswith(f"{t}/propose/outcome/") for k in keys)
    ]
    if not tasks:
        return False
    outcome_keys = sorted({k.split("/", 3)[3] for k in keys if "/propose/outcome/" in k})
    cycle = plt.get_cmap("tab20").colors
    colour = {o: cycle[i % len(cycle)] for i, o in enumerate(outcome_keys)}
    fig, axes = plt.subplots(
        len(tasks), len(runs), figsize=(4.6 * len(runs), 3.0 * len(tasks) + 1.2), squeeze=False
    )
    fig.suptitle("Proposal outcomes (share of proposals) per task type")
    for row, task in enumerate(tasks):
        for column, run in enumerate(runs):
            ax = axes[row][column]
            steps = [int(r["step"]) for r in run.records]
            counts = {
                o: [r.get(f"{task}/propose/outcome/{o}", 0.0) for r in run.records]
                for o in outcome_keys
            }
            totals = [sum(c[i] for c in counts.values()) or 1.0 for i in range(len(steps))]
            shares = [[c[i] / totals[i] for i in range(len(steps))] for c in counts.values()]
            if steps:
                ax.stackplot(steps, shares, colors=[colour[o] for o in outcome_keys])
            ax.set_title(f"{task} - {run.name}", fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylim(0, 1)
            ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[o]) for o in outcome_keys]
    fig.legend(handles, outcome_keys, loc="lower center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * math.ceil(len(outcome_keys) / 3), 1, 1))
    fig.savefig(out / OUTCOMES_FILE, dpi=100)
    plt.close(fig)
    return True


# --- report.md -----------------------------------------------------------------------------


def _markdown(
    runs: list[Run],
    drawable: list[Run],
    sections: list[tuple[str, str, list[str]]],
    problems: list[str],
    skipped: list[str],
) -> str:
    lines = ["# azr report", ""]
    for run in runs:
        what = "no records"
        if run.records:
            first, last = int(run.records[0]["step"]), int(run.records[-1]["step"])
            what = f"{len(run.records)} step records, steps {first}-{last}"
        lines.append(f"- **{run.name}**: `{run.path}` ({what})")
    if problems:
        lines += ["", "## Problems reading the runs", ""] + [f"- {p}" for p in problems]
    lines += ["", "## Figures", ""]
    for file, title, _ in sections:
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    if skipped:
        lines += ["Not drawn:", ""] + [f"- {s}" for s in skipped] + [""]
    table_keys = list(dict.fromkeys(k for _, _, panels in sections for k in panels))
    if table_keys:
        lines += ["## First and last values", ""]
        lines.append("| metric | " + " | ".join(f"{r.name}: first → last" for r in drawable) + " |")
        lines.append("|---|" + "---|" * len(drawable))
        for key in table_keys:
            lines.append(f"| `{key}` | " + " | ".join(_first_last(r, key) for r in drawable) + " |")
    return "\n".join(lines) + "\n"


def _first_last(run: Run, key: str) -> str:
    steps, values = run.series(key)
    if not values:
        return "-"
    return f"{values[0]:.4g} (step {steps[0]}) → {values[-1]:.4g} (step {steps[-1]})"
