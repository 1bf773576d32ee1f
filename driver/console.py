"""The driver's console: the progress bar, azr's own warnings and errors, the end summary.

Everything else the driver process logs -- the INFO lines of Ray, vLLM and transformers --
goes to ``<run dir>/logs/driver.log``; actors write their own files there (`azr.logs`).
``azr train --verbose`` puts every line on the console instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

OUR_PACKAGES = ("azr", "driver", "actors", "learner", "executor_pool", "buffer_service")
THIRD_PARTY = ("ray", "vllm", "transformers", "torch", "huggingface_hub", "filelock", "urllib3")
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _OwnCode(logging.Filter):
    """Records of azr's own packages (the console shows only these, at WARNING and up)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in OUR_PACKAGES


def configure_driver_logging(log_dir: Path, verbose: bool) -> Path:
    """The driver's logging: everything to ``<log_dir>/driver.log``; on the console, only
    azr's warnings and errors (all records with ``verbose``). Returns the driver's log file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "driver.log"
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter(LINE_FORMAT))
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        to_console.setLevel(logging.WARNING)
        to_console.addFilter(_OwnCode())
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(to_file)
    root.addHandler(to_console)
    # Libraries that install their own console handlers (Ray does at import) send their
    # records through ours instead.
    for name in THIRD_PARTY:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True
    logging.captureWarnings(True)  # library warnings.warn lines: to the file, not the console
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.disable_default_handler()
            hf_logging.enable_propagation()
        except ImportError:
            pass
    return path


def print_run_summary(summary: dict, task_types: list[str]) -> None:
    """The end of a run as a table (means over its steps), then where its files are."""
    console = Console()
    state = "stopped by Ctrl-C" if summary["interrupted"] else "finished"
    table = Table(
        title=f"azr train {state}: {summary['steps']} steps, policy version "
        f"{summary['policy_version']}",
        title_justify="left",
    )
    table.add_column("task type")
    for column in ("valid proposals", "learnability", "solve accuracy"):
        table.add_column(column, justify="right")
    for task in task_types:
        table.add_row(
            task,
            *(
                f"{summary[f'{task}/{key}']:.2f}"
                for key in ("propose/valid_rate", "propose/learnability", "solve/accuracy")
            ),
        )
    console.print(table)
    evals = {k.removeprefix("eval/"): v for k, v in summary.items() if k.startswith("eval/")}
    if evals:
        console.print("last eval: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(evals.items())))
    probe = [
        f"{name.removeprefix('probe/')} {summary[f'step0_eval/{name}']:.2f} → {value:.2f}"
        for name, value in sorted(evals.items())
        if name.startswith("probe/") and not name.endswith("_format_ok")
        and f"step0_eval/{name}" in summary
    ]  # fmt: skip
    if probe:
        console.print("probe accuracy, step 0 → last eval: " + ", ".join(probe))
    console.print(f"logs:       {summary['logs']}")
    console.print(f"checkpoint: {summary['checkpoint']}")
    console.print(f"metrics:    {summary['metrics_log']}")
    if summary.get("report"):
        console.print(f"report:     {summary['report']}")
