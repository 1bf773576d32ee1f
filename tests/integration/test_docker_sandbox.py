"""The docker backend on a real Docker engine: flags, latency, replacement, cleanup.

Programs here go straight to the fork-server protocol (no static checks), as a hostile
program that slipped past them would: the container is what must hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future

import pytest
from support import REPO_ROOT

from azr.config import DockerConfig, ExecutorConfig
from executor_pool.docker_sandbox import (
    OWNER_LABEL,
    SANDBOX_LABEL,
    SANDBOX_LABEL_VALUE,
    DockerSandbox,
    container_memory_mb,
    escaped_processes,
    remove_leftover_containers,
)
from executor_pool.sandbox import FORKSERVER_FILES, SandboxError

pytestmark = pytest.mark.docker

# About 50 ms of work per call: long enough that a batch is in flight when we break things.
BUSY_PROGRAM = (
    "def f(n):\n    total = 0\n    for i in range(n):\n        total += i % 7\n    return total + n"
)


def busy_expected(n: int) -> str:
    """BUSY_PROGRAM's output, in closed form (the loop itself would take seconds here)."""
    return repr(n // 7 * 21 + sum(range(n % 7)) + n)


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=60, check=False
    )


def inspect(name: str) -> dict | None:
    done = docker("inspect", "--type", "container", name)
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


def run(sandbox: DockerSandbox, program: str, *inputs: str, timeout: float = 2.0) -> dict:
    return sandbox.call(
        {"op": "run", "program": program, "inputs": list(inputs), "timeout": timeout}
    )


def make_config(image: str, sweep_interval_s: float = 2.0, **changes: object) -> ExecutorConfig:
    docker = DockerConfig(
        image=image, pids_limit=48, cpus=1.0, tmpfs_mb=16, sweep_interval_s=sweep_interval_s
    )
    settings: dict[str, object] = {
        "backend": "docker",
        "slots": 2,
        "timeout_s": 2.0,
        "memory_mb": 256,
        "docker": docker,
    }
    settings.update(changes)
    return ExecutorConfig(**settings)


@pytest.fixture(scope="module")
def sandbox(docker_image: str) -> Iterator[DockerSandbox]:
    """One container for the read-only tests of this module."""
    with DockerSandbox(make_config(docker_image)) as shared:
        yield shared


