"""The fork-server's zygotes: warm parents that fork one sandboxed child per program run.

STDLIB ONLY, like ``forkserver.py``, which starts each zygote (``forkserver.py --zygote``) and
imports this file from its own directory. A zygote reads jobs (one JSON object per line) on
stdin, queues them on its slots, forks a child per job (a program on its inputs, or a program and its tests) and replies ``{"job", "results"}`` on
stdout. Invariants: nothing of a program runs in the zygote (it only compiles and parses); a
child never runs a program without its sandbox; a slot and its uid are reused only after every
process of that uid is killed and reaped. Rationale and isolation layers: docs/executor.md.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import gc
import json
import os
import select
import signal
import sys

if __package__:
    from executor_pool import program_runner as _runner
else:  # imported by forkserver.py from its own directory (on sys.path only for that import)
    import program_runner as _runner

# Common pure modules imported before forking: the child runs chrooted in an empty directory,
# so these are the only modules a program can import (and importing them costs nothing).
DEFAULT_PRELOAD = (
    "math,cmath,collections,itertools,functools,operator,string,re,heapq,bisect,copy,"
    "fractions,decimal,numbers,textwrap,unicodedata,array,enum,typing,dataclasses,json,"
    "encodings.utf_16,encodings.utf_32,encodings.latin_1,encodings.ascii,"
    "encodings.unicode_escape,encodings.raw_unicode_escape,encodings.cp1252,encodings.idna,"
    "encodings.utf_8_sig,encodings.shift_jis,encodings.cp437,encodings.hex_codec,encodings.rot_13"
)

# The child's protocol lines without their newline, as the zygote's line reader splits them.
_PROGRESS_LINE = _runner.PROGRESS_LINE.rstrip(b"\n")
_END_LINE = _runner.END_LINE.rstrip(b"\n")


# ----------------------------------------------------------------------------- child
def _child_main(job: dict, out_fd: int, isolation: dict, devnull: int) -> None:
    """Body of a forked child: isolate, run, exit. Never returns.

    Every page this process writes is a copy-on-write fault (docs/executor.md), so the setup
    only makes system calls with arguments the zygote prepared: the rlimits in
    ``job["limits"]``; no new privileges, an empty environment and the network namespace are
    inherited from the zygote.
    """
    code = 0
    try:
        os.setsid()
        for fd in (0, 1, 2):  # stdio first: devnull itself may be fd 3
            os.dup2(devnull, fd)
        if out_fd != 3:
            os.dup2(out_fd, 3)
        os.closerange(4, 65536)
        setrlimit = _RESOURCE.setrlimit
        for which, value in job["limits"]:
            setrlimit(which, (value, value))
        if isolation["chroot"]:
            os.chroot(job["workdir"])
            os.chdir("/")
        else:
            os.chdir(job["workdir"])
        uid = job["uid"]
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        # After the uid change, which clears the parent-death signal: die with the zygote
        # (and do not run at all if it already died).
        _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != job["zygote_pid"]:
            raise OSError("zygote gone")
    except BaseException:
        os._exit(71)  # the zygote reports crash:setup; never run without the sandbox
    try:
        (_runner.run_check if job.get("check") else _runner.run_program)(job, 3)
    except BaseException:
        code = 72
    os._exit(code)


def _child_limits(job: dict) -> list[tuple[int, int]]:
    """The rlimits of a job's child as (resource, value) pairs, soft = hard."""
    calls = max(1, len(job["inputs"])) * job["repeat"]
    limits = [
        (_RESOURCE.RLIMIT_AS, job["memory_mb"] << 20),
        (_RESOURCE.RLIMIT_CPU, int(job["timeout"] * calls) + 2),
        (_RESOURCE.RLIMIT_FSIZE, 1 << 20),
        (_RESOURCE.RLIMIT_NOFILE, 16),
        (_RESOURCE.RLIMIT_CORE, 0),
    ]
    if job["uid"] is not None:
        limits.append((_RESOURCE.RLIMIT_NPROC, 8))  # per real uid: only this slot's processes
    return limits


