"""Where a run's log lines go: a quiet console, and every process's full output in `<run>/logs/`.

The console of `azr train` shows the progress bar, warnings and errors of azr's own code, and
the end summary. Everything else -- the INFO lines of vLLM, Ray and transformers, in the
driver and in every actor -- goes to one file per process under the run's ``logs/`` folder
(`driver.log`, `rollout-0.log`, `learner-1.log`, `executor-<node>-0.log`, `buffer.log`).
``--verbose`` keeps the old behaviour: everything on the console.

Actors learn the folder from ``AZR_LOG_DIR`` (set in the job's runtime env by the driver) and
call `route_process_output` first thing; without the variable (tests, `--verbose`) they leave
their output where Ray puts it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_DIR_ENV = "AZR_LOG_DIR"
OUR_PACKAGES = ("azr", "driver", "actors", "learner", "executor_pool", "buffer_service")
THIRD_PARTY = ("ray", "vllm", "transformers", "torch", "huggingface_hub", "filelock", "urllib3")
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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


class _OwnCode(logging.Filter):
    """Records of azr's own packages (the console shows only these, at WARNING and up)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in OUR_PACKAGES


def configure_driver_logging(log_dir: Path, verbose: bool) -> Path:
    """The driver's logging: everything to ``<log_dir>/driver.log``; on the console, only
    azr's warnings and errors (all records with ``verbose``). Returns the driver's log file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "driver.log"
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter(LINE_FORMAT))
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        to_console.setLevel(logging.WARNING)
        to_console.addFilter(_OwnCode())
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(to_file)
    root.addHandler(to_console)
    # Libraries that install their own console handlers (Ray does at import) send their
    # records through ours instead.
    for name in THIRD_PARTY:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True
    logging.captureWarnings(True)  # library warnings.warn lines: to the file, not the console
    if not verbose:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.disable_default_handler()
            hf_logging.enable_propagation()
        except ImportError:
            pass
    return path
