"""The update schedule (driver/schedule.py): what is trained when, and which version is served.

The learner here is a scripted stand-in that records what it was given and reports a version
per sync the way `LearnerGroup` does (its update count); the real learner and sync run in
tests/integration/test_selfplay_e2e.py.
"""

from __future__ import annotations

import threading

from azr.step_types import StepOutput
from azr.tasks import TrainSample
from driver.schedule import UpdateSchedule, admit


class ScriptedLearner:
    def __init__(self) -> None:
        self.version = 0
        self.trained: list[list[int]] = []  # the policy versions of each update's samples
        self.synced: list[int] = []
        self.release = threading.Event()
        self.release.set()

    def train_step(self, samples: list[TrainSample]) -> dict[str, float]:
        self.release.wait(10)
        self.trained.append([s.policy_version for s in samples])
        self.version += 1
        return {"loss": 0.5}

    def sync(self) -> dict:
        self.synced.append(self.version)
        return {"version": float(self.version), "seconds": 0.01}


def output(*versions: int) -> StepOutput:
    samples = [TrainSample([1], [2], [-0.5], 1.0, policy_version=v) for v in versions]
    return StepOutput(samples=samples, metrics={}, proposals=[], solves=[])


def test_sync_mode_trains_and_syncs_each_step_before_returning():
    learner = ScriptedLearner()
    schedule = UpdateSchedule("sync", learner, max_staleness=0)
    try:
        first = schedule.submit(output(0, 0))
        assert first is not None and first.version == 1 and learner.synced == [1]
        assert first.learner["admitted"] == 2 and first.learner["loss"] == 0.5
        second = schedule.submit(output(1))
        assert second.version == 2 and schedule.version == 2
        assert schedule.drain() is None  # nothing left in flight
    finally:
        schedule.close()


def test_async_mode_returns_the_previous_update_and_keeps_one_in_flight():
    learner = ScriptedLearner()
    schedule = UpdateSchedule("async", learner, max_staleness=1)
    try:
        learner.release.clear()
        assert schedule.submit(output(0)) is None  # step 1's update is running
        assert learner.synced == []
        learner.release.set()
        finished = schedule.submit(output(0, 0))  # step 2 was generated with version 0
        assert finished is not None and finished.version == 1 and learner.synced == [1]
        last = schedule.drain()
        assert last is not None and last.version == 2 and learner.trained == [[0], [0, 0]]
    finally:
        schedule.close()


def test_stale_samples_are_dropped_and_an_empty_update_is_not_synced():
    learner = ScriptedLearner()
    schedule = UpdateSchedule("sync", learner, max_staleness=1, version=5)
    try:
        result = schedule.submit(output(2, 3))  # both more than one version behind 5
        assert result.sync is None and result.version == 5 and learner.synced == []
        assert result.learner["admitted"] == 0 and result.learner["dropped_stale"] == 2
        assert result.learner["staleness_max"] == 3
        assert result.record()["learner_result/dropped_stale"] == 2
    finally:
        schedule.close()


def test_admit_keeps_samples_within_the_staleness_bound():
    samples = output(3, 4, 5).samples
    assert [s.policy_version for s in admit(samples, 5, 1)] == [4, 5]
    assert [s.policy_version for s in admit(samples, 5, 0)] == [5]
