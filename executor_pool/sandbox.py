"""Host-side client of a fork-server (``forkserver.py``), whatever launches it.

``ForkServerClient(argv)`` starts ``argv``, waits for the hello line and pipelines requests over
the protocol documented in ``forkserver.py``. It replaces a dead or wedged server and re-sends
what was in flight (at most ``max_attempts`` times, then status ``sandbox_failure``). Nothing
from the server is trusted beyond being JSON: callers re-check every output
(``StaticChecker.canonical_output``). ``ProcessSandbox`` runs the fork-server on this host;
another backend only needs another argv and maybe a ``kill_hook`` (docs/executor.md).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from azr.config import ExecutorConfig

FORKSERVER_FILES = ("forkserver.py", "zygote.py", "program_runner.py")
"""The fork-server's files (in executor_pool/), shipped side by side: executor.Dockerfile and its
.dockerignore, build_test_image.sh and ray_cluster.yaml name each one (tests/test_deploy_config)."""
FORKSERVER_PATH = Path(__file__).resolve().with_name(FORKSERVER_FILES[0])
# A minimal interpreter: no site (-S), no user site (-s), no script dir on sys.path (-P; the
# fork-server imports its siblings zygote.py and program_runner.py from its own directory
# itself, and only those). Not -I: it implies -E, which would ignore the PYTHONHASHSEED the
# zygotes are started with.
INTERPRETER_FLAGS = ("-s", "-S", "-P")


class SandboxError(RuntimeError):
    """The fork-server could not be started or answered with something that is not protocol."""


@dataclass
class _Entry:
    request_id: int
    payload: bytes
    budget_s: float
    future: Future = field(default_factory=Future)
    attempts: int = 0
    sent_at: float = 0.0
    deadline: float = 0.0  # sent_at + own budget + the budgets queued ahead of it (per slot)


def forkserver_args(config: ExecutorConfig) -> list[str]:
    """The fork-server's command-line arguments for an ExecutorConfig."""
    args = [
        "--slots", str(config.slots),
        "--timeout", str(config.timeout_s),
        "--max-timeout", str(config.timeout_s),
        "--memory-mb", str(config.memory_mb),
        "--max-output-chars", str(config.max_output_chars),
        "--max-program-chars", str(max(config.max_program_chars, config.max_check_chars)),
    ]  # fmt: skip
    if config.sandbox_modules:
        args += ["--site-preload", ",".join(config.sandbox_modules)]
    return args


