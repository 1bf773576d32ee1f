"""`azr eval`: benchmarks on models side by side, and `azr eval score` for outside generations.

    azr eval MODEL [MODEL ...] [--benchmarks LIST] [--samples N --temperature T] [--limit N] ...
    azr eval score --benchmark NAME FILE [--k LIST] ...

MODEL is a run directory (its newest checkpoint), a checkpoint directory, a local Hugging Face
directory or a hub id. Both forms end with one line per benchmark and model,
``<benchmark> pass@1 <percent> (<n> problems)`` (and pass@k lines when sampled), after the
paths of results.json, results.md and samples.jsonl.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

DEFAULT_BENCHMARKS = "cruxeval-o,cruxeval-i,humaneval"
OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")
MAX_ROW_ERRORS_SHOWN = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="benchmarks on checkpoints and models (azr eval score: outside generations)",
        # Everything after `eval` (options included) goes to the parser of its own form.
        add_help=False,
        prefix_chars="\0",
    )
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_eval)


def models_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azr eval",
        description="Generate on benchmarks with each MODEL and score the answers in the "
        "sandbox; one column per MODEL in results.md.",
        epilog="Score generations made elsewhere: azr eval score --help",
    )
    parser.add_argument(
        "items",
        nargs="+",
        metavar="MODEL | section.key=value",
        help="run directory, checkpoint directory, HF directory or hub id; config overrides",
    )
    parser.add_argument(
        "--benchmarks",
        default=DEFAULT_BENCHMARKS,
        help="comma-separated: cruxeval-o, cruxeval-i, humaneval, probe (the tiny model's "
        f"fixed probe), code:FILE.jsonl, math:FILE.jsonl (default {DEFAULT_BENCHMARKS})",
    )
    parser.add_argument("--samples", type=int, help="completions per problem (default 1)")
    parser.add_argument("--temperature", type=float, help="default rollout.eval's (greedy)")
    parser.add_argument("--top-p", type=float, help="default rollout.eval's")
    parser.add_argument("--max-tokens", type=int, help="default rollout.eval's")
    parser.add_argument("--k", help="pass@k values (default 1, and --samples when above 1)")
    parser.add_argument("--limit", type=int, help="only the first N problems per benchmark")
    _common(parser)
    return parser


def score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azr eval score",
        description="Score generations made elsewhere with the same sandbox and parser: "
        'CRUXEval\'s generations JSON ({"sample_N": [answer, ...]}, input predictions '
        "written as f(...)) for cruxeval-o/-i, HumanEval's samples.jsonl (task_id, "
        "completion or solution) for code and math benchmarks.",
    )
    parser.add_argument("--benchmark", required=True, help="the benchmark the file answers")
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    parser.add_argument("--k", help="pass@k values (default 1)")
    _common(parser)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: configs/tiny.yaml)")
    parser.add_argument(
        "--output", metavar="DIR", help="where the files go (default <output_dir>/eval/<time>)"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="every process's log lines on the console"
    )


def _eval(args: argparse.Namespace) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "score":
        return _score(score_parser().parse_intermixed_args(argv[1:]))
    return _models(models_parser().parse_intermixed_args(argv))


def _models(args: argparse.Namespace) -> int:
    from azr.config import load_config
    from azr.eval.benchmark import EvalInputError
    from azr.eval.registry import load_benchmarks, parse_benchmark_names
    from driver.evaluation import evaluate_models, labelled, resolve_eval_model
    from driver.runtime import RunFailed

    overrides = [item for item in args.items if OVERRIDE.match(item)]
    names = [item for item in args.items if not OVERRIDE.match(item)]
    config = load_config(args.config, overrides)
    try:
        if not names:
            raise EvalInputError("no MODEL given")
        sampling = _sampling(config.rollout.eval, args)
        ks = _ks(args.k, sampling.n)
        if args.limit is not None and args.limit < 1:
            raise EvalInputError(f"--limit {args.limit}: must be at least 1")
        benchmarks = load_benchmarks(
            parse_benchmark_names(args.benchmarks),
            size=args.limit,
            cruxeval_file=config.selfplay.eval_data,
        )
        models = labelled([resolve_eval_model(name) for name in names])
        _report_row_errors(errors for b in benchmarks for errors in b.errors)
        out_dir = _out_dir(args.output, config.output_dir)
        _logging(out_dir, args.verbose)
        started = time.perf_counter()
        results = evaluate_models(
            config, models, benchmarks, sampling=sampling, ks=ks, out_dir=out_dir
        )
    except EvalInputError as exc:
        print(f"azr eval: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"azr eval: {exc}", file=sys.stderr)
        return 1
    _print_results(out_dir, results, time.perf_counter() - started)
    return 0


def _score(args: argparse.Namespace) -> int:
    from azr.config import load_config
    from azr.eval.benchmark import EvalInputError
    from azr.eval.generations import read_generations
    from azr.eval.registry import load_benchmark
    from driver.evaluation import score_file
    from driver.runtime import RunFailed

    config = load_config(args.config, args.overrides)
    label = Path(args.file).name
    try:
        ks = _ks(args.k, None)
        benchmark = load_benchmark(args.benchmark, cruxeval_file=config.selfplay.eval_data)
        if not Path(args.file).is_file():
            raise EvalInputError(f"generations file {args.file}: no such file")
        generations, errors = read_generations(benchmark.name, args.file)
        if not generations:
            raise EvalInputError(f"{args.file}: no usable generation (first bad row: {errors[0]})")
        out_dir = _out_dir(args.output, config.output_dir)
        _logging(out_dir, args.verbose)
        started = time.perf_counter()
        result = score_file(
            config,
            benchmark,
            generations,
            label=label,
            source=args.file,
            errors=errors,
            ks=ks,
            out_dir=out_dir,
        )
    except EvalInputError as exc:
        print(f"azr eval score: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"azr eval score: {exc}", file=sys.stderr)
        return 1
    _report_row_errors(result.errors)
    _print_results(out_dir, {label: [result]}, time.perf_counter() - started)
    return 0


def _sampling(base, args: argparse.Namespace):  # -> SamplingConfig
    from azr.eval.benchmark import EvalInputError

    update = {
        "n": args.samples if args.samples is not None else 1,
        "temperature": args.temperature if args.temperature is not None else base.temperature,
        "top_p": args.top_p if args.top_p is not None else base.top_p,
        "max_tokens": args.max_tokens if args.max_tokens is not None else base.max_tokens,
    }
    try:
        sampling = base.model_validate({**base.model_dump(), **update})
    except ValueError as exc:
        raise EvalInputError(f"bad sampling option: {exc}") from None
    if sampling.n > 1 and sampling.temperature == 0:
        raise EvalInputError(
            "--samples above 1 needs --temperature above 0 (greedy samples are all the same)"
        )
    return sampling


def _ks(text: str | None, samples: int | None) -> list[int]:
    """pass@k values: ``--k`` (each at most --samples), else 1 and --samples."""
    from azr.eval.benchmark import EvalInputError

    if text is None:
        return sorted({1, samples or 1})
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise EvalInputError(f"--k {text!r}: expected comma-separated whole numbers") from None
    if not ks or ks[0] < 1:
        raise EvalInputError(f"--k {text!r}: every k must be at least 1")
    if samples is not None and ks[-1] > samples:
        raise EvalInputError(f"--k {ks[-1]} is more than --samples {samples}")
    return ks


def _out_dir(given: str | None, output_dir: str) -> Path:
    if given:
        return Path(given)
    base = Path(output_dir) / "eval" / time.strftime("%Y%m%d-%H%M%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _logging(out_dir: Path, verbose: bool) -> None:
    from driver.console import configure_driver_logging

    out_dir.mkdir(parents=True, exist_ok=True)
    configure_driver_logging(out_dir / "logs", verbose)


def _report_row_errors(errors) -> None:
    errors = [str(e) for e in errors]
    for line in errors[:MAX_ROW_ERRORS_SHOWN]:
        print(f"azr eval: left out {line}", file=sys.stderr)
    if len(errors) > MAX_ROW_ERRORS_SHOWN:
        print(
            f"azr eval: ... and {len(errors) - MAX_ROW_ERRORS_SHOWN} more rows left out "
            "(all listed in results.json)",
            file=sys.stderr,
        )


def _print_results(out_dir: Path, results: dict, seconds: float) -> None:
    from azr.eval.results import console_lines

    print(f"results: {out_dir / 'results.json'}")
    print(f"table:   {out_dir / 'results.md'}")
    print(f"samples: {out_dir / 'samples.jsonl'}")
    print(f"wall time: {seconds:.0f} s")
    for label, model_results in results.items():
        if len(results) > 1:
            print(f"[{label}]")
        for line in console_lines(model_results):
            print(line)
