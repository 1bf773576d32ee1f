"""`azr exec validate|score`: run the sandboxed executor over a JSONL file.

One JSON object per input line goes to stdout, in input order:

validate  in  {"id", "program", "inputs": [str, ...], "require_distinct_inputs"?: bool}
          out {"id", "valid": bool, "outputs": [str, ...] | null, "reason": str | null}
score     in  {"id", "task": "deduction"|"abduction"|"induction", "program", "input"?,
               "output"?, "pairs"?: [[input, output], ...], "answer"}
          out {"id", "accuracy": float, "reason": str | null}

A line that is not JSON or not a valid request gets a result with reason ``bad_json: ...``
or ``bad_request: ...`` (``valid: false`` / ``accuracy: 0.0``); the rest of the file still
runs. If the executor pool itself fails a batch, its lines get ``executor_error: ...`` and
the command exits 1. Ray's own messages and the progress bar go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import IO, Any

from pydantic import ValidationError

from azr.tasks import ScoreRequest, ScoreResult, TaskType, ValidateRequest, ValidationResult

_WINDOW = 128
"""Requests per batch handed to the pool; several batches are in flight at once."""
_WINDOWS_AHEAD = 4
"""Batches submitted ahead of the one being printed (keeps every executor busy)."""


class BadLine(ValueError):
    """An input line that cannot become a request; the message is the result's reason."""