class ForkServerClient:
    """Pipelined, self-healing client of one fork-server process (see module docstring).

    At most ``max_inflight`` requests (default ``4 * slots``) are sent to the server at once;
    the rest wait here. A request counts as overdue (the server is wedged) when its own budget
    plus its share of the budgets queued ahead of it has passed.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        slots: int,
        timeout_s: float,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 60.0,
        margin_s: float = 5.0,
        max_attempts: int = 3,
        kill_hook: Callable[[], None] | None = None,
        max_inflight: int | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env) if env is not None else {}
        self.slots = slots
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.margin_s = margin_s
        self.max_attempts = max_attempts
        self.kill_hook = kill_hook
        self.restarts = 0
        self.hello: dict = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: collections.deque[_Entry] = collections.deque()
        self._inflight: dict[int, _Entry] = {}
        # The zygotes queue what they cannot run yet, so a few requests per slot keep every
        # slot busy while replies travel; more only add queueing latency (docs/executor.md).
        self._max_inflight = max_inflight if max_inflight is not None else 4 * slots
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._closed = False
        self._process: subprocess.Popen | None = None
        self._generation = 0
        with self._lock:
            self._start_locked()
        self._watchdog = threading.Thread(target=self._watch, name="forkserver-watchdog")
        self._watchdog.daemon = True
        self._watchdog.start()

    # ------------------------------------------------------------------ public
    def submit(self, request: Mapping[str, object]) -> Future:
        """Queue one request (``op``, ``program``, ``inputs`` ...); the future gets the reply."""
        inputs = request.get("inputs", ())
        calls = max(1, len(inputs)) * (2 if request.get("op") == "validate" else 1)  # type: ignore[arg-type]
        timeout = float(request.get("timeout", self.timeout_s))  # type: ignore[arg-type]
        with self._lock:
            if self._closed:
                raise SandboxError("sandbox is closed")
            entry = _Entry(next(self._ids), b"", budget_s=2 * timeout * calls + self.margin_s)
            entry.payload = (json.dumps({**request, "id": entry.request_id}) + "\n").encode()
            self._pending.append(entry)
            self._pump_locked()
        return entry.future

    def call(self, request: Mapping[str, object]) -> dict:
        """Submit and wait for the reply."""
        return self.submit(request).result()

    @property
    def pid(self) -> int | None:
        """Pid of the launched process (the fork-server front, or e.g. the docker CLI)."""
        return self._process.pid if self._process else None

    def stderr_tail(self) -> list[str]:
        """Last lines the server wrote on stderr (diagnostics)."""
        return list(self._stderr_tail)

    def close(self) -> None:
        """Stop the server; requests still waiting fail with SandboxError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_locked()
            waiting = list(self._inflight.values()) + list(self._pending)
            self._inflight.clear()
            self._pending.clear()
        for entry in waiting:
            entry.future.set_exception(SandboxError("sandbox closed"))
        self._watchdog.join(timeout=5)

    def __enter__(self) -> ForkServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ process lifecycle
    def _start_locked(self) -> None:
        self._generation += 1
        process = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,  # its own process group: one killpg stops front + zygotes
        )
        self._process = process
        hello_box: list[bytes] = []
        reader = threading.Thread(target=self._read_hello, args=(process, hello_box), daemon=True)
        reader.start()
        reader.join(self.start_timeout_s)
        line = hello_box[0] if hello_box else b""
        try:
            hello = json.loads(line)
            assert isinstance(hello, dict) and hello.get("hello") == 1
        except Exception:
            self._kill(process)
            time.sleep(0.05)
            raise SandboxError(
                f"fork-server did not say hello: {line[:200]!r}; stderr: {self.stderr_tail()}"
            ) from None
        if not hello.get("hash_seeds_differ"):
            self._kill(process)
            raise SandboxError("fork-server zygotes share a hash seed")
        self.hello = hello
        generation = self._generation
        for target, name in ((self._read_replies, "replies"), (self._read_stderr, "stderr")):
            thread = threading.Thread(
                target=target, args=(process, generation), name=f"forkserver-{name}", daemon=True
            )
            thread.start()

    def _read_hello(self, process: subprocess.Popen, box: list[bytes]) -> None:
        box.append(process.stdout.readline())  # type: ignore[union-attr]

    def _kill(self, process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()
        if self.kill_hook is not None:
            self.kill_hook()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)

    def _stop_locked(self, polite: bool = True) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if polite:  # the front exits on EOF and cleans up after itself
            with contextlib.suppress(Exception):
                process.stdin.close()  # type: ignore[union-attr]
                process.wait(timeout=2)
        self._kill(process)

    def _restart(self, generation: int, why: str) -> None:
        """Replace a dead or wedged server and re-send what was in flight."""
        failed: list[_Entry] = []
        with self._lock:
            if self._closed or generation != self._generation:
                return  # already handled
            self.restarts += 1
            self._stderr_tail.append(f"[client] restarting fork-server: {why}")
            self._stop_locked(polite=False)
            retry = sorted(self._inflight.values(), key=lambda e: e.request_id)
            self._inflight.clear()
            for entry in reversed(retry):
                entry.attempts += 1
                if entry.attempts >= self.max_attempts:
                    failed.append(entry)
                else:
                    self._pending.appendleft(entry)
            try:
                self._start_locked()
            except SandboxError as error:
                self._closed = True
                failed += list(self._pending)
                self._pending.clear()
                self._stderr_tail.append(f"[client] restart failed: {error}")
            else:
                self._pump_locked()
        for entry in failed:
            entry.future.set_result({"status": "sandbox_failure", "results": []})

    # ------------------------------------------------------------------ threads
    def _pump_locked(self) -> None:
        process = self._process
        while self._pending and len(self._inflight) < self._max_inflight and process:
            entry = self._pending.popleft()
            entry.sent_at = time.monotonic()
            # Queued behind the requests in flight: at worst they all use their whole budgets,
            # ``slots`` at a time, before this one starts.
            ahead_s = sum(other.budget_s for other in self._inflight.values()) / self.slots
            entry.deadline = entry.sent_at + entry.budget_s + ahead_s
            self._inflight[entry.request_id] = entry
            try:
                process.stdin.write(entry.payload)  # type: ignore[union-attr]
                process.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, OSError, ValueError):
                return  # the reader sees EOF and restarts; this entry is re-sent then

    def _read_replies(self, process: subprocess.Popen, generation: int) -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            try:
                reply = json.loads(line)
                request_id = reply["id"]
            except Exception:
                self._stderr_tail.append(f"[client] not protocol: {line[:200]!r}")
                continue
            with self._lock:
                entry = self._inflight.pop(request_id, None)
                if generation == self._generation:
                    self._pump_locked()
            if entry is not None:
                entry.future.set_result(reply)
        self._restart(generation, "fork-server exited")

    def _read_stderr(self, process: subprocess.Popen, generation: int) -> None:
        for raw in process.stderr:  # type: ignore[union-attr]
            self._stderr_tail.append(raw.decode(errors="replace").rstrip())

    def _watch(self) -> None:
        while not self._closed:
            time.sleep(0.2)
            now = time.monotonic()
            with self._lock:
                generation = self._generation
                late = [e for e in self._inflight.values() if now > e.deadline]
            if late:
                self._restart(generation, f"request {late[0].request_id} overdue: wedged")


class ProcessSandbox(ForkServerClient):
    """The process backend: the fork-server runs on this host under a minimal interpreter.

    Its isolation (chroot into an empty directory, a uid per slot, a network namespace) needs
    root; without it a program could write the host's files, so the sandbox refuses to start
    unless ``require_isolation=False`` (tests of the fork-server's non-root mode only).
    """

    def __init__(
        self, config: ExecutorConfig, *, require_isolation: bool = True, **client_options: object
    ) -> None:
        workdir = Path(tempfile.gettempdir()) / f"azr-forkserver-{uuid.uuid4().hex[:12]}"
        argv = [sys.executable, *INTERPRETER_FLAGS, str(FORKSERVER_PATH), *forkserver_args(config)]
        if config.sandbox_modules:
            # The minimal interpreter does not know this environment's site-packages (-S).
            argv += ["--site-path", os.pathsep.join(site.getsitepackages())]
        self.workdir = workdir
        super().__init__(
            [*argv, "--workdir", str(workdir)],
            slots=config.slots,
            timeout_s=config.timeout_s,
            env={},  # nothing of this process's environment (secrets) reaches the sandbox
            **client_options,  # type: ignore[arg-type]
        )
        isolation = self.hello.get("isolation", {})
        missing = [key for key in ("chroot", "netns", "uids") if not isolation.get(key)]
        if require_isolation and missing:
            self.close()
            raise SandboxError(
                f"process backend without {', '.join(missing)} (needs root): "
                "run as root or use executor.backend=docker"
            )

    def close(self) -> None:
        """Stop the server and remove its run directories (a killed server leaves them)."""
        super().close()
        shutil.rmtree(self.workdir, ignore_errors=True)
