"""The docker backend: one long-lived, locked-down container per executor runs the fork-server.

The container is started once (``docker run -i``) and spoken to over stdin/stdout with the
fork-server's protocol, so a program costs a fork, not a container. Inside, the fork-server runs
without root and its root-only layers switch off: the container flags (``container_flags``) are
the boundary. Invariants: every container carries the ``azr.sandbox`` label and its owner;
a replaced or closed container is removed (``docker rm -f``) and its successor gets a fresh
name; a container where a process outlived its program is replaced (``docker.sweep_interval_s``).
Rationale, flags and measured costs: docs/executor.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future

from azr.config import ExecutorConfig
from executor_pool.sandbox import INTERPRETER_FLAGS, ForkServerClient, SandboxError, forkserver_args

logger = logging.getLogger(__name__)

SANDBOX_LABEL = "azr.sandbox"
"""Label key on every executor container; its value is ``SANDBOX_LABEL_VALUE``."""
SANDBOX_LABEL_VALUE = "executor"
OWNER_LABEL = "azr.owner"
"""Label holding ``<hostname>:<pid>`` of the process that started the container."""
FORKSERVER_IN_IMAGE = "/opt/azr/forkserver.py"
"""Where both images (executor.Dockerfile, build_test_image.sh) put the fork-server; the
siblings it imports from its own directory (``FORKSERVER_FILES``) lie beside it."""
SANDBOX_USER = "10001:10001"
"""The images' non-root ``azr`` user; forced here too: a root-default image stays unprivileged."""
# Environment the docker CLI may need; none of it reaches the container (no -e flags).
_CLI_ENV_KEYS = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG",
                 "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "XDG_RUNTIME_DIR")  # fmt: skip
_CLI_TIMEOUT_S = 30.0


def docker_cli() -> str:
    """Absolute path of the docker CLI (the sandbox's Popen gets a minimal environment)."""
    path = shutil.which("docker")
    if path is None:
        raise SandboxError("docker backend: the docker CLI is not on PATH")
    return path


def container_memory_mb(config: ExecutorConfig) -> int:
    """--memory of the container: explicit, or room for two children per slot plus the servers."""
    if config.docker.memory_mb is not None:
        return config.docker.memory_mb
    return 2 * config.slots * config.memory_mb + 256


