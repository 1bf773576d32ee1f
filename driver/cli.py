"""The `azr` command line: one entry point, one subcommand module per concept.

Each subcommand module exposes ``register(subparsers)`` that adds its parser and sets
``func`` to a callable taking the parsed args and returning an exit code. Modules import their
heavy dependencies (Ray, torch, vLLM) inside that callable so `azr --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from azr.config import CONFIG_DIR, ConfigError, dump_config, load_config
from azr.memory import H100_GIB, MemoryEstimateError, memory_report

REPO_ROOT = CONFIG_DIR.parent

# Subcommand modules beyond `config` and `version`, registered in this order.
SUBCOMMAND_MODULES = [
    "executor_pool.cli",
    "driver.train_cli",
    "driver.eval_cli",
    "driver.report_cli",
]


def azr_version() -> str:
    try:
        return package_version("azr")
    except PackageNotFoundError:
        return "0+unknown"


def _config_show(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.plan:
        return _print_plan(config, args.cluster)
    if args.memory:
        try:
            print(memory_report(config, args.gpu_gib))
        except MemoryEstimateError as exc:
            print(f"azr: {exc}", file=sys.stderr)
            return 2
        return 0
    sys.stdout.write(dump_config(config))
    return 0


def _print_plan(config, cluster_file: str) -> int:
    """The run's placement on the cluster file's minimum nodes; 1 when it cannot be placed."""
    from driver.plan import load_cluster, plan_run

    try:
        plan = plan_run(config, load_cluster(cluster_file))
    except (OSError, ValueError) as exc:
        print(f"azr: {exc}", file=sys.stderr)
        return 2
    print(f"plan of {config.run_name} on {cluster_file} (min_workers):")
    print("\n".join(plan.lines))
    if plan.fits:
        print("fits: yes")
        return 0
    print("fits: NO")
    for shortfall in plan.shortfalls:
        print(f"  - {shortfall}")
    return 1


def _version(args: argparse.Namespace) -> int:
    print(f"azr {azr_version()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="azr", description="Absolute Zero self-play reinforcement learning on Ray."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config = sub.add_parser("config", help="inspect configs")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", help="print the resolved config as YAML")
    show.add_argument("--config", help="YAML config file (default: configs/tiny.yaml)")
    show.add_argument(
        "--plan",
        action="store_true",
        help="print where every actor goes on --cluster's min_workers nodes; exit 1 if it "
        "cannot be placed",
    )
    show.add_argument(
        "--cluster",
        default=str(REPO_ROOT / "ray_cluster.yaml"),
        help="Ray cluster launcher file for --plan (default: the repo's ray_cluster.yaml)",
    )
    show.add_argument(
        "--memory",
        action="store_true",
        help="print the per-GPU memory estimate of the learner and the rollout instead",
    )
    show.add_argument(
        "--gpu-gib", type=float, default=H100_GIB, help="GPU memory for --memory (H100 80GB)"
    )
    show.add_argument("overrides", nargs="*", metavar="section.key=value")
    show.set_defaults(func=_config_show)

    sub.add_parser("version", help="print the azr version").set_defaults(func=_version)

    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import error inside an existing module
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"azr: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