@dataclass
class _Line:
    id: Any
    request: ValidateRequest | ScoreRequest | None
    reason: str | None = None
    """Why ``request`` is None (the line's result is this reason)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `azr exec` to the `azr` command line."""
    parser = subparsers.add_parser(
        "exec",
        help="validate proposals or score answers from a JSONL file in the sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["validate", "score"])
    parser.add_argument("file", metavar="FILE.jsonl", help="input JSONL ('-' reads stdin)")
    parser.add_argument(
        "--backend",
        choices=["process", "docker"],
        default=None,
        help="sandbox backend (default: the config's executor.backend)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="executor actors on this node (default: the config's executor.per_node)",
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join; without it a local Ray is started and stopped",
    )
    parser.add_argument("--config", default=None, help="YAML config (default: configs/tiny.yaml)")
    parser.add_argument(
        "--ray-temp-dir",
        default=None,
        help="temp dir of the local Ray (default: $RAY_TMPDIR, else Ray's own)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="executor.key=value",
        help="config overrides, e.g. executor.timeout_s=5",
    )
    parser.set_defaults(func=run_exec)  # fmt: skip


def run_exec(args: argparse.Namespace) -> int:
    """Entry point of `azr exec`; returns the exit code."""
    from azr.config import load_config

    config = load_config(args.config, args.overrides).executor
    if args.backend is not None:
        config.backend = args.backend
    if args.workers is not None:
        if args.workers < 1:
            print("azr exec: --workers must be at least 1", file=sys.stderr)
            return 2
        config.per_node = args.workers
    try:
        source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"azr exec: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    total = None if args.file == "-" else _count_lines(args.file)
    with source:
        return _run_with_ray(args, config, source, total)


def _run_with_ray(args: argparse.Namespace, config: Any, source: IO[str], total: int | None) -> int:
    import ray

    from executor_pool.pool import ExecutorPool, ExecutorPoolError

    started_ray = False
    if not ray.is_initialized():
        init: dict[str, Any] = {"log_to_driver": False}  # worker prints must not reach stdout
        if args.address:
            init["address"] = args.address
        else:
            init.update(num_cpus=os.cpu_count() or 1, include_dashboard=False)
            if args.ray_temp_dir:
                init["_temp_dir"] = os.path.abspath(args.ray_temp_dir)
        ray.init(**init)
        started_ray = True
    try:
        # --workers means "N executors on this machine"; without it a cluster gets per_node
        # executors on every executor node.
        single_node = args.workers is not None or not args.address
        try:
            pool = ExecutorPool(config, max_nodes=1 if single_node else None)
        except (ExecutorPoolError, TimeoutError) as exc:
            print(f"azr exec: the executor pool did not start: {exc}", file=sys.stderr)
            return 1
        with pool:
            return _stream(args.action, pool, source, sys.stdout, total, not args.no_progress)
    finally:
        if started_ray:
            ray.shutdown()


def _stream(action: str, pool: Any, source: IO[str], out: IO[str], total: int | None,
            progress: bool) -> int:  # fmt: skip
    """Submit windows of lines ahead, print results in input order. Returns the exit code."""
    from tqdm import tqdm

    failed = False
    in_flight: deque[tuple[list[_Line], Future]] = deque()
    with tqdm(total=total, unit="line", file=sys.stderr, disable=not progress) as bar:

        def flush_oldest() -> None:
            nonlocal failed
            lines, future = in_flight.popleft()
            failed |= _print_window(action, lines, future, out)
            bar.update(len(lines))

        for window in _windows(action, source):
            requests = [line.request for line in window if line.request is not None]
            submit = pool.submit_validate if action == "validate" else pool.submit_score
            in_flight.append((window, submit(requests)))
            if len(in_flight) > _WINDOWS_AHEAD:
                flush_oldest()
        while in_flight:
            flush_oldest()
    return 1 if failed else 0


def _print_window(action: str, lines: list[_Line], future: Future, out: IO[str]) -> bool:
    """Print one window's results; True when the pool failed it."""
    try:
        results = iter(future.result())
        pool_error = None
    except Exception as exc:
        results, pool_error = iter(()), f"executor_error: {exc}"
    for line in lines:
        if line.request is None:
            record = _failure(action, line.id, line.reason or "bad_request")
        elif pool_error is not None:
            record = _failure(action, line.id, pool_error)
        else:
            record = _success(action, line.id, next(results))
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()
    return pool_error is not None


def _success(action: str, line_id: Any, result: ValidationResult | ScoreResult) -> dict[str, Any]:
    if action == "validate":
        assert isinstance(result, ValidationResult)
        outputs = list(result.outputs) if result.outputs is not None else None
        return {"id": line_id, "valid": result.valid, "outputs": outputs, "reason": result.reason}
    assert isinstance(result, ScoreResult)
    return {"id": line_id, "accuracy": result.accuracy, "reason": result.reason}


def _failure(action: str, line_id: Any, reason: str) -> dict[str, Any]:
    if action == "validate":
        return {"id": line_id, "valid": False, "outputs": None, "reason": reason}
    return {"id": line_id, "accuracy": 0.0, "reason": reason}


def _windows(action: str, source: IO[str]) -> Iterator[list[_Line]]:
    window: list[_Line] = []
    for number, text in enumerate(source, start=1):
        if not text.strip():
            continue  # blank lines (a trailing newline) are no records
        window.append(parse_line(action, text, number))
        if len(window) >= _WINDOW:
            yield window
            window = []
    if window:
        yield window


def parse_line(action: str, text: str, number: int) -> _Line:
    """One JSONL line → a request, or the reason it is not one (never raises)."""
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return _Line(None, None, f"bad_json: line {number}: {exc}")
    if not isinstance(record, dict):
        return _Line(None, None, f"bad_request: line {number}: not a JSON object")
    line_id = record.get("id")
    if isinstance(line_id, dict | list):
        line_id = json.dumps(line_id)  # echo it back, but as a plain value
    try:
        request = _validate_request(record) if action == "validate" else _score_request(record)
    except BadLine as exc:
        return _Line(line_id, None, f"bad_request: {exc}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return _Line(line_id, None, f"bad_request: {where}: {first['msg']}")
    return _Line(line_id, request)


def _validate_request(record: dict[str, Any]) -> ValidateRequest:
    program = _text(record, "program")
    inputs = record.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise BadLine("'inputs' must be a list of strings (argument-list source text)")
    if not inputs:
        raise BadLine("'inputs' is empty")
    distinct = record.get("require_distinct_inputs", False)
    if not isinstance(distinct, bool):
        raise BadLine("'require_distinct_inputs' must be true or false")
    return ValidateRequest(program=program, inputs=tuple(inputs), require_distinct_inputs=distinct)


def _score_request(record: dict[str, Any]) -> ScoreRequest:
    task_name = record.get("task")
    if task_name not in {t.value for t in TaskType}:
        raise BadLine("'task' must be one of deduction, abduction, induction")
    task = TaskType(task_name)
    answer = _text(record, "answer")
    input_text = _text(record, "input", required=False)
    output = _text(record, "output", required=task in (TaskType.DEDUCTION, TaskType.ABDUCTION))
    program = _text(record, "program", required=task is TaskType.ABDUCTION) or ""
    pairs: tuple[tuple[str, str], ...] = ()
    if task is TaskType.INDUCTION:
        raw_pairs = record.get("pairs")
        if (
            not isinstance(raw_pairs, list)
            or not raw_pairs
            or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                for p in raw_pairs
            )
        ):
            raise BadLine("induction needs 'pairs': a non-empty list of [input, output] strings")
        pairs = tuple((p[0], p[1]) for p in raw_pairs)
    return ScoreRequest(
        task=task, program=program, answer=answer, input=input_text, output=output, pairs=pairs
    )


def _text(record: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise BadLine(f"missing {key!r}")
        return None
    if not isinstance(value, str):
        raise BadLine(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _count_lines(path: str) -> int | None:
    try:
        with open(path, "rb") as handle:
            return sum(1 for raw in handle if raw.strip())
    except OSError:
        return None
