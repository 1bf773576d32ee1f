"""`azr train` as users run it, for the tests that stop, kill and resume real runs.

A `Train` is one `azr train` process in a session of its own (its output in a log file beside
the run directory), as a terminal starts it: stopped with Ctrl-C (SIGINT to the process
group), crashed with SIGKILL (every process of its session and every Ray process under its
Ray temp dir, so that nothing gets to clean up) or left to finish. W&B runs offline: no key
anywhere (``metrics.wandb_mode=auto`` must choose offline and need no network).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from driver.checkpoint import STATE_FILE, checkpoint_dir
from driver.trackers import WANDB_STATE_FILE
from support import MODEL_CACHE, REPO_ROOT
from support.processes import kill_session

AZR = Path(sys.executable).parent / "azr"
PROCESS_TIMEOUT_S = 900
"""Hang guard for one `azr train` process (two shared cores: start-up takes a minute)."""
WANDB_SETTINGS = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL")


@dataclass
class Train:
    """One `azr train` process in a session (process group) of its own."""

    run_dir: Path
    log: Path
    ray_tmp: str
    """The Ray temp dir it was given: its Ray processes name it on their command lines."""
    process: subprocess.Popen
    output: str = field(default="", init=False)
    """Everything it printed (stdout and stderr), once it has ended."""

    @classmethod
    def start(cls, run_dir: Path, name: str, ray_tmp: str, *args: str) -> Train:
        log = run_dir.parent / f"{name}.out"
        env = {
            k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and k not in WANDB_SETTINGS
        }
        env.update(
            COLUMNS="1000",  # rich wraps long paths at the terminal width otherwise
            NETRC=os.devnull,  # no W&B key in a netrc either
            RAY_TMPDIR=ray_tmp,
        )
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(AZR), "train", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,  # its Ray processes share its session: all can go
            )
        return cls(run_dir, log, ray_tmp, process)

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"azr train exited ({self.process.returncode}) before {what}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {PROCESS_TIMEOUT_S} s:\n{self.tail()}")
            time.sleep(0.1)

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the whole process group, as a terminal sends it."""
        os.killpg(self.process.pid, signal.SIGINT)

    def crash(self) -> None:
        """SIGKILL to every process of the run at once: nothing gets to clean up."""
        self.kill()
        self.output = self.log.read_text(errors="replace")

    def finish(self) -> int:
        """Wait for the process to end by itself; returns its exit code."""
        try:
            code = self.process.wait(timeout=PROCESS_TIMEOUT_S)
        finally:
            self.kill()
        self.output = self.log.read_text(errors="replace")
        return code

    def kill(self) -> None:
        """Whatever of the run is still alive (the Ray processes it started)."""
        kill_session(self.process.pid, also_matching=self.ray_tmp)
        self.process.wait(timeout=60)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def train_to_the_end(run_dir: Path, name: str, ray_tmp: str, *args: str) -> Train:
    run = Train.start(run_dir, name, ray_tmp, *args)
    code = run.finish()
    assert code == 0, run.output[-3000:]
    return run


def records(run_dir: Path) -> list[dict]:
    """The step records of metrics.jsonl, steps 1, 2, ... (not the step-0 evaluation of a fresh
    run, not a last line a kill cut short)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    return [record for record in lines if record["step"] > 0]


def said(run: Train, text: str) -> bool:
    """Whether the process printed `text` (whitespace aside: the console may wrap lines)."""
    return "".join(text.split()) in "".join(run.output.split())


def whole_checkpoint(run_dir: Path, step: int) -> Callable[[], bool]:
    """Whether the checkpoint of `step` is whole (its driver state is written last)."""
    return lambda: (checkpoint_dir(run_dir, step) / STATE_FILE).exists()


def hidden_leftovers(run_dir: Path) -> list[str]:
    """What a save left half-done in the checkpoints folder (``.step_N.tmp``)."""
    return sorted(p.name for p in (run_dir / "checkpoints").glob(".*"))


def wandb_last_step(run_dir: Path) -> int:
    """The last step the run handed to W&B, by its own state file (-1 before the first)."""
    path = run_dir / WANDB_STATE_FILE
    return int(json.loads(path.read_text())["last_step"]) if path.exists() else -1


# ----------------------------------------------------------------------------- the sync chain
SYNC_STEPS = 5
"""Steps of the shared sync runs: the stop lands in step 1 or 2, the resumed run checkpoints
the step after it and is killed one step later (step 3 or 4), the last resume runs the rest."""
SYNC_RUN = (
    f"selfplay.steps={SYNC_STEPS}",
    "selfplay.batch_size=4",
    "selfplay.mc_samples=3",
    "selfplay.eval_every=1",
    "selfplay.eval_size=4",
    "learner.num_workers=1",
    "checkpoint.keep_last=10",  # every checkpoint stays, to compare each with the reference
    "metrics.loggers=[jsonl,tensorboard,wandb]",
    f"model.cache_dir={MODEL_CACHE}",
)
"""The config of the reference run and of the chain (the tiny config, smaller)."""


@dataclass
class Chain:
    """One run directory taken through Ctrl-C, a resume, a SIGKILL and a resume to the end,
    with what each stage left as it left it (later stages change the run directory)."""

    run_dir: Path
    stopped: Train | None = None
    stopped_code: int | None = None
    stopped_records: list[dict] = field(default_factory=list)
    """metrics.jsonl when the Ctrl-C'd process had exited."""
    newest_after_stop: Path | None = None
    leftovers_after_stop: list[str] = field(default_factory=list)
    resumed: Train | None = None
    killed_records: list[dict] = field(default_factory=list)
    """metrics.jsonl as the SIGKILL of the resumed process left it."""
    killed_at: int | None = None
    """Step of the newest whole checkpoint when the resumed process was SIGKILLed."""
    torn: Path | None = None
    finished: Train | None = None

    @property
    def stopped_at(self) -> int:
        """Steps logged when the Ctrl-C'd process had exited."""
        return len(self.stopped_records)
