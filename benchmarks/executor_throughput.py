"""Executor throughput: CRUXEval validation with the full determinism rule, vs a bare baseline.

Validates the 800 CRUXEval programs (each with its input) through ``SandboxExecutor`` on every
backend available here (process; docker when an engine and the image are present) and prints
programs/s and p50/p99 latency. In the same run it measures the *bare baseline*: one warm worker
process that receives (program, input) over a ``multiprocessing.Pipe``, execs the program and
calls ``f`` twice on freshly parsed inputs - no isolation, one program at a time - and prints our
throughput as a ratio of it. Targets: process backend (2 slots) >= 0.30x bare (stretch 0.40x);
docker >= 0.8x process. The container gets ``--cpus`` = slots unless ``--docker-cpus`` says
otherwise (ExecutorConfig's default of 1.0 would cap it at one core while the process backend
uses two). On a shared machine timings are noisy: ``--repeat N`` runs N rounds (each with its
own bare baseline) and prints the median ratios.

    .venv/bin/python benchmarks/executor_throughput.py [--slots 2] [--repeat 3] [--docker-cpus 2]
"""

from __future__ import annotations

import argparse
import ast
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from azr.config import DockerConfig, ExecutorConfig  # noqa: E402
from azr.cruxeval import load_cruxeval  # noqa: E402
from azr.tasks import ValidateRequest  # noqa: E402
from executor_pool.executor import SandboxExecutor  # noqa: E402


def _bare_worker(conn) -> None:  # type: ignore[no-untyped-def]
    """The baseline: exec + two calls on freshly parsed inputs, no isolation at all."""
    while True:
        message = conn.recv()
        if message is None:
            return
        program, text = message
        try:
            namespace: dict = {}
            exec(program, namespace)
            outputs = []
            for _ in range(2):
                call = ast.parse(f"f({text})", mode="eval").body
                args = [ast.literal_eval(arg) for arg in call.args]  # type: ignore[attr-defined]
                outputs.append(repr(namespace["f"](*args)))
            conn.send(("ok", outputs[0]))
        except BaseException as error:  # noqa: BLE001 - the baseline reports, never dies
            conn.send(("error", type(error).__name__))


def bare_baseline(rows: list[dict]) -> tuple[float, list[float], float]:
    """Programs/s, per-program latencies and CPU ms per program (both processes) of the bare
    worker (literal inputs only)."""
    parent, child = multiprocessing.Pipe()
    worker = multiprocessing.get_context("fork").Process(target=_bare_worker, args=(child,))
    worker.start()
    latencies = []
    cpu_before = _cpu_s(worker.pid) + time.process_time()  # type: ignore[arg-type]
    start = time.perf_counter()
    for row in tqdm(rows, desc="bare baseline", leave=False):
        sent = time.perf_counter()
        parent.send((row["code"], row["input"]))
        parent.recv()
        latencies.append(time.perf_counter() - sent)
    elapsed = time.perf_counter() - start
    cpu_ms = (_cpu_s(worker.pid) + time.process_time() - cpu_before) / len(rows) * 1e3  # type: ignore[arg-type]
    parent.send(None)
    worker.join()
    return len(rows) / elapsed, latencies, cpu_ms


