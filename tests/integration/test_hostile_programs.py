"""Hostile programs against the executor, on every backend (`executor` fixture).

Each test checks: the right status, no effect on the host, the executor stays healthy and
keeps its throughput, and the run ends within the timeout plus a small margin. Escape
attempts go to the sandbox layer directly (``executor.sandbox``), past the static checks,
so that the sandbox itself is what is proven; the static ban is checked separately.

On the docker backend the checks look inside the container (`docker exec`, `docker top`):
a host path is invisible there, and the container has no slot uids, so host-side checks
would pass whatever the program did. An escape's target is then a path the container could
write but for its flags (the read-only root) or one it can write (its /tmp), and "nothing
left" means no process outside the fork-server's tree in the container.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostile import FORK_BOMB, HARD_EXIT, INFINITE_LOOP, MEMORY_BOMB, escape_programs

from azr.tasks import ScoreRequest, ScoreResult, TaskType, ValidateRequest
from executor_pool.docker_sandbox import SANDBOX_USER, escaped_processes
from executor_pool.executor import SandboxExecutor

EXECUTOR_TEST_TIMEOUT_S = 2.0
"""The per-call timeout of the `executor_config` fixture (tests/conftest.py)."""
MARGIN_S = 1.5
"""Allowed wall-clock time beyond the per-call timeout (fork, reply, a loaded CI machine)."""
HEALTH_BATCH = [
    ValidateRequest(program="def f(x):\n    return sorted(x)[::-1]", inputs=(f"[{n}, 3, 1]",))
    for n in range(8)
]
SECRET_NAME = "AZR_HOSTILE_TEST_SECRET"
SECRET = f"s3cret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module", autouse=True)
def host_secret() -> Iterator[None]:
    """A secret in this process's environment, set before the executor starts."""
    os.environ[SECRET_NAME] = SECRET
    yield
    os.environ.pop(SECRET_NAME, None)


@pytest.fixture(scope="module")
def baseline_s(executor: SandboxExecutor) -> float:
    """Seconds one health batch takes on the warm executor, before any hostile program."""
    executor.validate_many(HEALTH_BATCH)
    start = time.monotonic()
    executor.validate_many(HEALTH_BATCH)
    return time.monotonic() - start


def in_docker(executor: SandboxExecutor) -> bool:
    return executor.config.backend == "docker"


@pytest.fixture
def host_path(executor: SandboxExecutor, tmp_path: Path) -> Path:
    """A path a program must not be able to create: on the host (process backend); in the
    container's read-only root, in a directory writable but for --read-only (docker)."""
    if in_docker(executor):
        return Path("/var/tmp") / f"escape-{uuid.uuid4().hex}"  # mode 1777 in the image
    return tmp_path / f"escape-{uuid.uuid4().hex}"


