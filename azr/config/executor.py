"""The executor section: the sandboxed Python executor pool and its docker backend.

Also the default banned modules and builtins of a proposal's static check; the 0.1 spelling
``executor.docker_<key>`` still loads (with a warning) as ``executor.docker.<key>``.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, model_validator

from azr.config.section import Section

log = logging.getLogger(__name__)

# AZR_SPEC "Validating a proposal": the modules banned on the AST (task quality, not security).
DEFAULT_BANNED_MODULES = [
    "random", "secrets", "time", "datetime", "calendar", "os", "sys", "subprocess",
    "multiprocessing", "threading", "asyncio", "concurrent", "socket", "ssl", "http", "urllib",
    "shutil", "pathlib", "tempfile", "signal", "ctypes", "importlib", "builtins", "gc", "logging",
    "hashlib", "hmac", "uuid", "pickle", "marshal", "sqlite3", "resource", "io", "faulthandler",
    "inspect", "code", "codeop", "pty", "fcntl", "mmap", "select", "selectors", "atexit",
]  # fmt: skip

DEFAULT_BANNED_BUILTINS = [
    "__import__", "eval", "exec", "compile", "open", "input", "breakpoint", "globals", "locals",
    "vars", "getattr", "setattr", "delattr", "memoryview", "help", "exit", "quit",
]  # fmt: skip


class DockerConfig(Section):
    """The docker backend's container: one long-lived container per executor actor."""

    image: str = "azr-executor:test"
    """Image of the docker backend (deploy/docker/executor.Dockerfile on clusters)."""
    cpus: float = Field(1.0, gt=0)
    """--cpus of each executor container."""
    pids_limit: int = Field(64, ge=8)
    """--pids-limit of each executor container."""
    memory_mb: int | None = Field(None, ge=128)
    """--memory of each executor container; None = 2 * slots * memory_mb + 256 (two zygote
    children per slot)."""
    tmpfs_mb: int = Field(64, ge=8)
    """Size of the container's only writable filesystem (a tmpfs on /tmp holding the run
    directories)."""
    sweep_interval_s: float = Field(2.0, ge=0)
    """How often the host checks a container for processes that escaped a finished program (own
    session, reparented to init) and replaces it if any; 0 = never."""


class ExecutorConfig(Section):
    """The sandboxed Python executor pool: validation of proposals and scoring of answers."""

    backend: Literal["process", "docker"] = "process"
    """process: warm fork-server with namespaces/rlimits on the host; docker: one container each."""
    per_node: int = Field(1, ge=1)
    """Executor actors placed on every node that offers `resource`."""
    slots: int = Field(2, ge=1)
    """Programs one executor runs in parallel."""
    resource: str | None = None
    """Ray custom resource marking executor nodes (e.g. "executor"); None = every alive node."""
    timeout_s: float = Field(10.0, gt=0)
    """Wall-clock limit of one program run."""
    memory_mb: int = Field(1024, ge=64)
    """Address-space (process) or container memory (docker) limit per program run / executor."""
    max_output_chars: int = Field(4000, ge=16)
    """Longest canonical output repr; larger outputs make a proposal invalid (never truncated)."""
    max_input_chars: int = Field(4000, ge=16)
    """Longest input / literal answer text accepted before parsing."""
    max_program_chars: int = Field(20000, ge=64)
    """Longest program source accepted before parsing."""
    max_check_chars: int = Field(2_000_000, ge=20000)
    """Longest program + test of an evaluation check (`azr eval`'s code benchmarks: HumanEval+
    tests embed their inputs); a longer one fails as `check_too_large` without running."""
    sandbox_modules: list[str] = Field(default_factory=list)
    """Third-party modules the sandbox imports before it forks (from the interpreter's
    site-packages; on the docker backend the image must have them): isolated programs can
    import nothing else from outside the standard library. `azr eval` adds `math_verify`
    for math benchmarks; self-play needs none."""
    banned_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_BANNED_MODULES))
    """Modules a program may not import (checked on the AST, dotted imports included)."""
    banned_builtins: list[str] = Field(default_factory=lambda: list(DEFAULT_BANNED_BUILTINS))
    """Builtins a program may not name or call."""
    docker: DockerConfig = DockerConfig()
    """The container of the docker backend (one per executor actor)."""
    max_retries: int = Field(3, ge=0)
    """Times a batch is re-run after its executor or sandbox died."""
    chunk_size: int = Field(32, ge=1)
    """Requests per chunk the pool sends to one executor actor."""
    max_chunks_in_flight: int = Field(4, ge=1)
    """Chunks in flight per executor actor (backpressure)."""
    num_cpus_per_actor: float = Field(0.0, ge=0)
    """CPUs Ray reserves per executor actor; 0 lets executors share nodes (each program run is
    limited by the sandbox itself)."""
    start_timeout_s: float = Field(120.0, gt=0)
    """How long the pool waits for an executor actor to start its sandbox before giving up on it."""
    discovery_interval_s: float = Field(2.0, gt=0)
    """Least seconds between two looks at the cluster for joined/removed executor nodes."""

    @model_validator(mode="before")
    @classmethod
    def _docker_keys_of_0_1(cls, data: Any) -> Any:
        """``executor.docker_<key>`` (azr 0.1) still works for this release, with a warning:
        it is ``executor.docker.<key>`` now."""
        if not isinstance(data, dict) or not any(str(k).startswith("docker_") for k in data):
            return data
        data = dict(data)
        docker = dict(data.get("docker") or {})
        for old in [k for k in data if str(k).startswith("docker_")]:
            new = old.removeprefix("docker_")
            log.warning("executor.%s is deprecated: write executor.docker.%s", old, new)
            docker.setdefault(new, data.pop(old))
        data["docker"] = docker
        return data
