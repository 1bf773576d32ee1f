"""`azr report RUN_DIR [RUN_DIR ...]`: figures and report.md from runs' metrics, overlaid."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="draw PNG figures and a report.md from the metrics of one or more runs",
        description="Draw PNG figures from each run's metrics.jsonl (several runs overlaid, "
        "legend = run name) and a report.md embedding them with each metric's first and last "
        "value. Unreadable input is reported and everything readable is still drawn; the exit "
        "status is 1 when a run had no readable record.",
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="run directory (or its metrics file)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where the figures and report.md go (default: <first readable RUN_DIR>/report)",
    )
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from driver.report import write_report
    from driver.run_metrics import read_runs

    runs = read_runs(Path(p) for p in args.runs)
    for run in runs:
        for problem in run.problems:
            print(f"azr report: {problem}", file=sys.stderr)
    readable = [run for run in runs if run.records]
    if not readable:
        print("azr report: no run has a readable step record: nothing drawn", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else readable[0].path / "report"
    report = write_report(runs, out)
    for skipped in report.skipped:
        print(f"azr report: not drawn: {skipped}", file=sys.stderr)
    print(f"report: {report.markdown} ({len(report.figures)} figures)")
    return 0 if len(readable) == len(runs) else 1