def _import_site_modules(names: str, path: str) -> None:
    """Import third-party modules (``names``, comma-separated) from ``path`` (os.pathsep-
    separated; default: this interpreter's site-packages), which is on ``sys.path`` only while
    they import: a program can use them, and nothing else from there."""
    modules = [name for name in names.split(",") if name]
    if not modules:
        return
    if path:
        dirs = path.split(os.pathsep)
    else:
        import site

        dirs = site.getsitepackages()
    added = [d for d in dirs if d and d not in sys.path]
    sys.path.extend(added)
    try:
        for name in modules:
            __import__(name)
    finally:
        for d in added:
            sys.path.remove(d)


# ----------------------------------------------------------------------------- zygote
_LIBC = None
_RESOURCE = None
CLONE_NEWNET = 0x40000000


def _quitter(*_args: object) -> None:
    raise SystemExit(None)


def _kill_all_of(uid: int) -> None:
    """``kill(-1, SIGKILL)`` as ``uid``: dooms every process of ``uid`` at once.

    With real = effective = uid, ``kill(-1)`` reaches only processes whose real or saved uid is
    ``uid`` (the kernel blocks forks while it walks the process list); the saved uid 0 lets
    the zygote return to root afterwards.
    """
    os.setresuid(uid, uid, 0)
    try:
        if os.getresuid() == (uid, uid, 0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
    finally:
        os.setresuid(0, 0, 0)


def _orphans_of_uid(uid: int, own: set[int]) -> list[int]:
    """Our direct children, other than the run children in ``own``, whose real uid is ``uid``
    (zombies included)."""
    pids = [pid for pid in _children() if pid not in own]
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                uid_line = next(line for line in status if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if int(uid_line.split()[1]) == uid:
            found.append(pid)
    return found


def _children() -> list[int]:
    """Pids of this process's direct children (raw reads: this runs after every program)."""
    try:
        fd = os.open(f"/proc/self/task/{os.getpid()}/children", os.O_RDONLY)
    except OSError:
        return []
    try:
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
    finally:
        os.close(fd)
    return [int(pid) for pid in data.split()]


def _sweep_uid(uid: int | None, own: set[int], reap: object) -> None:
    """Kill and reap every process a finished program left behind under the slot ``uid``.

    Call it after the program's own process is reaped. The zygote is a child subreaper and an
    unprivileged process cannot leave its ancestry, so everything the program spawned that is
    still alive is then our direct child or a descendant of one: when no direct child has
    ``uid``, nothing is left (the common case costs one read of our children list).
    """
    if uid is None or uid < 1000 or os.geteuid() != 0:
        return
    for attempt in range(4000):  # about 2 s at most
        if not _orphans_of_uid(uid, own):
            return
        if attempt % 20 == 0:
            _kill_all_of(uid)  # again now and then, for a fork that raced the first kill
        reap()  # type: ignore[operator]
        select.select([], [], [], 0.0005)
    sys.stderr.write(f"zygote: processes of uid {uid} outlived the sweep\n")


class LineReader:
    """Non-blocking line splitter over a pipe fd, with a cap on buffered bytes."""

    def __init__(self, fd: int, cap: int) -> None:
        self.fd, self.cap, self.buf, self.total, self.eof = fd, cap, b"", 0, False

    def read_lines(self) -> list[bytes]:
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            self.eof = True
            return []
        self.total += len(chunk)
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return lines

    @property
    def overflow(self) -> bool:
        return self.total > self.cap


def _exit_status(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        return "timeout" if sig == signal.SIGXCPU else f"crash:signal{sig}"
    return f"crash:exit{os.WEXITSTATUS(wait_status)}"


class _Run:
    """One forked child of the zygote and what it reported so far."""

    def __init__(self, job: dict, pid: int, reader: LineReader, now: float) -> None:
        self.job, self.pid, self.reader = job, pid, reader
        self.raw_results: list[bytes] = []
        self.call_s = job["timeout"]
        self.deadline = now + self.call_s + 0.05
        # Progress lines restart the per-call clock; this caps a program that forges them.
        calls = max(1, len(job["inputs"])) * job["repeat"]
        self.hard_deadline = now + self.call_s * calls + 0.1
        self.status_if_killed = "timeout"
        self.done = False


def zygote_main(args: dict) -> None:
    """Warm parent: read jobs on stdin, fork a child each, reply with per-input results."""
    global _LIBC, _RESOURCE
    import ctypes
    import resource
    import time

    _RESOURCE = resource
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)  # die with the front
    _LIBC.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of programs come back to us
    # PR_SET_NO_NEW_PRIVS, inherited by every child: no setuid binary can raise a program's
    # privileges again (the zygote itself never execs).
    if _LIBC.prctl(38, 1, 0, 0, 0) != 0:
        sys.exit("zygote: PR_SET_NO_NEW_PRIVS failed")
    os.environ.clear()  # children inherit an empty environment (the hash seed is in use)
    for name in args["preload"].split(","):
        if name:
            __import__(name)
    _import_site_modules(args.get("site_preload", ""), args.get("site_path", ""))
    builtins.exit = builtins.quit = _quitter  # -S leaves them out; keep exit() an exception
    gc.collect()
    gc.freeze()  # children never scan (and so never copy-on-write) the zygote's objects
    # Hand free heap pages back: fork copies a page-table entry for every resident page.
    _LIBC.malloc_trim(0)
    is_root = os.geteuid() == 0
    netns = is_root and _LIBC.unshare(CLONE_NEWNET) == 0
    isolation = {
        "root": is_root,
        "netns": netns,
        "chroot": is_root,
        "uids": args["uids"],  # the slot uids of this zygote (empty when not root)
    }
    devnull = os.open(os.devnull, os.O_RDWR)
    # As root every child chroots into this one empty directory that only root may write (the
    # program runs as a slot uid without capabilities), so it stays empty and nothing carries
    # over from one run to the next - without a mkdir/chown/rmdir per run on the host's disk.
    chroot_dir = None
    if isolation["chroot"]:
        chroot_dir = os.path.join(args["workroot"], "chroot-" + str(os.getpid()))
        os.mkdir(chroot_dir, 0o555)
        os.chmod(chroot_dir, 0o555)  # the umask must not matter
    live_pids: set[int] = set()
    exit_statuses: dict[int, int] = {}
    zygote_pid = os.getpid()

    def reap() -> None:
        """Collect every exited child (orphans come to us as their subreaper), keeping the
        statuses of our own run children for ``finish``."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in live_pids:
                exit_statuses[pid] = wait_status

    for uid in args["uids"] if is_root else ():
        _kill_all_of(uid)  # leftovers of an earlier server that had these uids
    out = sys.stdout.buffer
    out.write(
        (
            json.dumps({"hello": 1, "hash": hash("azr-probe"), "isolation": isolation}) + "\n"
        ).encode()
    )
    out.flush()

    poller = select.epoll()  # plain epoll: no per-event objects in the hot loop
    stdin = LineReader(0, 1 << 62)
    poller.register(0, select.EPOLLIN)
    runs: dict[int, _Run] = {}  # by the read end of the run's result pipe
    # The zygote owns its slots: jobs queue here and the next one forks the moment a child is
    # reaped, without a round trip through the front and the host (under load every hop waits
    # for a CPU). A slot (and its uid) is reused only after ``finish`` swept its uid.
    free_slots = list(range(args["slots"]))[::-1]
    queued: collections.deque[dict] = collections.deque()

    def start_queued() -> None:
        while queued and free_slots:
            job = queued.popleft()
            job["slot"] = free_slots.pop()
            job["uid"] = args["uids"][job["slot"]] if args["uids"] else None
            job["zygote_pid"] = zygote_pid
            job["limits"] = _child_limits(job)
            start(job)

    def fork_when_possible() -> int:
        """fork(), waiting out EAGAIN for up to a second: right after a fork bomb the process
        table is still full of killed processes that only reaping frees (a container's pids
        limit); failing the next, innocent jobs instead would make one bomb cost many."""
        deadline = time.monotonic() + 1.0
        while True:
            try:
                return os.fork()
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                reap()
                time.sleep(0.01)

    def start(job: dict) -> None:
        try:
            if isolation["chroot"]:
                job["workdir"] = chroot_dir  # read-only for the program: it stays empty
            else:
                os.mkdir(job["workdir"], 0o700)
            _runner.prepare_job(job)
            read_fd, write_fd = os.pipe()
            pid = fork_when_possible()
        except OSError as error:  # no directory, no fds, no processes: fail this job only
            results = [[f"crash:setup:{error.errno}", None]] + [["skipped", None]] * (
                len(job["inputs"]) - 1
            )
            out.write((json.dumps({"job": job["job"], "results": results}) + "\n").encode())
            out.flush()
            if not isolation["chroot"]:
                with contextlib.suppress(OSError):
                    os.rmdir(job["workdir"])
            free_slots.append(job["slot"])
            return
        if pid == 0:
            os.close(read_fd)
            _child_main(job, write_fd, isolation, devnull)
        live_pids.add(pid)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        cap = 256 * len(job["inputs"]) + job["max_output_chars"] * len(job["inputs"]) * 2 + 4096
        run = _Run(job, pid, LineReader(read_fd, cap), time.monotonic())
        runs[read_fd] = run
        poller.register(read_fd, select.EPOLLIN)

    def finish(run: _Run) -> None:
        fd = run.reader.fd
        poller.unregister(fd)
        os.close(fd)
        del runs[fd]
        # Always kill: an "end" line may be forged by a program that then keeps running.
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError):
                kill(run.pid, signal.SIGKILL)
        wait_status = exit_statuses.pop(run.pid, None)
        if wait_status is None:
            wait_status = os.waitpid(run.pid, 0)[1]
        live_pids.discard(run.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # whatever is left in its session
        _sweep_uid(run.job.get("uid"), live_pids, reap)
        reap()
        if not isolation["chroot"]:
            _remove_tree(run.job["workdir"])
        free_slots.append(run.job["slot"])  # swept: the next program may have this uid
        results = []
        for line in run.raw_results:
            try:
                message = json.loads(line)
                results.append([str(message["s"])[:80], message["v"]])
            except Exception:
                run.done, run.status_if_killed = False, "crash:protocol"
                break
        if not run.done:
            how = (
                run.status_if_killed
                if run.status_if_killed != "exited"
                else _exit_status(wait_status)
            )
            results.append([how, None])
        n_inputs = len(run.job["inputs"])
        results += [["skipped", None]] * (n_inputs - len(results))
        reply = {"job": run.job["job"], "results": results[:n_inputs]}
        out.write((json.dumps(reply) + "\n").encode())
        out.flush()

    while True:
        reap()  # orphans that died since the last sweep (they count against RLIMIT_NPROC)
        now = time.monotonic()
        wait = min((r.deadline for r in runs.values()), default=now + 3600) - now
        for fd, _ in poller.poll(max(0.0, wait)):
            if fd == 0:
                queued.extend(json.loads(line) for line in stdin.read_lines())
                if stdin.eof:
                    for leftover in list(runs.values()):
                        leftover.status_if_killed = "crash:shutdown"
                        finish(leftover)
                    return
                continue
            run = runs.get(fd)
            if run is None:  # finished earlier in this batch
                continue
            # Lines stay bytes while the child lives: every page the zygote writes now is a
            # copy-on-write fault (the child shares it); they are parsed after it is reaped.
            for line in run.reader.read_lines():
                if line == _END_LINE:
                    run.done = True
                    break
                if line != _PROGRESS_LINE:
                    run.raw_results.append(line)
                run.deadline = min(time.monotonic() + run.call_s + 0.05, run.hard_deadline)
            if run.reader.overflow:
                run.status_if_killed = "crash:protocol"
            if run.done or run.reader.eof or run.status_if_killed != "timeout":
                if run.reader.eof and not run.done and run.status_if_killed == "timeout":
                    run.status_if_killed = "exited"
                finish(run)
        now = time.monotonic()
        for run in [r for r in runs.values() if r.deadline <= now]:
            finish(run)
        start_queued()


def _remove_tree(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        import shutil  # rare (the program wrote files): import only when needed

        shutil.rmtree(path, ignore_errors=True)
