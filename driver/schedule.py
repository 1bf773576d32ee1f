"""When the learner updates and the new weights reach the rollout: the sync and async schedules.

* **sync** (the paper): step t generates with weights t; its update and the weight sync
  finish before step t+1 generates.
* **async**: step t's update runs on a learner thread while step t+1 generates with the
  weights of t; it is finished and synced when step t+1 is submitted. Samples more than
  ``max_staleness`` versions behind the learner are dropped before an update.

The policy version is the learner's (its update count): the schedule takes it from each
sync's report and never counts it itself.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from azr.step_types import StepOutput
from azr.tasks import TrainSample


class Learner(Protocol):
    """The learner side as the schedule uses it (`driver.runtime.GuardedLearner`)."""

    def train_step(self, samples: list[TrainSample]) -> dict[str, float]: ...

    def sync(self) -> dict[str, Any]: ...


def admit(
    samples: list[TrainSample], learner_version: int, max_staleness: int
) -> list[TrainSample]:
    """Samples generated at most ``max_staleness`` versions behind the learner."""
    return [s for s in samples if learner_version - s.policy_version <= max_staleness]


@dataclass(frozen=True)
class UpdateResult:
    """One learner update and the weight sync that followed it."""

    version: int
    """Policy version the rollout engines serve afterwards."""
    learner: dict[str, float]
    """The update's figures: train_step's, plus busy_seconds, admitted, dropped_stale and
    staleness_max."""
    sync: dict[str, Any] | None
    """The weight sync's report; None when nothing was trained (no admitted sample)."""
    sync_seconds: float

    def record(self) -> dict[str, float]:
        """The update's entries of a step record (metrics.jsonl names)."""
        out = {"time/learner": self.learner["busy_seconds"], "time/sync_seconds": self.sync_seconds}
        out.update({f"learner_result/{k}": v for k, v in self.learner.items()})
        for key, value in (self.sync or {}).items():
            if isinstance(value, int | float):  # the per-actor reports stay out of the record
                out[f"sync/{key}"] = value
        return out


class UpdateSchedule:
    """Submit each step's output; get back the update that finished (see the module doc)."""

    def __init__(
        self,
        mode: Literal["sync", "async"],
        learner: Learner,
        *,
        max_staleness: int,
        version: int = 0,
    ) -> None:
        self.mode = mode
        self.learner = learner
        self.max_staleness = max_staleness
        self.version = version
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner")
        self._pending: Future | None = None

    def submit(self, output: StepOutput) -> UpdateResult | None:
        """sync: update on this step's samples and sync, returning that update. async: finish
        and sync the previous step's update (returned; None at the first step), then start
        this step's update in the background."""
        finished = self.drain() if self.mode == "async" else None
        self._pending = self._thread.submit(self._update, output.samples, self.version)
        return finished if self.mode == "async" else self.drain()

    def drain(self) -> UpdateResult | None:
        """Wait for the update in flight (if any) and sync its weights."""
        if self._pending is None:
            return None
        pending, self._pending = self._pending, None
        learner = pending.result()
        started = time.perf_counter()
        sync = self.learner.sync() if learner["admitted"] else None
        if sync is not None:
            self.version = int(sync["version"])
        return UpdateResult(self.version, learner, sync, time.perf_counter() - started)

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    def _update(self, samples: list[TrainSample], learner_version: int) -> dict[str, float]:
        """The learner update of one step (on the learner thread; touches no shared state)."""
        admitted = admit(samples, learner_version, self.max_staleness)
        started = time.perf_counter()
        result = dict(self.learner.train_step(admitted)) if admitted else {}
        result["busy_seconds"] = time.perf_counter() - started
        result["admitted"] = float(len(admitted))
        result["dropped_stale"] = float(len(samples) - len(admitted))
        result["staleness_max"] = float(
            max((learner_version - s.policy_version for s in samples), default=0)
        )
        return result
