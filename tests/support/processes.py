"""Stopping what a test started: every process of one session (a subprocess started with
``start_new_session=True``) plus any whose command line names a marker (e.g. the Ray temp dir
the test gave it), and nothing else."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def session_members(session_id: int, also_matching: str | None = None) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getsid(pid) == session_id:
                found.append(pid)
            elif also_matching:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                if also_matching.encode() in cmdline:
                    found.append(pid)
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
    return [pid for pid in found if pid != os.getpid()]


def kill_session(
    session_id: int, also_matching: str | None = None, timeout_s: float = 30.0
) -> None:
    """SIGKILL every member (a crash: nothing gets to clean up), until none is left."""
    deadline = time.monotonic() + timeout_s
    while (pids := session_members(session_id, also_matching)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