def test_container_runs_with_the_isolation_flags(sandbox: DockerSandbox) -> None:
    config = sandbox.config
    info = inspect(sandbox.container_name)
    assert info is not None and info["State"]["Running"]
    host = info["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["PidsLimit"] == config.docker.pids_limit
    assert host["Memory"] == container_memory_mb(config) << 20
    assert host["MemorySwap"] == host["Memory"]  # no swap on top of the memory limit
    assert host["NanoCpus"] == int(config.docker.cpus * 1e9)
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Init"] is True
    assert host["AutoRemove"] is True
    assert set(host["Tmpfs"]) == {"/tmp"}
    assert f"size={config.docker.tmpfs_mb}m" in host["Tmpfs"]["/tmp"]
    assert "noexec" in host["Tmpfs"]["/tmp"]
    user = info["Config"]["User"]
    assert user.split(":")[0] not in ("", "0", "root")
    assert info["Config"]["Labels"][SANDBOX_LABEL] == SANDBOX_LABEL_VALUE
    assert info["Config"]["Labels"][OWNER_LABEL] == f"{socket.gethostname()}:{os.getpid()}"
    # Inside, the fork-server knows it is unprivileged and switched its root-only layers off.
    isolation = sandbox.isolation
    assert (isolation["root"], isolation["netns"], isolation["chroot"]) == (False, False, False)
    assert not isolation.get("uids")


def test_flags_hold_against_a_program(sandbox: DockerSandbox) -> None:
    probes = {
        "uid": ("import os\ndef f():\n    return os.getuid()", "ok"),
        "network": (
            "import socket\ndef f():\n    s = socket.socket()\n    s.settimeout(1)\n"
            "    s.connect(('1.1.1.1', 53))\n    return 'connected'",
            "exception:OSError",
        ),
        "rootfs": (
            "def f():\n    open('/var/tmp/x', 'w')\n    return 'wrote'",  # 1777 in the image
            "exception:OSError",
        ),
        "interfaces": (
            "import socket\ndef f():\n    return sorted(n for _, n in socket.if_nameindex())",
            "ok",
        ),
        "tmpfs_noexec": (
            "import os\ndef f():\n    p = os.path.abspath('x.sh')\n    open(p, 'w').write('#!/bin/sh\\n')\n"
            "    os.chmod(p, 0o755)\n    os.execv(p, [p])",
            "exception:PermissionError",
        ),
    }
    replies = {name: run(sandbox, program, "") for name, (program, _) in probes.items()}
    for name, (_, status) in probes.items():
        assert replies[name]["status"] == status, (name, replies[name])
    assert int(replies["uid"]["results"][0][1]) != 0
    assert replies["interfaces"]["results"][0][1] == "['lo']"


def test_container_start_is_far_slower_than_a_warm_run(sandbox: DockerSandbox) -> None:
    latencies = []
    for n in range(30):
        started = time.monotonic()
        reply = run(sandbox, "def f(x):\n    return x + 1", str(n))
        latencies.append(time.monotonic() - started)
        assert reply["results"] == [["ok", repr(n + 1)]]
    warm = statistics.median(latencies)
    print(
        f"container start {sandbox.start_latency_s * 1e3:.0f} ms, warm run p50 {warm * 1e3:.1f} ms"
    )
    # The reason the container is long-lived: one start costs many warm runs.
    assert warm * 5 < sandbox.start_latency_s


def submit_busy(
    sandbox: DockerSandbox, count: int, timeout: float = 5.0
) -> tuple[list[Future], list[str]]:
    sizes = [500_000 + 97 * i for i in range(count)]  # distinct outputs: a mix-up cannot pass
    futures = [
        sandbox.submit(
            {"op": "run", "program": BUSY_PROGRAM, "inputs": [str(n)], "timeout": timeout}
        )
        for n in sizes
    ]
    return futures, [busy_expected(n) for n in sizes]


def test_killed_container_is_replaced_and_in_flight_programs_rerun(docker_image: str) -> None:
    with DockerSandbox(make_config(docker_image, sweep_interval_s=0)) as sandbox:
        first = sandbox.container_name
        futures, expected = submit_busy(sandbox, 24)
        futures[0].result(timeout=60)  # the batch is running
        assert sum(not f.done() for f in futures) >= 4
        assert docker("kill", first).returncode == 0
        replies = [f.result(timeout=120) for f in futures]
        # Every request got its own result, exactly once, from whichever container ran it.
        assert [r["results"] for r in replies] == [[["ok", want]] for want in expected]
        assert len({r["id"] for r in replies}) == len(replies)
        assert sandbox.restarts == 1
        assert sandbox.retired_containers == [first]
        assert inspect(first) is None
        replacement = inspect(sandbox.container_name)
        assert replacement is not None and replacement["State"]["Running"]
        assert run(sandbox, "def f(x):\n    return x", "5")["results"] == [["ok", "5"]]
    assert inspect(sandbox.container_name) is None  # close() removed it


def test_wedged_container_is_detected_and_replaced(docker_image: str) -> None:
    config = make_config(docker_image, sweep_interval_s=0)
    with DockerSandbox(config, margin_s=0.5) as sandbox:
        wedged = sandbox.container_name
        assert docker("pause", wedged).returncode == 0
        # The watchdog's budget per request: 2 * timeout * calls + margin = 2.5 s.
        futures, expected = submit_busy(sandbox, 6, timeout=1.0)
        replies = [f.result(timeout=120) for f in futures]
        assert [r["results"] for r in replies] == [[["ok", want]] for want in expected]
        assert sandbox.restarts >= 1
        assert inspect(wedged) is None  # a paused container is removed, not left behind
        assert sandbox.container_name != wedged


def escape_program(body: str) -> str:
    """A program whose child leaves its session and runs ``body`` after ``f`` returned.

    ``f`` returns only once the child is in its own session: otherwise the zygote's kill of
    the program's process group could still reach it and nothing would have escaped.
    """
    return (
        "import os, time\ndef f():\n    ready, told = os.pipe()\n    if os.fork() == 0:\n"
        "        os.setsid()\n        os.write(told, b'x')\n"
        f"        {body}\n"
        "    os.read(ready, 1)\n    return 'escaped'"
    )


def test_escaped_process_gets_its_container_replaced(docker_image: str) -> None:
    config = make_config(docker_image, sweep_interval_s=0.3)
    escape = escape_program("while True:\n            pass")
    with DockerSandbox(config) as sandbox:
        first = sandbox.container_name
        assert escaped_processes(first, idle=True) == []
        assert run(sandbox, escape, "")["results"] == [["ok", "'escaped'"]]
        deadline = time.monotonic() + 30
        while sandbox.escapee_replacements == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sandbox.escapee_replacements == 1
        assert run(sandbox, "def f(x):\n    return x", "1")["results"] == [["ok", "1"]]
        assert inspect(first) is None
        assert escaped_processes(sandbox.container_name, idle=True) == []


def test_escapee_is_found_by_age_while_the_sandbox_stays_busy(docker_image: str) -> None:
    config = make_config(docker_image, timeout_s=0.25, sweep_interval_s=0)
    escape = escape_program("time.sleep(3600)")
    busy = {"op": "run", "program": BUSY_PROGRAM, "inputs": ["300000"], "timeout": 0.25}
    # Longest request budget: 2 * 0.25 + 0.5 = 1 s; the sweeper allows 1 s more (etimes: whole s).
    max_age_s = 2.0
    with DockerSandbox(config, margin_s=0.5) as sandbox:
        name = sandbox.container_name
        assert run(sandbox, escape, "", timeout=0.25)["results"] == [["ok", "'escaped'"]]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if escaped_processes(name, idle=False, max_age_s=max_age_s):
                break
            time.sleep(0.2)
        assert len(escaped_processes(name, idle=False, max_age_s=max_age_s) or []) == 1
        assert escaped_processes(name, idle=False) == []  # no age bound: it might be running
        outstanding = sandbox.submit(busy)
        assert sandbox.sweep_escapees() is True  # busy, yet older than any request may run
        assert outstanding.result(timeout=60)["status"] in ("ok", "timeout")
        assert sandbox.escapee_replacements == 1 and inspect(name) is None


def test_a_running_program_is_not_taken_for_an_escapee(docker_image: str) -> None:
    with DockerSandbox(make_config(docker_image, sweep_interval_s=0)) as sandbox:
        busy = sandbox.submit(
            {
                "op": "run",
                "program": "def f():\n    while True:\n        pass",
                "inputs": [""],
                "timeout": 3.0,
            }
        )
        deadline = time.monotonic() + 20
        while (
            not escaped_processes(sandbox.container_name, idle=True) and time.monotonic() < deadline
        ):
            time.sleep(0.05)  # until the program's process is up
        assert escaped_processes(sandbox.container_name, idle=True)  # it would look like one...
        assert escaped_processes(sandbox.container_name, idle=False) == []
        assert sandbox.sweep_escapees() is False  # ...but a request is outstanding
        assert busy.result(timeout=60)["status"] == "timeout"
        assert sandbox.restarts == 0 and sandbox.escapee_replacements == 0


def start_labelled_container(docker_image: str, owner: str) -> str:
    done = docker(
        "run", "--detach", "--rm", "--network", "none",
        "--label", f"{SANDBOX_LABEL}={SANDBOX_LABEL_VALUE}", "--label", f"{OWNER_LABEL}={owner}",
        docker_image, "python3", "-c", "import time; time.sleep(120)",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_leftover_containers_of_dead_owners_are_removed(docker_image: str) -> None:
    host = socket.gethostname()
    orphan = start_labelled_container(docker_image, f"{host}:{dead_pid()}")
    alive = start_labelled_container(docker_image, f"{host}:{os.getpid()}")
    elsewhere = start_labelled_container(docker_image, "some-other-host:1")
    try:
        with DockerSandbox(make_config(docker_image, sweep_interval_s=0)):
            assert inspect(orphan) is None  # a new sandbox cleans up after crashed ones
            assert inspect(alive) is not None
            assert inspect(elsewhere) is not None
        # An explicit owner (e.g. a dead node's executors) is removed whatever its host.
        assert len(remove_leftover_containers(owner="some-other-host:1")) == 1
        assert inspect(elsewhere) is None and inspect(alive) is not None
    finally:
        for container in (orphan, alive, elsewhere):
            docker("rm", "--force", container)


def test_missing_image_fails_fast_with_its_name(docker_engine: None) -> None:
    started = time.monotonic()
    with pytest.raises(SandboxError, match="azr-no-such-image:never"):
        DockerSandbox(make_config("azr-no-such-image:never"))
    assert time.monotonic() - started < 30


def test_test_image_is_labelled_with_its_input_hash(docker_image: str) -> None:
    script = REPO_ROOT / "deploy" / "docker" / "build_test_image.sh"
    shipped = [REPO_ROOT / "executor_pool" / name for name in FORKSERVER_FILES]
    inputs = script.read_bytes() + b"".join(path.read_bytes() for path in shipped)
    digest = hashlib.sha256(inputs).hexdigest()[:16]
    label = docker(
        "image", "inspect", "--format", '{{ index .Config.Labels "azr.inputs-hash" }}', docker_image
    )
    assert label.stdout.strip() == digest
    # Up to date: a second build is a no-op that keeps the same image.
    before = docker("image", "inspect", "--format", "{{.Id}}", docker_image).stdout
    rebuild = subprocess.run([str(script)], capture_output=True, text=True, timeout=120, check=True)
    assert "up to date" in rebuild.stderr
    assert docker("image", "inspect", "--format", "{{.Id}}", docker_image).stdout == before
    # The fork-server's files in the image are byte for byte the repository's.
    for path in shipped:
        shown = docker(
            "run", "--rm", "--network", "none", docker_image, "cat", f"/opt/azr/{path.name}"
        )
        assert shown.stdout == path.read_text(), path.name


@pytest.mark.slow
def test_shipped_dockerfile_builds_an_equivalent_image(docker_image: str) -> None:
    """executor.Dockerfile on the debootstrap rootfs (no registry here) matches the test image."""
    base = docker(
        "image", "inspect", "--format", '{{ index .Config.Labels "azr.base" }}', docker_image
    ).stdout.strip()
    assert base, "build_test_image.sh labels the test image with its base rootfs image"
    assert docker("image", "inspect", base).returncode == 0, f"{base} (imported by the build)"
    tag = "azr-executor:dockerfile-test"
    context = subprocess.run(
        ["tar", "-c", "deploy/docker/executor.Dockerfile",
         *(f"executor_pool/{name}" for name in FORKSERVER_FILES)],
        cwd=REPO_ROOT, capture_output=True, check=True,
    )  # fmt: skip
    build = subprocess.run(
        ["docker", "build", "--quiet", "--build-arg", f"BASE_IMAGE={base}",
         "--file", "deploy/docker/executor.Dockerfile", "--tag", tag, "-"],
        input=context.stdout, capture_output=True, timeout=300, check=False,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the engine here has no buildx
    )  # fmt: skip
    assert build.returncode == 0, build.stderr.decode()[-2000:]
    try:
        fields = "{{json .Config.User}} {{json .Config.Cmd}} {{json .Config.WorkingDir}}"
        shipped = docker("image", "inspect", "--format", fields, tag).stdout
        assert shipped == docker("image", "inspect", "--format", fields, docker_image).stdout
        with DockerSandbox(make_config(tag, sweep_interval_s=0)) as sandbox:
            reply = sandbox.call(
                {"op": "validate", "program": "def f(x):\n    return {x, -x}", "inputs": ["3"]}
            )
            assert reply["results"] == [["ok", "{-3, 3}"]]
            assert sandbox.hello["hash_seeds_differ"] is True
    finally:
        docker("image", "rm", tag)
