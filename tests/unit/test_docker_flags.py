"""The docker backend's container flags, checked without a Docker engine.

`container_flags` / `docker_run_argv` are the whole isolation boundary of the docker backend
(executor_pool/docker_sandbox.py): every flag is asserted here with its exact value, so a
dropped or loosened flag fails on any machine, Docker or not. The engine-side check that the
flags take effect is tests/integration/test_docker_sandbox.py.
"""

from __future__ import annotations

import os
import socket

import pytest

from azr.config import DockerConfig, ExecutorConfig
from executor_pool.docker_sandbox import (
    FORKSERVER_IN_IMAGE,
    SANDBOX_USER,
    container_flags,
    container_memory_mb,
    docker_run_argv,
)

CONFIG = ExecutorConfig(
    backend="docker",
    slots=3,
    timeout_s=4.5,
    memory_mb=300,
    max_output_chars=5000,
    docker=DockerConfig(image="azr-executor:unit", cpus=1.5, pids_limit=40, tmpfs_mb=24),
)
NAME = "azr-executor-unit"

EXPECTED_FLAGS = [
    ("--name", NAME),
    ("--label", "azr.sandbox=executor"),
    ("--label", f"azr.owner={socket.gethostname()}:{os.getpid()}"),
    ("--pull", "never"),
    ("--init", None),
    ("--network", "none"),
    ("--read-only", None),
    ("--tmpfs", "/tmp:rw,nosuid,nodev,noexec,size=24m,mode=1777"),
    ("--workdir", "/tmp"),
    ("--pids-limit", "40"),
    ("--memory", "2056m"),  # 2 children per slot x 3 slots x 300 MiB + 256 MiB of servers
    ("--memory-swap", "2056m"),  # equal to --memory: no swap beyond the memory limit
    ("--cpus", "1.5"),
    ("--cap-drop", "ALL"),
    ("--security-opt", "no-new-privileges"),
    ("--user", "10001:10001"),
    ("--log-driver", "none"),
]


def pairs(flags: list[str]) -> list[tuple[str, str | None]]:
    """``--flag value`` / bare ``--flag`` tokens as (flag, value or None)."""
    out: list[tuple[str, str | None]] = []
    for token in flags:
        if token.startswith("--"):
            out.append((token, None))
        else:
            assert out and out[-1][1] is None, f"value {token!r} follows no flag"
            out[-1] = (out[-1][0], token)
    return out


def test_every_isolation_flag_has_its_exact_value():
    assert pairs(container_flags(CONFIG, NAME)) == EXPECTED_FLAGS


def test_the_container_memory_defaults_to_two_children_per_slot_and_can_be_set():
    assert container_memory_mb(CONFIG) == 2 * 3 * 300 + 256
    explicit = CONFIG.model_copy(
        update={"docker": CONFIG.docker.model_copy(update={"memory_mb": 640})}
    )
    flags = dict(pairs(container_flags(explicit, NAME)))
    assert (flags["--memory"], flags["--memory-swap"]) == ("640m", "640m")


def test_the_sandbox_user_is_not_root():
    uid, gid = SANDBOX_USER.split(":")
    assert int(uid) > 0 and int(gid) > 0


def test_docker_run_argv_runs_the_forkserver_on_stdio_with_the_config():
    argv = docker_run_argv(CONFIG, NAME, docker="/usr/bin/docker")
    flags = container_flags(CONFIG, NAME)
    assert argv == [
        "/usr/bin/docker", "run", "-i", "--rm", *flags, "azr-executor:unit",
        "python3", "-s", "-S", "-P", FORKSERVER_IN_IMAGE,
        "--slots", "3", "--timeout", "4.5", "--max-timeout", "4.5",
        "--memory-mb", "300", "--max-output-chars", "5000",
        "--max-program-chars", str(max(CONFIG.max_program_chars, CONFIG.max_check_chars)),
    ]  # fmt: skip
    # No environment reaches the container: no -e/--env/--env-file, no volume or device.
    for forbidden in ("-e", "--env", "--env-file", "-v", "--volume", "--mount", "--device"):
        assert forbidden not in argv
    assert "--privileged" not in argv and "--cap-add" not in argv


@pytest.mark.parametrize("field", ["cpus", "pids_limit", "tmpfs_mb"])
def test_each_docker_setting_reaches_its_flag(field):
    changed = {"cpus": 0.25, "pids_limit": 9, "tmpfs_mb": 11}[field]
    config = CONFIG.model_copy(update={"docker": CONFIG.docker.model_copy(update={field: changed})})
    flags = dict(pairs(container_flags(config, NAME)))
    shown = {
        "cpus": flags["--cpus"],
        "pids_limit": flags["--pids-limit"],
        "tmpfs_mb": flags["--tmpfs"],
    }[field]
    want = {"cpus": "0.25", "pids_limit": "9", "tmpfs_mb": "size=11m"}[field]
    assert want in shown