def _cpu_s(pid: int) -> float:
    """CPU seconds of a process plus its reaped children (``/proc/<pid>/stat`` fields 14-17)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its direct children (the fork-server front and its two zygotes)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def sandbox_run(
    backend: str, rows: list[dict], slots: int, docker_cpus: float | None = None
) -> tuple[float, dict, int, float]:
    """Programs/s, executor stats, valid results and CPU ms per validation for one backend.

    CPU is counted on the host only for the process backend (this process with its threads,
    the fork-server front, both zygotes and every reaped program process); NaN for docker.
    ``docker_cpus`` is the container's ``--cpus`` (default: one CPU per slot, as the process
    backend is not capped either; ExecutorConfig's own default is 1.0).
    """
    config = ExecutorConfig(
        backend=backend,  # type: ignore[arg-type]
        slots=slots,
        timeout_s=5.0,
        docker=DockerConfig(cpus=float(slots) if docker_cpus is None else docker_cpus),
    )
    requests = [ValidateRequest(program=row["code"], inputs=(row["input"],)) for row in rows]
    with SandboxExecutor(config) as executor:
        executor.validate_many(requests[:20])  # warm-up (and docker start)
        tree = _process_tree(executor.sandbox.pid) if backend == "process" else []  # type: ignore[arg-type]
        cpu_before = sum(map(_cpu_s, tree)) + time.process_time()
        start = time.perf_counter()
        results = []
        for offset in tqdm(range(0, len(requests), 100), desc=f"{backend} sandbox", leave=False):
            results += executor.validate_many(requests[offset : offset + 100])
        elapsed = time.perf_counter() - start
        cpu_ms = (sum(map(_cpu_s, tree)) + time.process_time() - cpu_before) / len(rows) * 1e3
        stats = executor.stats()
    valid = sum(result.valid for result in results)
    return len(rows) / elapsed, stats, valid, cpu_ms if tree else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=2, help="parallel slots (workers)")
    parser.add_argument("--backends", default="process,docker")
    parser.add_argument(
        "--docker-cpus", type=float, default=None, help="container --cpus (default: --slots)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds (bare, then each backend); medians at the end"
    )
    args = parser.parse_args()
    rows = [asdict(row) for row in load_cruxeval()]
    literal_rows = [row for row in rows if _is_literal_input(row["input"])]
    ratios: dict[str, list[float]] = {}
    docker_vs_process = []
    for round_ in range(args.repeat):
        if args.repeat > 1:
            print(f"-- round {round_ + 1} of {args.repeat}")
        print("load average: " + " ".join(f"{load:.2f}" for load in os.getloadavg()))
        rates = _one_round(args, rows, literal_rows, ratios)
        if "process" in rates and "docker" in rates:
            docker_vs_process.append(rates["docker"] / rates["process"])
            cpus = float(args.slots) if args.docker_cpus is None else args.docker_cpus
            print(f"docker / process: {docker_vs_process[-1]:.3f}x  (docker --cpus {cpus:g})")
    if args.repeat > 1:
        for backend, values in ratios.items():
            print(
                f"median ratio vs bare, {backend}: {statistics.median(values):.3f}x"
                f"  (rounds: {', '.join(f'{value:.3f}' for value in values)})"
            )
        if docker_vs_process:
            print(f"median docker / process: {statistics.median(docker_vs_process):.3f}x")


def _one_round(
    args: argparse.Namespace,
    rows: list[dict],
    literal_rows: list[dict],
    ratios: dict[str, list[float]],
) -> dict[str, float]:
    """One bare baseline and one run per backend, printed; returns programs/s per backend."""
    bare_rate, bare_latencies, bare_cpu_ms = bare_baseline(literal_rows)
    q = statistics.quantiles(bare_latencies, n=100)
    print(
        f"bare baseline : {bare_rate:8.1f} programs/s  p50 {q[49] * 1e3:.2f} ms  p99 {q[98] * 1e3:.2f} ms"
        f"  CPU {bare_cpu_ms:.2f} ms/program"
    )
    rates = {}
    for backend in args.backends.split(","):
        try:
            rate, stats, valid, cpu_ms = sandbox_run(backend, rows, args.slots, args.docker_cpus)
        except Exception as error:  # noqa: BLE001 - an unavailable backend is reported, not fatal
            print(f"{backend:<14}: unavailable ({type(error).__name__}: {error})"[:300])
            continue
        rates[backend] = rate
        ratios.setdefault(backend, []).append(rate / bare_rate)
        latency = stats["latency_s"]
        print(
            f"{backend + ' sandbox':<14}: {rate:8.1f} programs/s  p50 {latency['p50'] * 1e3:.2f} ms"
            f"  p99 {latency['p99'] * 1e3:.2f} ms  ({args.slots} slots, {valid} valid of {len(rows)})"
            f"  ratio vs bare {rate / bare_rate:.3f}x  CPU {cpu_ms:.2f} ms/validation"
        )
    return rates


def _is_literal_input(text: str) -> bool:
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        [ast.literal_eval(arg) for arg in call.args]  # type: ignore[attr-defined]
    except (ValueError, SyntaxError):
        return False
    return True


if __name__ == "__main__":
    main()
