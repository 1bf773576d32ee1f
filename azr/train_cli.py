"""`azr train`: run self-play from a config (or resume a run from a checkpoint)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="run AZR self-play")
    parser.add_argument("--config", help="YAML config file (default: configs/tiny.yaml)")
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help="continue from a checkpoint directory, or the newest checkpoint of a run directory",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show every process's log lines on the console (default: in <run dir>/logs/)",
    )
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    parser.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from azr.checkpointing import latest_checkpoint
    from azr.config import load_config
    from azr.driver import train
    from azr.runtime import RunFailed

    config_path = args.config
    if args.resume and config_path is None:
        # A resumed run keeps its own resolved config unless told otherwise.
        config_path = latest_checkpoint(Path(args.resume)) / "config.yaml"
    config = load_config(config_path, args.overrides)
    try:
        summary = train(config, resume=args.resume, verbose=args.verbose)
    except RunFailed as exc:
        print(f"azr train: {exc}", file=sys.stderr)
        return 1
    print_summary(summary, config.selfplay.task_types)
    return 0


def print_summary(summary: dict, task_types: list[str]) -> None:
    """The end of a run as a table (means over its steps), then where its files are."""
    from rich.console import Console
    from rich.table import Table

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
    console.print(f"logs:       {summary['logs']}")
    console.print(f"checkpoint: {summary['checkpoint']}")
    console.print(f"metrics:    {summary['metrics_log']}")