def owner_tag(pid: int | None = None) -> str:
    """Value of the owner label for a process of this host."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def new_container_name() -> str:
    """A name no other container on any host of the cluster will have."""
    return f"azr-executor-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def container_flags(config: ExecutorConfig, name: str) -> list[str]:
    """The isolation and lifecycle flags of ``docker run`` for one executor container."""
    memory = f"{container_memory_mb(config)}m"
    return [
        "--name", name,
        "--label", f"{SANDBOX_LABEL}={SANDBOX_LABEL_VALUE}",
        "--label", f"{OWNER_LABEL}={owner_tag()}",
        "--pull", "never",  # no registry here; a missing image must fail fast, not hang
        "--init",  # tini as PID 1 reaps orphans that would otherwise fill the pids limit
        "--network", "none",
        "--read-only",
        "--tmpfs", f"/tmp:rw,nosuid,nodev,noexec,size={config.docker.tmpfs_mb}m,mode=1777",
        "--workdir", "/tmp",
        "--pids-limit", str(config.docker.pids_limit),
        "--memory", memory,
        "--memory-swap", memory,  # the same value: no swap on top of the memory limit
        "--cpus", str(config.docker.cpus),
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--user", SANDBOX_USER,
        "--log-driver", "none",  # the fork-server's stderr comes over the attach stream
    ]  # fmt: skip


def docker_run_argv(config: ExecutorConfig, name: str, *, docker: str = "docker") -> list[str]:
    """Full argv that starts one executor container running the fork-server on stdin/stdout."""
    return [
        docker, "run", "-i", "--rm", *container_flags(config, name), config.docker.image,
        "python3", *INTERPRETER_FLAGS, FORKSERVER_IN_IMAGE, *forkserver_args(config),
    ]  # fmt: skip


def _docker(*args: str, timeout_s: float = _CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [docker_cli(), *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def remove_container(name: str) -> bool:
    """``docker rm -f`` (running, paused or exited containers); True if one was removed."""
    try:
        done = _docker("rm", "--force", name)
    except subprocess.TimeoutExpired:
        logger.error("docker rm -f %s did not finish in %.0f s", name, _CLI_TIMEOUT_S)
        return False
    if done.returncode == 0:
        return True
    if "No such container" not in done.stderr:
        logger.error("docker rm -f %s failed: %s", name, done.stderr.strip()[:500])
    return False


def list_sandbox_containers() -> list[tuple[str, str]]:
    """``(name, owner)`` of every executor container on this engine, in any state."""
    done = _docker(
        "ps", "--all", "--no-trunc",
        "--filter", f"label={SANDBOX_LABEL}={SANDBOX_LABEL_VALUE}",
        "--format", '{{.Names}}\t{{.Label "' + OWNER_LABEL + '"}}',
    )  # fmt: skip
    if done.returncode != 0:
        raise SandboxError(f"docker ps failed: {done.stderr.strip()[:500]}")
    rows = [line.split("\t", 1) for line in done.stdout.splitlines() if line.strip()]
    return [(row[0], row[1] if len(row) > 1 else "") for row in rows]


def _owner_alive(owner: str) -> bool:
    """Whether the owner label names a live process of this host (other hosts: assume alive)."""
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another host's (or unlabelled): not ours to judge
    if not pid_text.isdigit():
        return False  # a garbled label of this host: nobody can own it
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftover_containers(*, owner: str | None = None) -> list[str]:
    """Remove executor containers of dead owner processes of this host (or of ``owner``).

    Returns the names removed. Containers of live processes and of other hosts sharing the
    engine are left alone: other executors on this machine may be using them.
    """
    removed = []
    for name, container_owner in list_sandbox_containers():
        leftover = (
            container_owner == owner if owner is not None else not _owner_alive(container_owner)
        )
        if leftover and remove_container(name):
            removed.append(name)
    if removed:
        logger.warning("removed %d leftover executor container(s): %s", len(removed), removed)
    return removed


def require_image(image: str) -> None:
    """Fail with a clear message when the image is not on this engine (nothing is pulled)."""
    try:
        done = _docker("image", "inspect", "--format", "{{.Id}}", image)
    except (subprocess.TimeoutExpired, OSError) as error:
        raise SandboxError(f"docker backend: the Docker engine does not answer: {error}") from None
    if done.returncode != 0:
        if "No such image" in done.stderr or "No such object" in done.stderr:
            raise SandboxError(
                f"docker backend: image {image!r} is not on this engine; build it "
                "(`make docker-image`, or deploy/docker/executor.Dockerfile on clusters)"
            )
        raise SandboxError(
            f"docker backend: docker image inspect failed: {done.stderr.strip()[:500]}"
        )


def escaped_processes(name: str, *, idle: bool, max_age_s: float | None = None) -> list[int] | None:
    """Host pids of processes in container ``name`` that escaped a finished program.

    Legitimate tree: init (tini) -> the fork-server front -> two zygotes -> one child per
    running program. A second child of init is an escapee at any time; a child of a zygote is
    one when ``idle`` (no request outstanding, so no program can be running) or when it is
    older than ``max_age_s`` (longer than any outstanding request may run). The front is told
    from the zygotes by its arguments (fork keeps a zygote's; pids wrap around).
    None when the container cannot be listed (gone, engine hiccup).
    """
    done = _docker("top", name, "-o", "pid,ppid,etimes,stat,args")
    if done.returncode != 0:
        return None
    rows = []  # (pid, ppid, age in s, args) of live (non-zombie) processes
    for line in done.stdout.splitlines()[1:]:
        fields = line.split(None, 4)
        live = len(fields) >= 4 and not fields[3].startswith("Z")
        if live and all(field.isdigit() for field in fields[:3]):
            args = fields[4] if len(fields) > 4 else ""
            rows.append((int(fields[0]), int(fields[1]), int(fields[2]), args))
    pids = {pid for pid, _, _, _ in rows}
    roots = [(pid, args) for pid, ppid, _, args in rows if ppid not in pids]  # init, `docker exec`s
    init = next((pid for pid, args in roots if args.startswith("/sbin/docker-init")), None)
    if init is None:
        return []
    under_init = [(pid, args) for pid, ppid, _, args in rows if ppid == init]
    fronts = [pid for pid, args in under_init if "--zygote" not in args]
    escaped = [pid for pid, args in under_init if "--zygote" in args] + fronts[1:]
    if fronts:
        zygotes = {pid for pid, ppid, _, _ in rows if ppid == fronts[0]}
        escaped += [
            pid
            for pid, ppid, age, _ in rows
            if ppid in zygotes and (idle or (max_age_s is not None and age > max_age_s))
        ]
    return sorted(escaped)


class DockerSandbox(ForkServerClient):
    """ForkServerClient whose fork-server runs in one long-lived locked-down container.

    ``container_name`` is the current container; after a replacement (dead or wedged server,
    counted in ``restarts``) it names the new one. ``retired_containers`` lists the names
    removed so far, in order.
    """

    def __init__(self, config: ExecutorConfig, **client_options: object) -> None:
        docker = docker_cli()
        require_image(config.docker.image)
        remove_leftover_containers()
        self.config = config
        self.container_name = new_container_name()
        self.retired_containers: list[str] = []
        self._name_lock = threading.Lock()
        self._activity_lock = threading.Lock()
        self._outstanding = 0  # requests whose future is not resolved yet
        self._submitted = 0
        self._longest_budget_s = 0.0  # of any request submitted so far
        argv = docker_run_argv(config, self.container_name, docker=docker)
        self._name_index = argv.index("--name") + 1
        env = {key: os.environ[key] for key in _CLI_ENV_KEYS if key in os.environ}
        started = time.monotonic()
        super().__init__(
            argv,
            slots=config.slots,
            timeout_s=config.timeout_s,
            env=env,
            kill_hook=self._remove_current_container,
            **client_options,  # type: ignore[arg-type]
        )
        self.start_latency_s = time.monotonic() - started
        """Seconds from ``docker run`` to the fork-server's hello (first container)."""
        self.escapee_replacements = 0
        """Containers replaced because a program left a process running in them."""
        self._stop_sweeping = threading.Event()
        self._sweeper: threading.Thread | None = None
        if config.docker.sweep_interval_s > 0:
            self._sweeper = threading.Thread(
                target=self._sweep_loop, name="docker-sandbox-sweeper", daemon=True
            )
            self._sweeper.start()

    def close(self) -> None:
        """Stop the fork-server and remove the container (``docker rm -f``)."""
        self._stop_sweeping.set()
        super().close()
        if self._sweeper is not None:
            self._sweeper.join(timeout=_CLI_TIMEOUT_S)

    def submit(self, request: Mapping[str, object]) -> Future:
        """As ``ForkServerClient.submit``; also tracks outstanding requests for the sweeper."""
        inputs = request.get("inputs") or ()
        calls = max(1, len(inputs)) * (2 if request.get("op") == "validate" else 1)  # type: ignore[arg-type]
        timeout = float(request.get("timeout", self.timeout_s))  # type: ignore[arg-type]
        with self._activity_lock:
            self._outstanding += 1
            self._submitted += 1
            # The client's watchdog restarts the server past this budget (ForkServerClient.submit).
            self._longest_budget_s = max(
                self._longest_budget_s, 2 * timeout * calls + self.margin_s
            )
        try:
            future = super().submit(request)
        except BaseException:
            self._request_done(None)
            raise
        future.add_done_callback(self._request_done)
        return future

    def _request_done(self, _future: Future | None) -> None:
        with self._activity_lock:
            self._outstanding -= 1

    def _idle_mark(self) -> int | None:
        """Requests submitted so far if none is outstanding, else None."""
        with self._activity_lock:
            return self._submitted if self._outstanding == 0 else None

    def sweep_escapees(self) -> bool:
        """Replace the container if a process escaped a finished program; True if replaced.

        Removing the container makes the client see the fork-server exit: it starts a new
        container and re-sends the requests that were in flight.
        """
        name = self.container_name
        before = self._idle_mark()
        # No program outlives its request's budget; 1 s for etimes' whole-second resolution.
        max_age_s = self._longest_budget_s + 1.0
        escaped = escaped_processes(name, idle=before is not None, max_age_s=max_age_s)
        if escaped and before is not None and self._idle_mark() != before:
            # A request arrived while we listed: its program may be what we saw. Look again.
            escaped = escaped_processes(name, idle=False, max_age_s=max_age_s)
        if not escaped:
            return False
        logger.warning("container %s: escaped process(es) %s; replacing it", name, escaped)
        remove_container(name)
        self.escapee_replacements += 1
        return True

    def _sweep_loop(self) -> None:
        while not self._stop_sweeping.wait(self.config.docker.sweep_interval_s):
            try:
                self.sweep_escapees()
            except Exception:  # a hiccup of the engine must not end the sweeping
                logger.exception("escapee sweep of %s failed", self.container_name)

    def _remove_current_container(self) -> None:
        """Kill hook: remove the container, then point argv at a fresh name for the next start.

        The client calls it after killing the ``docker run`` process: on replacement, on a
        failed start and on close. A fresh name means a replacement never races the removal.
        """
        with self._name_lock:
            remove_container(self.container_name)
            self.retired_containers.append(self.container_name)
            self.container_name = new_container_name()
            self.argv[self._name_index] = self.container_name

    def extra_stats(self) -> dict[str, float]:
        """Docker-only counters for the executor's metrics (``azr_executor_*``)."""
        return {
            "container_start_s": self.start_latency_s,
            "escapee_replacements": float(self.escapee_replacements),
        }

    @property
    def isolation(self) -> dict:
        """The fork-server's report of its isolation layers (the root-only ones are off here)."""
        return dict(self.hello.get("isolation", {}))

    def container_id(self) -> str | None:
        """Docker id of the current container, None when it does not exist (closed, starting)."""
        done = _docker("inspect", "--type", "container", "--format", "{{.Id}}", self.container_name)
        return done.stdout.strip() if done.returncode == 0 else None
