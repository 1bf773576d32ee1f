"""Each actor process's output in its own file under the run's ``logs/`` folder.

Actors learn the folder from ``AZR_LOG_DIR`` (set in the job's runtime env by the driver,
`driver.console`) and call `route_process_output` first thing: `rollout-0.log`,
`learner-1.log`, `executor-<node>-0.log`, `buffer.log`. Without the variable (tests,
``azr train --verbose``) their output stays where Ray puts it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOG_DIR_ENV = "AZR_LOG_DIR"


def route_process_output(name: str) -> Path | None:
    """Send this process's stdout, stderr and log records to ``$AZR_LOG_DIR/<name>.log``.

    File-descriptor level (``dup2``), so C++ prints and child processes land there too.
    Returns the file, or None when no log folder was set (output stays where it was).
    """
    folder = os.environ.get(LOG_DIR_ENV)
    if not folder:
        return None
    path = Path(folder) / f"{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return path
