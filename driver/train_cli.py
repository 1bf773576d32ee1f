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
    from azr.config import load_config
    from driver.checkpoint import latest_checkpoint
    from driver.console import print_run_summary
    from driver.loop import train
    from driver.report import write_run_report
    from driver.runtime import RunFailed

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
    if config.metrics.report:
        summary["report"] = write_run_report(Path(str(summary["run_dir"])))
    print_run_summary(summary, config.selfplay.task_types)
    return 0
