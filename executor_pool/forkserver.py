"""The sandbox fork-server: runs untrusted programs, one fresh forked process per program.

STDLIB ONLY (it also runs inside the executor container, without the azr package); start it as
``python3 -s -S -P forkserver.py --slots S`` with an (almost) empty environment. This file is
the front: it speaks the protocol below on stdin/stdout and sends every request to two zygotes,
A and B (``zygote.py``, different PYTHONHASHSEEDs), whose children run it (``program_runner.py``).
Invariants: only the small JSON messages below cross back; an input validates only when three
calls in two processes with different hash secrets agree. Rationale: docs/executor.md.

Wire protocol (newline-delimited JSON, UTF-8, one object per line)
    server -> client, first line:
        {"hello": 1, "pid": int, "slots": S, "hash_seeds_differ": true,
         "isolation": {"root": bool, "netns": bool, "chroot": bool, "uids": [slot uids]}}
    (not root, e.g. in a container: no netns/chroot/uids, only rlimits and a fresh cwd - the
    container is then the boundary.)
    client -> server, any number pipelined (at most S run at once, the rest queue):
        {"id": ID, "op": "validate", "program": str, "inputs": [str, ...], "timeout": float}
        {"id": ID, "op": "run", "program": str, "inputs": [str, ...], "timeout": float,
         "keep_going": bool}
        {"id": ID, "op": "check", "program": str, "test": str, "entry_point": str,
         "timeout": float}
        {"id": ID, "op": "ping"}
    server -> client, one line per request, in completion order (match on ID):
        {"id": ID, "status": STATUS, "results": [[STATUS, REPR_OR_NULL], ...], "wall_s": float}
    ``validate`` runs A (two calls per input) and B (one call); ``run`` runs one child, one call
    per input (scoring), stopping at the first failure unless ``keep_going``. ``timeout`` is per
    call. The request STATUS is the first non-"ok" per-input status, else "ok". REPR is the
    canonical repr of the output (``program_runner.canonical_repr``). Per-input STATUS values:
    ok, timeout, memory, exception:<Type>, nondeterministic, output_too_large,
    non_literal_output, non_literal_input, no_entry, crash:<how>, skipped (not run after an
    earlier failure); request-level only: bad_request. A ``check`` job runs one child: the program, then the
    test in its namespace, then ``check(<entry_point>)``; one result (``bad_test:<Type>`` when the
    test does not compile), its ``timeout`` bounding the whole check.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import sys
from types import ModuleType  # already imported by json (no start-up cost)


def _import_zygote() -> ModuleType:
    """The sibling ``zygote.py`` (which imports the sibling ``program_runner.py``).

    Imported with the ``executor_pool`` package on the host (``executor_pool.forkserver``);
    run as a script (``-P``: the script's directory is not on ``sys.path``) from this file's
    own directory, which is on ``sys.path`` only for this import: nothing else, and no
    program, imports from it; nor is either module left in ``sys.modules`` under a name a
    program could import. The zygotes run this at start-up, before they fork.
    """
    if __package__:
        from executor_pool import zygote

        return zygote
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.append(here)
    try:
        import zygote
    finally:
        if sys.path and sys.path[-1] == here:
            del sys.path[-1]
        sys.modules.pop("zygote", None)
        sys.modules.pop("program_runner", None)
    return zygote


_zygote = _import_zygote()
PROTOCOL_VERSION = 1


# ----------------------------------------------------------------------------- front
def _acquire_uid_block(lock_dir: str, size: int) -> tuple[int, object] | None:
    """Lock a block of ``size`` uids no other fork-server on this machine uses (flock)."""
    import fcntl

    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    for block in range(4096):
        handle = open(os.path.join(lock_dir, f"block-{block}.lock"), "a")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return 1_000_000 + block * 1024, handle
    return None


class _Request:
    def __init__(self, message: dict, started: float) -> None:
        self.message, self.started = message, started
        self.parts: dict[str, list] = {}
        self.waiting = 0


def _combine(request: _Request) -> tuple[str, list]:
    """Merge the zygotes' per-input results: A's statuses first, then B's, then A == B."""
    a = request.parts["a"]
    b = request.parts.get("b")
    merged = []
    for index, (status_a, value_a) in enumerate(a):
        if b is not None and status_a == "ok":
            status_b, value_b = b[index]
            if status_b != "ok":
                status_a, value_a = status_b, None
            elif value_b != value_a:
                status_a, value_a = "nondeterministic", None
        merged.append([status_a, value_a])
    first_bad = next((status for status, _ in merged if status != "ok"), "ok")
    return first_bad, merged


def front_main(args: dict) -> None:
    """Speak the wire protocol on stdin/stdout; dispatch runs to the two zygotes."""
    import shutil
    import subprocess
    import tempfile
    import time

    slots = args["slots"]
    # A fresh directory per server, even under a --workdir a previous (killed) server used.
    if args["workdir"]:
        os.makedirs(args["workdir"], mode=0o711, exist_ok=True)
    workroot = tempfile.mkdtemp(prefix=f"fs{os.getpid()}-", dir=args["workdir"])
    os.chmod(workroot, 0o711)
    uid_base = None
    if os.geteuid() == 0:
        block = _acquire_uid_block(args["uid_lock_dir"], 2 * slots)
        uid_base = block[0] if block else None
    # Two zygotes with different hash seeds: validation compares their outputs.
    seed_a = int.from_bytes(os.urandom(4), "little") % 4_000_000_000 + 1
    seed_b = seed_a % 4_000_000_000 + 1
    zygotes = {}
    for name, seed, offset in (("a", seed_a, 0), ("b", seed_b, slots)):
        uids = [] if uid_base is None else [uid_base + offset + s for s in range(slots)]
        zygote_args = json.dumps(
            {
                "preload": args["preload"],
                "site_preload": args["site_preload"],
                "site_path": args["site_path"],
                "uids": uids,
                "slots": slots,
                "workroot": workroot,
            }
        )
        process = subprocess.Popen(
            [sys.executable, "-s", "-S", "-P", os.path.abspath(__file__), "--zygote", zygote_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # LD_BIND_NOW: libc symbols the children call first (setsid, chroot, setresuid ...)
            # are bound in the zygote, not by each child writing (copying) the GOT pages.
            env={"PYTHONHASHSEED": str(seed), "LD_BIND_NOW": "1"},
            close_fds=True,
        )
        hello = json.loads(process.stdout.readline())
        os.set_blocking(process.stdin.fileno(), False)
        zygotes[name] = {"proc": process, "hello": hello, "uids": uids, "out": b""}
    isolation = {
        **zygotes["a"]["hello"]["isolation"],
        "uids": zygotes["a"]["uids"] + zygotes["b"]["uids"],
    }
    seeds_differ = zygotes["a"]["hello"]["hash"] != zygotes["b"]["hello"]["hash"]
    hello = {
        "hello": PROTOCOL_VERSION,
        "pid": os.getpid(),
        "slots": slots,
        "isolation": isolation,
        "hash_seeds_differ": seeds_differ,
    }
    out = sys.stdout.buffer
    out.write((json.dumps(hello) + "\n").encode())
    out.flush()
    if not seeds_differ:
        sys.exit("zygotes share a hash secret: the determinism check would be void")

    # One thread, one selector: requests in on stdin, job results in from the zygotes, replies
    # out in completion order; writes to a zygote never block (see ``flush``).
    selector = selectors.DefaultSelector()
    stdin = _zygote.LineReader(0, 1 << 62)
    selector.register(0, selectors.EVENT_READ, "stdin")
    for name, zygote in zygotes.items():
        zygote["reader"] = _zygote.LineReader(zygote["proc"].stdout.fileno(), 1 << 62)
        selector.register(zygote["reader"].fd, selectors.EVENT_READ, name)
    jobs: dict[int, tuple[_Request, str]] = {}
    job_counter = [0]

    def reply(message: dict) -> None:
        out.write((json.dumps(message) + "\n").encode())
        out.flush()

    def send(name: str, payload: dict) -> None:
        zygote = zygotes[name]
        zygote["out"] += (json.dumps(payload) + "\n").encode()
        flush(name)

    def flush(name: str) -> None:
        """Write what the zygote's stdin pipe takes; poll for writability while data is left."""
        zygote = zygotes[name]
        fd = zygote["proc"].stdin.fileno()
        with contextlib.suppress(BlockingIOError):
            zygote["out"] = zygote["out"][os.write(fd, zygote["out"]) :] if zygote["out"] else b""
        watched = fd in selector.get_map()
        if zygote["out"] and not watched:
            selector.register(fd, selectors.EVENT_WRITE, "w" + name)
        elif not zygote["out"] and watched:
            selector.unregister(fd)

    def launch(request: _Request) -> None:
        message = request.message
        timeout = min(float(message.get("timeout", args["timeout"])), args["max_timeout"])
        plan = [("a", 2), ("b", 1)] if message["op"] == "validate" else [("a", 1)]
        extra = {}
        if message["op"] == "check":
            # One result (the check); its one "input" only sizes the zygote's bookkeeping.
            extra = {
                "inputs": [""],
                "check": {"test": message["test"], "entry_point": message["entry_point"]},
            }
        for name, repeat in plan:
            job_counter[0] += 1
            job = job_counter[0]
            jobs[job] = (request, name)
            request.waiting += 1
            send(name, {
                "job": job,
                "program": message["program"],
                "inputs": message.get("inputs", []),
                "repeat": repeat,
                "timeout": timeout,
                "keep_going": bool(message.get("keep_going", False)) and repeat == 1,
                "memory_mb": args["memory_mb"],
                "max_output_chars": args["max_output_chars"],
                "workdir": os.path.join(workroot, f"{name}{job}"),
                **extra,
            })  # fmt: skip

    def accept(line: bytes) -> None:
        try:
            message = json.loads(line)
            request_id = message["id"]
        except Exception:
            reply({"id": None, "status": "bad_request", "results": []})
            return
        op = message.get("op")
        if op == "ping":
            reply({"id": request_id, "status": "ok", "results": []})
            return
        ok = (
            op in ("validate", "run", "check")
            and isinstance(message.get("program"), str)
            and len(message["program"]) <= args["max_program_chars"]
            and isinstance(message.get("timeout", 1.0), (int, float))
        )
        if op == "check":
            entry = message.get("entry_point")
            ok = (
                ok
                and isinstance(message.get("test"), str)
                and len(message["program"]) + len(message["test"]) <= args["max_program_chars"]
                and isinstance(entry, str)
                and entry.isidentifier()
            )
        else:
            ok = (
                ok
                and isinstance(message.get("inputs"), list)
                and all(isinstance(text, str) for text in message["inputs"])
            )
        if not ok:
            reply({"id": request_id, "status": "bad_request", "results": []})
            return
        launch(_Request(message, time.monotonic()))  # each zygote queues what it cannot run yet

    def complete(line: bytes) -> None:
        message = json.loads(line)
        request, name = jobs.pop(message["job"])
        request.parts[name] = message["results"]
        request.waiting -= 1
        if request.waiting:
            return
        status, results = _combine(request)
        wall = round(time.monotonic() - request.started, 6)
        reply({"id": request.message["id"], "status": status, "results": results, "wall_s": wall})

    try:
        while True:
            for key, _ in selector.select():
                if key.data == "stdin":
                    for line in stdin.read_lines():
                        if line.strip():
                            accept(line)
                    if stdin.eof:
                        return
                elif key.data.startswith("w"):
                    flush(key.data[1:])
                else:
                    reader = zygotes[key.data]["reader"]
                    for line in reader.read_lines():
                        complete(line)
                    if reader.eof:
                        sys.exit(f"zygote {key.data} died")
    finally:
        for zygote in zygotes.values():
            zygote["proc"].kill()
            zygote["proc"].wait()
        shutil.rmtree(workroot, ignore_errors=True)


def _parse_cli(argv: list[str]) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=2, help="programs run in parallel")
    parser.add_argument("--timeout", type=float, default=10.0, help="default seconds per call")
    parser.add_argument("--max-timeout", type=float, default=60.0, help="cap on request timeouts")
    parser.add_argument("--memory-mb", type=int, default=1024, help="RLIMIT_AS per child")
    parser.add_argument("--max-output-chars", type=int, default=4000)
    parser.add_argument("--max-program-chars", type=int, default=200_000, help="else bad_request")
    parser.add_argument("--workdir", default=None, help="parent of the per-run directories")
    parser.add_argument("--uid-lock-dir", default="/tmp/azr-forkserver-uids")
    parser.add_argument(
        "--preload", default=_zygote.DEFAULT_PRELOAD, help="modules the zygotes import"
    )
    parser.add_argument(
        "--site-preload", default="", help="third-party modules the zygotes import as well"
    )
    parser.add_argument(
        "--site-path",
        default="",
        help="where --site-preload modules live (os.pathsep-separated; default: the "
        "interpreter's site-packages)",
    )
    return vars(parser.parse_args(argv))


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # host gone: die quietly
    if len(sys.argv) == 3 and sys.argv[1] == "--zygote":
        _zygote.zygote_main(json.loads(sys.argv[2]))
    else:
        front_main(_parse_cli(sys.argv[1:]))
