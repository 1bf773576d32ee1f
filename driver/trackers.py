"""Where each step's record goes besides Prometheus: metrics.jsonl, TensorBoard, W&B.

`Trackers.open(config, resumed_at)` opens the loggers of ``metrics.loggers``; ``log(record)``
writes one step record to each under the record's own names (``deduction/propose/valid_rate``
is that tag in TensorBoard and that key in W&B) at the record's ``step``.

One timeline after a resume: a run killed after step 6 whose newest checkpoint is step 4
starts again at step 5. Before anything is logged, `Trackers.open` sets the records past step 4
aside (``metrics.abandoned-<time>.jsonl`` beside the log, kept, never deleted), TensorBoard's
writer purges the events from step 5 on (``purge_step``), and W&B rewinds the same run to
step 4 (``resume_from``; the abandoned history stays archived in W&B). Each tracker therefore
holds exactly one record per step.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import secrets
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from rich.console import Console

from azr.config import AZRConfig

log = logging.getLogger(__name__)
console = Console(stderr=True)

WANDB_STATE_FILE = "wandb-run.json"
"""In the run directory: the W&B run's id and the last step handed to W&B (resume reads it)."""
TENSORBOARD_DIR = "tensorboard"


class Tracker(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a step record (all of them today; a string would be skipped)."""
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


class Trackers:
    """The run's trackers, written together (use as a context manager)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    @classmethod
    def open(cls, config: AZRConfig, resumed_at: int | None) -> Trackers:
        """The loggers of ``config.metrics.loggers``; ``resumed_at``: the step of the
        checkpoint a resumed run restarts from (None for a new run)."""
        run_dir = config.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        if resumed_at is not None:
            set_aside_after(run_dir / config.metrics.log_file, resumed_at)
        opened: list[Tracker] = []
        try:
            for name in dict.fromkeys(config.metrics.loggers):
                if name == "jsonl":
                    opened.append(JsonlTracker(run_dir / config.metrics.log_file))
                elif name == "tensorboard":
                    opened.append(TensorBoardTracker(run_dir / TENSORBOARD_DIR, resumed_at))
                elif name == "wandb":
                    opened.append(WandbTracker(config, resumed_at))
        except BaseException:
            cls(opened).close()
            raise
        return cls(opened)

    def log(self, record: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log(record)

    def close(self) -> None:
        for tracker in reversed(self.trackers):
            try:
                tracker.close()
            except Exception as exc:  # the others still close; the run's data is on disk
                log.warning("closing %s failed: %s", type(tracker).__name__, exc)

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def set_aside_after(path: Path, step: int) -> Path | None:
    """Move the records of ``path`` past ``step`` (and lines that are no record, such as a line
    cut short by a kill) into ``<stem>.abandoned-<UTC time>.jsonl`` beside it; the kept lines
    stay in order. Returns the side file, or None when nothing was past ``step``."""
    if not path.exists():
        return None
    kept: list[str] = []
    moved: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        if not line.strip():
            continue
        line = line if line.endswith("\n") else line + "\n"  # a line cut short by a kill
        line_step = _step_of_line(line)
        (kept if line_step is not None and line_step <= step else moved).append(line)
    if not moved:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    side = path.with_name(f"{path.stem}.abandoned-{stamp}{path.suffix}")
    n = 1
    while side.exists():  # two resumes within a second
        n += 1
        side = path.with_name(f"{path.stem}.abandoned-{stamp}-{n}{path.suffix}")
    side.write_text("".join(moved))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)  # the side file exists first: no record is ever only in memory
    steps = sorted(s for s in map(_step_of_line, moved) if s is not None)
    what = f"steps {steps[0]}-{steps[-1]}" if steps else "unreadable lines"
    console.print(
        f"[yellow]resumed at step {step}: {what} of the earlier attempt set aside in {side}[/]"
    )
    return side


def _step_of_line(line: str) -> int | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


class JsonlTracker:
    """``<run dir>/<metrics.log_file>``: one JSON object per step, flushed as written."""

    def __init__(self, path: Path):
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardTracker:
    """Event files in ``<run dir>/tensorboard``: one scalar per record entry at its step."""

    def __init__(self, log_dir: Path, resumed_at: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides the events at and after it from the earlier attempt.
        purge = resumed_at + 1 if resumed_at is not None else None
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in scalars(record).items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()  # a step is minutes apart at scale: the file stays current

    def close(self) -> None:
        self._writer.close()


def wandb_mode(setting: str) -> str:
    """The W&B mode of ``metrics.wandb_mode``: online/offline as set; auto = WANDB_MODE when set,
    else online when an API key is configured (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE or a
    netrc entry for the W&B host), else offline (no network needed)."""
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        return "online" if netrc.netrc(os.environ.get("NETRC")).authenticators(host) else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


class WandbTracker:
    """A W&B run in ``<run dir>/wandb``; its id and last step are kept in ``wandb-run.json`` so
    that ``--resume`` continues the same run (rewound to the checkpoint's step when the earlier
    attempt logged past it)."""

    def __init__(self, config: AZRConfig, resumed_at: int | None):
        import wandb

        self.state_file = config.run_dir / WANDB_STATE_FILE
        saved = _read_json(self.state_file) if resumed_at is not None else {}
        run_id = str(saved.get("id") or secrets.token_hex(4))
        mode = wandb_mode(config.metrics.wandb_mode)
        where: dict[str, Any] = {}
        if saved.get("id") and resumed_at is not None:
            # W&B drops a step at or below the last one it holds: steps logged past the
            # checkpoint are rewound (the abandoned ones stay archived in W&B).
            past = int(saved.get("last_step", -1)) > resumed_at
            where = {"resume_from": f"{run_id}?_step={resumed_at}"} if past else {"resume": "allow"}
        init = {
            "project": config.metrics.wandb_project,
            "entity": config.metrics.wandb_entity,
            "name": config.run_name,
            "id": run_id,
            "dir": str(config.run_dir),
            "mode": mode,
            "settings": wandb.Settings(console="off", silent=True, **_flush_often(wandb)),
        }
        self.last_step = int(saved.get("last_step", -1))
        try:
            self.run = wandb.init(**init, **where)
            if "resume_from" in where:
                self.last_step = resumed_at  # W&B holds the steps up to the checkpoint's
        except wandb.Error as exc:
            if "resume_from" not in where:
                raise
            # Rewinding is a W&B preview feature: without it the run continues, and W&B
            # ignores the resumed steps up to the last one it already holds.
            console.print(f"[yellow]W&B could not rewind run {run_id} ({exc}): resuming it[/]")
            self.run = wandb.init(**init, resume="allow")
        self.run.config.update(config.model_dump(mode="json"), allow_val_change=True)
        self._save()
        console.print(f"W&B run {run_id} ({mode}) in {config.run_dir / 'wandb'}")

    def log(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        # Saved before W&B sees the step: the file never claims less than W&B holds.
        self.last_step = max(self.last_step, step)
        self._save()
        self.run.log(scalars(record), step=step, commit=True)  # whole: written out now

    def close(self) -> None:
        import wandb

        self.run.finish()
        # finish() returns before W&B's service has written the run's files out; teardown
        # waits for it (the next init starts a new service).
        wandb.teardown()

    def _save(self) -> None:
        tmp = self.state_file.with_name(f".{self.state_file.name}.tmp")
        tmp.write_text(json.dumps({"id": self.run.id, "last_step": self.last_step}))
        os.replace(tmp, self.state_file)


def _flush_often(wandb: Any) -> dict[str, float]:
    """W&B writes an offline run's file every 15 s by default: a crash would lose the last
    steps there (metrics.jsonl has them). Every second, where this wandb has the setting."""
    field = "x_transaction_log_flush_interval"
    return {field: 1.0} if field in wandb.Settings.model_fields else {}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
