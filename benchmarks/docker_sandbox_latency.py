"""Docker sandbox latency: container start vs a warm run, against per-program docker run/exec.

Why the docker backend keeps one long-lived container per executor: it measures, in one run,
  - ``docker run`` per program (a fresh container each, same flags)      - baseline 1
  - ``docker exec`` per program into one running container               - baseline 2
  - DockerSandbox: container start to the fork-server's hello, then warm runs over stdin/stdout
  - ProcessSandbox warm runs on the host, for reference
and prints p50/p99 latencies and the ratios. Needs a Docker engine and the test image
(``make docker-image``).

    .venv/bin/python benchmarks/docker_sandbox_latency.py [--runs 200] [--cold-runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azr.config import DockerConfig, ExecutorConfig  # noqa: E402
from executor_pool.docker_sandbox import DockerSandbox, container_flags, new_container_name  # noqa: E402
from executor_pool.sandbox import ForkServerClient, ProcessSandbox  # noqa: E402

PROGRAM = "def f(x):\n    return sorted(set(x))[::-1]"
INPUT = "[3, 1, 2, 3]"
EXPECTED = "[3, 2, 1]"
# What one program costs outside the fork-server: exec, call, print the repr.
ONE_SHOT = f"{PROGRAM}\nprint(repr(f({INPUT})))"


def timed(label: str, count: int, action: Callable[[], None]) -> list[float]:
    latencies = []
    for _ in tqdm(range(count), desc=label, leave=False):
        started = time.perf_counter()
        action()
        latencies.append(time.perf_counter() - started)
    return latencies


def summary(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def warm_runs(client: ForkServerClient, count: int, label: str) -> list[float]:
    request = {"op": "run", "program": PROGRAM, "inputs": [INPUT]}

    def one() -> None:
        assert client.call(request)["results"] == [["ok", EXPECTED]]

    one()  # first call after start pays page faults; not a warm run
    return timed(label, count, one)


def docker_run_per_program(config: ExecutorConfig, count: int) -> list[float]:
    def one() -> None:
        flags = container_flags(config, new_container_name())
        argv = ["docker", "run", "--rm", *flags, config.docker.image, "python3", "-c", ONE_SHOT]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        assert done.stdout.strip() == EXPECTED

    return timed("docker run per program", count, one)


def docker_exec_per_program(config: ExecutorConfig, count: int) -> list[float]:
    name = new_container_name()
    flags = container_flags(config, name)
    subprocess.run(
        ["docker", "run", "--detach", "--rm", *flags, config.docker.image, "sleep", "3600"],
        capture_output=True, check=True,
    )  # fmt: skip
    try:

        def one() -> None:
            argv = ["docker", "exec", name, "python3", "-c", ONE_SHOT]
            done = subprocess.run(argv, capture_output=True, text=True, check=True)
            assert done.stdout.strip() == EXPECTED

        return timed("docker exec per program", count, one)
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="warm runs per sandbox")
    parser.add_argument("--cold-runs", type=int, default=15, help="docker run / exec samples")
    parser.add_argument("--starts", type=int, default=5, help="container starts measured")
    parser.add_argument("--image", default=ExecutorConfig().docker_image)
    args = parser.parse_args()
    config = ExecutorConfig(backend="docker", docker=DockerConfig(image=args.image), slots=2)

    starts = []
    for _ in tqdm(range(args.starts), desc="container starts", leave=False):
        with DockerSandbox(config) as sandbox:
            starts.append(sandbox.start_latency_s)
    with DockerSandbox(config) as sandbox:
        docker_warm = warm_runs(sandbox, args.runs, "docker sandbox warm")
    with ProcessSandbox(ExecutorConfig(slots=2)) as sandbox:
        process_warm = warm_runs(sandbox, args.runs, "process sandbox warm")
    per_run = docker_run_per_program(config, args.cold_runs)
    per_exec = docker_exec_per_program(config, args.cold_runs)

    rows = [
        ("docker run per program", per_run),
        ("docker exec per program", per_exec),
        ("container start (hello)", starts),
        ("docker sandbox warm run", docker_warm),
        ("process sandbox warm run", process_warm),
    ]
    for label, latencies in rows:
        p50, p99 = summary(latencies)
        print(
            f"{label:<26}: p50 {p50 * 1e3:8.1f} ms  p99 {p99 * 1e3:8.1f} ms  (n={len(latencies)})"
        )
    warm = statistics.median(docker_warm)
    print(f"container start / warm run      : {statistics.median(starts) / warm:8.1f}x")
    print(f"docker run per program / warm   : {statistics.median(per_run) / warm:8.1f}x")
    print(f"docker exec per program / warm  : {statistics.median(per_exec) / warm:8.1f}x")
    print(f"warm run, process / docker      : {statistics.median(process_warm) / warm:8.3f}x")


if __name__ == "__main__":
    main()
