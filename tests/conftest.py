"""Shared pytest fixtures. Each part adds its own section; keep sections independent."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- docker
# The `docker` backend tests need a Docker engine and the executor test image. `make test`
# starts the engine (deploy/docker/dockerd.sh) and builds the image before pytest; run alone,
# pytest does both here. DOCKER_TESTS=0 skips every test that uses these fixtures.
# AZR_REQUIRE_DOCKER=1 (.ci/run, with_docker.sh) wins over DOCKER_TESTS=0: every skip of a
# `docker`-marked test, whatever its cause, is reported as a failure, so the container's
# isolation checks cannot vanish from a green run.
DOCKERD_SCRIPT = REPO_ROOT / "deploy" / "docker" / "dockerd.sh"
BUILD_IMAGE_SCRIPT = REPO_ROOT / "deploy" / "docker" / "build_test_image.sh"
DOCKER_IMAGE_BUILD_TIMEOUT_S = 900  # a cold build downloads Debian (about 45 s here)


def _docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def docker_required() -> bool:
    return os.environ.get("AZR_REQUIRE_DOCKER") == "1"


def _docker_unavailable(reason: str) -> None:
    if docker_required():
        pytest.fail(f"docker tests required (AZR_REQUIRE_DOCKER=1) but {reason}")
    pytest.skip(f"docker backend unavailable: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """With AZR_REQUIRE_DOCKER=1, a skipped `docker` test is a failure (whatever skipped it)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and docker_required() and item.get_closest_marker("docker") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"docker tests are required (AZR_REQUIRE_DOCKER=1) but skipped: {reason}"


def _azr_containers_running() -> bool:
    done = subprocess.run(
        ["docker", "ps", "--quiet", "--filter", "label=azr.sandbox"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return bool(done.stdout.strip())


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """A Docker engine that answers; started (and stopped at the end) only when none runs."""
    if os.environ.get("DOCKER_TESTS", "1") == "0":
        _docker_unavailable("DOCKER_TESTS=0")
    started_here = False
    if not _docker_engine_answers():
        if shutil.which("dockerd") is None:
            _docker_unavailable("no Docker engine answers and dockerd is not installed")
        done = subprocess.run(
            [str(DOCKERD_SCRIPT), "start"], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            _docker_unavailable(f"dockerd.sh start failed: {(done.stdout + done.stderr)[-800:]}")
        started_here = True
    yield
    # Stop only an engine this session started, and not while another session's sandboxes run.
    if started_here and not _azr_containers_running():
        subprocess.run([str(DOCKERD_SCRIPT), "stop"], capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def docker_image(docker_engine: None) -> str:
    """Tag of the executor test image, built once (cached across sessions by its input hash)."""
    done = subprocess.run(
        [str(BUILD_IMAGE_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=DOCKER_IMAGE_BUILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"building the executor test image failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- executor
# The executor tests run on every backend: "process" always, "docker" when an engine and the
# test image are available (the docker fixtures above skip cleanly otherwise).
EXECUTOR_TEST_TIMEOUT_S = 2.0
"""Per-call wall-clock limit in executor tests: short, so hostile programs end quickly."""
EXECUTOR_BACKENDS = ["process", pytest.param("docker", marks=pytest.mark.docker)]


@pytest.fixture(scope="module", params=EXECUTOR_BACKENDS)
def executor_config(request: pytest.FixtureRequest):  # -> azr.config.ExecutorConfig
    """ExecutorConfig for the backend under test: 2 slots, 2 s timeout, 256 MiB per run."""
    from azr.config import DockerConfig, ExecutorConfig

    overrides = {}
    if request.param == "docker":
        overrides["docker"] = DockerConfig(image=request.getfixturevalue("docker_image"))
    return ExecutorConfig(
        backend=request.param,
        slots=2,
        timeout_s=EXECUTOR_TEST_TIMEOUT_S,
        memory_mb=256,
        **overrides,
    )


@pytest.fixture(scope="module")
def executor(executor_config):  # -> Iterator[executor_pool.executor.SandboxExecutor]
    """A started SandboxExecutor on the backend under test, shared by one test module."""
    from executor_pool.executor import SandboxExecutor

    with SandboxExecutor(executor_config) as started:
        yield started


# ----------------------------------------------------------------------------- ray
@pytest.fixture(scope="module")
def ray_cluster():
    """A private local Ray cluster per test module (never an engineer's or CI's running one)."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# ----------------------------------------------------------------------------- test order
def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """The random order's seed at the end of every run, -q included, to replay a failure."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int):
        terminalreporter.write_line(
            f"test order: pytest-randomly seed {seed} (replay it with --randomly-seed={seed}; "
            "file order: -p no:randomly)"
        )