def exists_for_the_sandbox(executor: SandboxExecutor, path: Path) -> bool:
    """Whether `path` exists where the sandbox's programs run (the host, or the container)."""
    if not in_docker(executor):
        return path.exists()
    done = subprocess.run(
        ["docker", "exec", "--user", SANDBOX_USER, executor.sandbox.container_name,
         "test", "-e", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1: absent; anything else: no container
    return done.returncode == 0


@pytest.fixture(autouse=True)
def restarts_at_start(executor: SandboxExecutor) -> tuple[int, int]:
    """(fork-server restarts, docker escapee replacements) before the test."""
    global _RESTARTS_AT_START
    _RESTARTS_AT_START = (executor.stats()["sandbox_restarts"], _escapee_replacements(executor))
    return _RESTARTS_AT_START


_RESTARTS_AT_START = (0, 0)


def _escapee_replacements(executor: SandboxExecutor) -> int:
    return int(getattr(executor.sandbox, "escapee_replacements", 0))


def assert_healthy(executor: SandboxExecutor, baseline_s: float, restarts: int = 0) -> None:
    """Valid results for ordinary programs, at (a generous bound of) the usual speed, and no
    restart of the fork-server during the test beyond ``restarts`` (on docker, replacing a
    container that held an escaped process is a restart by design and is not counted)."""
    start = time.monotonic()
    results = executor.validate_many(HEALTH_BATCH)
    elapsed = time.monotonic() - start
    assert all(result.valid for result in results), results
    assert elapsed <= 5 * baseline_s + 1.0, (elapsed, baseline_s)
    restarted = executor.stats()["sandbox_restarts"] - _RESTARTS_AT_START[0]
    swept = _escapee_replacements(executor) - _RESTARTS_AT_START[1]
    assert restarted - swept == restarts, (restarted, swept)


def raw(
    executor: SandboxExecutor, program: str, *inputs: str, op: str = "validate"
) -> tuple[dict, float]:
    """Run past the static checks; return the fork-server's reply and the wall time."""
    start = time.monotonic()
    reply = executor.sandbox.call({"op": op, "program": program, "inputs": list(inputs) or ["0"]})
    return reply, time.monotonic() - start


def timed_validate(
    executor: SandboxExecutor, program: str, *inputs: str
) -> tuple[str | None, float]:
    start = time.monotonic()
    result = executor.validate_many([ValidateRequest(program=program, inputs=inputs or ("0",))])[0]
    return (None if result.valid else result.reason), time.monotonic() - start


def _uid_isolated(executor: SandboxExecutor) -> bool:
    return bool(executor.sandbox.hello["isolation"].get("uids"))


def processes_of_sandbox(executor: SandboxExecutor) -> list[int]:
    """Pids on this host whose real uid is one of the sandbox's slot uids."""
    uids = set(executor.sandbox.hello["isolation"].get("uids") or ())
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid_line = next(
                line for line in status.read_text().splitlines() if line.startswith("Uid:")
            )
        except (OSError, StopIteration):
            continue
        if int(uid_line.split()[1]) in uids:
            found.append(int(status.parent.name))
    return found


def assert_nothing_left(executor: SandboxExecutor) -> None:
    """No process a program started outlives it: none of a slot uid on the host (as root, the
    zygote kills them at once); none outside the fork-server's tree in the container (docker:
    the ones a non-root server cannot kill are removed with their container by the sweeper,
    within its interval)."""
    if in_docker(executor):
        deadline = time.monotonic() + 2 * executor.config.docker.sweep_interval_s + 10
        while (left := escaped_processes(executor.sandbox.container_name, idle=True)) != []:
            assert time.monotonic() < deadline, f"processes left in the container: {left}"
            time.sleep(0.2)  # None: the container is being replaced
        return
    assert _uid_isolated(executor), "the process backend's tests run as root (slot uids)"
    assert processes_of_sandbox(executor) == []


# ----------------------------------------------------------------------------- resources
def test_infinite_loop_times_out(executor: SandboxExecutor, baseline_s: float) -> None:
    reason, elapsed = timed_validate(executor, INFINITE_LOOP)
    assert reason == "timeout"
    assert EXECUTOR_TEST_TIMEOUT_S <= elapsed <= EXECUTOR_TEST_TIMEOUT_S + MARGIN_S
    assert_healthy(executor, baseline_s)


def test_memory_bomb_and_slow_growth(executor: SandboxExecutor, baseline_s: float) -> None:
    reason, elapsed = timed_validate(executor, MEMORY_BOMB)
    assert reason == "memory" and elapsed < MARGIN_S
    growth = "def f(x):\n    kept = []\n    while True:\n        kept.append(bytearray(1 << 20))"
    reason, elapsed = timed_validate(executor, growth)
    assert reason == "memory" and elapsed <= EXECUTOR_TEST_TIMEOUT_S + MARGIN_S
    assert_healthy(executor, baseline_s)


def test_fork_bomb_is_contained_and_cleaned_up(
    executor: SandboxExecutor, baseline_s: float
) -> None:
    bomb = FORK_BOMB
    assert timed_validate(executor, bomb)[0] == "banned:os"
    reply, elapsed = raw(executor, bomb)
    assert reply["status"] == "timeout"
    assert elapsed <= EXECUTOR_TEST_TIMEOUT_S + MARGIN_S
    assert_nothing_left(executor)
    assert_healthy(executor, baseline_s)


def test_deep_recursion(executor: SandboxExecutor, baseline_s: float) -> None:
    reason, _ = timed_validate(executor, "def f(n):\n    return f(n + 1)")
    assert reason == "exception:RecursionError"
    unlimited = "import sys\nsys.setrecursionlimit(10 ** 8)\ndef f(n):\n    return f(n + 1)"
    reply, elapsed = raw(executor, unlimited)  # overflows the C stack: the child dies, not us
    assert reply["status"] != "ok" and elapsed <= EXECUTOR_TEST_TIMEOUT_S + MARGIN_S
    assert_healthy(executor, baseline_s)


@pytest.mark.parametrize(
    "body",
    [
        "return list(range(10 ** 6))",
        "return 10 ** 100000",
        "return 'x' * 10 ** 8",
        "return {i: i for i in range(10 ** 5)}",
    ],
)
def test_huge_output_is_invalid_not_truncated(
    executor: SandboxExecutor, baseline_s: float, body: str
) -> None:
    reason, elapsed = timed_validate(executor, f"def f(x):\n    {body}")
    assert reason == "output_too_large" and elapsed <= EXECUTOR_TEST_TIMEOUT_S + MARGIN_S
    assert_healthy(executor, baseline_s)


def test_stdout_flood_is_discarded(executor: SandboxExecutor, baseline_s: float) -> None:
    reason, elapsed = timed_validate(
        executor, "def f(x):\n    while True:\n        print('y' * 10000)"
    )
    assert reason == "timeout" and elapsed <= EXECUTOR_TEST_TIMEOUT_S + MARGIN_S
    chatty = "def f(x):\n    for _ in range(20000):\n        print('z' * 500)\n    return 1"
    assert timed_validate(executor, chatty)[0] is None
    assert not any("zzzz" in line or "yyyy" in line for line in executor.sandbox.stderr_tail())
    assert_healthy(executor, baseline_s)


# ----------------------------------------------------------------------------- exits, values
@pytest.mark.parametrize(
    ("program", "status"),
    [
        ("def f(x):\n    raise Exception('fine')", "exception:Exception"),
        ("def f(x):\n    raise StopIteration", "exception:StopIteration"),
        ("def f(x):\n    raise SystemExit(0)", "exception:SystemExit"),
        ("def f(x):\n    exit()", "exception:SystemExit"),
        ("import sys\ndef f(x):\n    sys.exit(3)", "exception:SystemExit"),
        (HARD_EXIT, "crash:exit0"),
        (
            "import os, signal\ndef f(x):\n    os.kill(os.getpid(), signal.SIGSEGV)",
            "crash:signal11",
        ),
    ],
)
def test_every_way_out_is_invalid(
    executor: SandboxExecutor, baseline_s: float, program: str, status: str
) -> None:
    reply, elapsed = raw(executor, program)
    assert reply["status"] == status and elapsed <= MARGIN_S
    assert_healthy(executor, baseline_s)


@pytest.mark.parametrize(
    "body",
    [
        "return f",
        "return (i for i in range(3))",
        "return float('nan')",
        "return [1, float('nan')]",
        "class L(list):\n        def __repr__(self):\n            return '[1]'\n    return L([1])",
        "class S(str):\n        pass\n    return S('a')",
        "return object()",
    ],
)
def test_non_literal_return_values_are_invalid(
    executor: SandboxExecutor, baseline_s: float, body: str
) -> None:
    assert timed_validate(executor, f"def f(x):\n    {body}")[0] == "non_literal_output"
    assert_healthy(executor, baseline_s)


def test_code_passed_as_input_never_runs(
    executor: SandboxExecutor, baseline_s: float, host_path: Path
) -> None:
    code = f"__import__('os').system('touch {host_path}')"
    assert timed_validate(executor, "def f(x):\n    return x", code)[0] == "non_literal_input"
    reply, _ = raw(executor, "def f(x):\n    return x", code)  # the sandbox re-parses as literal
    assert reply["status"] == "non_literal_input"
    assert not exists_for_the_sandbox(executor, host_path)
    assert_healthy(executor, baseline_s)


# ----------------------------------------------------------------------------- escapes
@pytest.mark.parametrize("attempt", list(escape_programs(Path("/x"))))
def test_writing_a_host_file_fails(
    executor: SandboxExecutor, baseline_s: float, host_path: Path, attempt: str
) -> None:
    program = escape_programs(host_path)[attempt]
    assert timed_validate(executor, program)[0].startswith("banned:")  # type: ignore[union-attr]
    reply, elapsed = raw(executor, program)
    assert elapsed <= EXECUTOR_TEST_TIMEOUT_S + MARGIN_S
    assert not exists_for_the_sandbox(executor, host_path), reply
    assert not exists_for_the_sandbox(executor, host_path.parent / "x")
    assert_healthy(executor, baseline_s)


def test_environment_secret_is_unreachable(executor: SandboxExecutor, baseline_s: float) -> None:
    program = (
        "import os\ndef f(x):\n    seen = [repr(dict(os.environ))]\n"
        "    for path in ['/proc/self/environ', '/proc/1/environ', f'/proc/{os.getppid()}/environ']"
        " + [f'/proc/{p}/environ' for p in (os.listdir('/proc') if os.path.isdir('/proc') else [])]:\n"
        "        try:\n            seen.append(open(path, 'rb').read().decode(errors='replace'))\n"
        "        except Exception as error:\n            seen.append(type(error).__name__)\n"
        "    return '|'.join(seen)[:3000]"
    )
    reply, _ = raw(executor, program, op="run")
    assert reply["status"] == "ok", reply
    assert SECRET not in reply["results"][0][1]
    assert SECRET_NAME not in reply["results"][0][1]
    assert_healthy(executor, baseline_s)


def test_no_network_to_a_host_listener(executor: SandboxExecutor, baseline_s: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        via_socket = f"def f(x):\n    s = __import__('socket').create_connection(('127.0.0.1', {port}), 1)\n    return 1"
        # ctypes is already loaded in the sandbox, so this reaches the raw syscalls.
        via_libc = (
            "def f(x):\n    c = __import__('ctypes')\n    libc = c.CDLL(None, use_errno=True)\n"
            "    fd = libc.socket(2, 1, 0)\n"
            f"    addr = (2).to_bytes(2, 'little') + ({port}).to_bytes(2, 'big') + bytes([127, 0, 0, 1]) + bytes(8)\n"
            "    rc = libc.connect(fd, c.c_char_p(addr), 16)\n    return [fd >= 0, rc, c.get_errno()]"
        )
        replies = [raw(executor, via_socket, op="run")[0], raw(executor, via_libc, op="run")[0]]
        with pytest.raises(TimeoutError):
            listener.accept()
    assert replies[0]["status"].startswith("exception:")
    assert replies[1]["status"] != "ok" or replies[1]["results"][0][1].split(", ")[1] == "-1"
    assert_healthy(executor, baseline_s)


def test_killing_the_parent_fails(executor: SandboxExecutor, baseline_s: float) -> None:
    server_pid = executor.sandbox.pid
    kill_everyone = (
        "    for target in (os.getppid(), -os.getpgid(os.getppid()), -1):\n"
        "        try:\n            os.kill(target, 9)\n        except OSError:\n            pass\n"
        if _uid_isolated(executor) or executor.config.backend == "docker"
        else "    pass\n"  # kill(-1) as our own uid would hit this test run itself
    )
    program = (
        "import os, signal\ndef f(x):\n    try:\n        os.kill(os.getppid(), signal.SIGKILL)\n"
        "    except OSError:\n        pass\n" + kill_everyone + "    return 1"
    )
    reply, elapsed = raw(executor, program)
    if _uid_isolated(executor):
        assert elapsed <= EXECUTOR_TEST_TIMEOUT_S + MARGIN_S
        assert reply["status"] in ("ok", "crash:signal9")
        assert executor.sandbox.pid == server_pid
        os.kill(server_pid, 0)  # still alive
    else:
        # Without a uid per slot (a non-root server, e.g. in a container) the program can kill
        # its own server; what must hold then is that the client replaces it and recovers.
        assert elapsed <= 3 * (EXECUTOR_TEST_TIMEOUT_S + MARGIN_S) + 30
    # As root the server survives. Without slot uids the program kills it, and the client
    # re-sends the request in flight to each replacement until it has failed max_attempts
    # times: one restart per attempt.
    expected = 0 if _uid_isolated(executor) else executor.sandbox.max_attempts
    assert_healthy(executor, baseline_s, restarts=expected)


def test_orphans_do_not_survive_to_act_later(
    executor: SandboxExecutor, baseline_s: float, host_path: Path
) -> None:
    if in_docker(executor):
        # A path the orphan could write (the container's /tmp, where later programs run),
        # written after longer than the sweeper needs to find it: as root the zygote kills an
        # orphan at once, a non-root server in a container relies on the sweeper.
        target = Path("/tmp") / host_path.name
        delay = 2 * executor.config.docker.sweep_interval_s + 2.0
    else:
        target, delay = host_path, 1.0
    program = (
        "import os, time\ndef f(x):\n    if os.fork() == 0:\n        os.setsid()\n"
        f"        if os.fork() == 0:\n            time.sleep({delay})\n"
        f"            open({str(target)!r}, 'w').write('late')\n"
        "        os._exit(0)\n    return 1"
    )
    reply, elapsed = raw(executor, program)
    assert reply["status"] == "ok" and elapsed <= MARGIN_S
    assert_nothing_left(executor)
    time.sleep(delay + 0.5)
    assert not exists_for_the_sandbox(executor, target)
    assert_healthy(executor, baseline_s)


# ----------------------------------------------------------------------------- reward hacks
def test_always_equal_object_as_induction_result_scores_zero(
    executor: SandboxExecutor, baseline_s: float
) -> None:
    always_equal = (
        "class Always:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
        "def f(x):\n    return Always()"
    )
    request = ScoreRequest(
        task=TaskType.INDUCTION, program="", answer=always_equal, pairs=(("1", "2"), ("5", "3"))
    )
    assert executor.score_many([request]) == [
        ScoreResult(accuracy=0.0, reason="non_literal_output")
    ]
    deduction = ScoreRequest(
        task=TaskType.DEDUCTION, program="", input="1", output="2", answer="Always()"
    )
    assert executor.score_many([deduction])[0].accuracy == 0.0
    assert_healthy(executor, baseline_s)


def test_injected_abduction_input_scores_zero(executor: SandboxExecutor, baseline_s: float) -> None:
    program = "def f(x):\n    return x"
    for injected in ("1)\nTrue or (1", "1), (1", "1) or (1"):
        request = ScoreRequest(
            task=TaskType.ABDUCTION, program=program, answer=injected, output="True"
        )
        assert executor.score_many([request]) == [
            ScoreResult(accuracy=0.0, reason="non_literal_answer")
        ]
    assert_healthy(executor, baseline_s)


def test_module_mutation_does_not_leak_to_the_next_program(
    executor: SandboxExecutor, baseline_s: float
) -> None:
    patch = "import math\ndef f(x):\n    math.pi = 3\n    return 1"
    read = "import math\ndef f(x):\n    return math.pi"
    for _ in range(3):  # same slots, same zygotes, again and again
        results = executor.validate_many(
            [ValidateRequest(program=p, inputs=("0",)) for p in (patch, read)]
        )
        assert results[1].outputs == ("3.141592653589793",)
    assert_healthy(executor, baseline_s)


def test_nothing_a_program_writes_reaches_the_next_run(
    executor: SandboxExecutor, baseline_s: float
) -> None:
    write = "def f(x):\n    open('note-' + str(x), 'w').write('x')\n    return 1"
    listing = "import os\ndef f(x):\n    return sorted(os.listdir('.'))"
    for n in range(4):  # more runs than slots: every slot's directory is seen again
        reply, _ = raw(executor, write, str(n))
        if executor.sandbox.hello["isolation"].get("chroot"):
            # As root the run directory is shared by a slot's runs, so it must be read-only.
            assert reply["status"] == "exception:PermissionError", reply
        else:
            assert reply["status"] == "ok", reply  # a fresh directory per run instead
        reply, _ = raw(executor, listing, str(n))
        assert reply["status"] == "ok" and reply["results"][0][1] == "[]", reply
    assert_healthy(executor, baseline_s)
