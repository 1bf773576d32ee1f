"""Executor pool overhead and scaling: CRUXEval validation through Ray vs one in-process executor.

Baseline (same run): one ``SandboxExecutor`` called directly in this process, no Ray.
Then ``ExecutorPool`` on a local Ray with 1 and 2 executor actors (``per_node``), same slots.
Prints programs/s for each and the ratio to the baseline: 1 actor shows what the Ray layer
(chunking, actor calls, result transfer) costs; 2 actors show what spreading buys on this
machine (on 2 shared cores, little: the sandbox already uses both).

    .venv/bin/python benchmarks/executor_pool_scaling.py [--limit 400] [--slots 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from azr.config import ExecutorConfig  # noqa: E402
from azr.cruxeval import load_cruxeval  # noqa: E402
from azr.tasks import ValidateRequest, ValidationResult  # noqa: E402
from executor_pool.executor import SandboxExecutor  # noqa: E402
from executor_pool.pool import ExecutorPool  # noqa: E402


def load(limit: int) -> list[ValidateRequest]:
    rows = [asdict(row) for row in load_cruxeval()[:limit]]
    return [ValidateRequest(program=r["code"], inputs=(r["input"],)) for r in rows]


def best_rate(
    run: Callable[[list[ValidateRequest]], list[ValidationResult]],
    requests: list[ValidateRequest],
    repeat: int,
) -> tuple[float, int]:
    """Best programs/s over `repeat` runs (the machine is shared) and how many were valid."""
    best, valid = 0.0, 0
    for _ in range(repeat):
        started = time.perf_counter()
        results = run(requests)
        best = max(best, len(requests) / (time.perf_counter() - started))
        valid = sum(r.valid for r in results)
    return best, valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=400, help="CRUXEval programs per run")
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    requests = load(args.limit)
    config = ExecutorConfig(slots=args.slots, timeout_s=10.0)

    with SandboxExecutor(config) as executor:
        executor.validate_many(requests[:8])  # warm
        baseline, valid = best_rate(executor.validate_many, requests, args.repeat)
    print(f"baseline: SandboxExecutor in-process, {args.slots} slots: {baseline:7.1f} programs/s "
          f"({valid}/{len(requests)} valid)")  # fmt: skip

    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    try:
        for actors in (1, 2):
            pool_config = config.model_copy(update={"per_node": actors})
            with ExecutorPool(pool_config, max_nodes=1) as pool:
                pool.validate_many(requests[:8])  # warm
                rate, valid = best_rate(pool.validate_many, requests, args.repeat)
            print(f"ExecutorPool, {actors} actor(s) x {args.slots} slots:      {rate:7.1f} "
                  f"programs/s ({valid}/{len(requests)} valid)  ratio vs baseline {rate / baseline:.2f}x")  # fmt: skip
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
