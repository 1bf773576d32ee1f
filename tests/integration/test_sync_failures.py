"""A weight sync cannot hang the run: the sender and every receiver are awaited together.

Real FSDP2 learner (2 ranks over gloo) and a real Ray cluster; the rollout side is a stand-in
group of Ray actors that fail on command (a vLLM engine will not raise or hang on demand):
one raises during the load, one never answers. Each sync must stop the run (RunFailed)
within ``learner.sync_timeout_s``, naming the actor.
"""

from __future__ import annotations

import time

import pytest
import ray
from support.learner import build_tiny_qwen2, fixed_batch

from azr.config import LearnerConfig
from driver.runtime import GuardedLearner, RunFailed
from learner.group import LearnerDiedError, LearnerGroup, WeightSyncError

pytestmark = pytest.mark.slow
SYNC_TIMEOUT_S = 8.0


@ray.remote
class StandInEngine:
    """Loads nothing; answers like RolloutEngine.update_weights, fails or hangs on command."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    def update_weights(self, bucket_refs: list, version: int) -> dict:
        if self.behaviour == "raise":
            raise RuntimeError("Failed to load weights: model.layers.0.mlp.up_proj")
        if self.behaviour == "hang":
            time.sleep(3600)
        return {"version": version, "tensors": len(ray.get(bucket_refs[0]))}


class StandInRollout:
    """The rollout group's sync interface (`learner.group.WeightReceiver`) over stand-ins."""

    def __init__(self, behaviours: list[str]) -> None:
        self.actors = [StandInEngine.remote(b) for b in behaviours]
        self.weight_dtype = "float32"

    def start_update(self, bucket_refs: list, version: int) -> list:
        return [a.update_weights.remote(bucket_refs, version) for a in self.actors]

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2")))


def guarded(model_dir: str, rollout: StandInRollout) -> GuardedLearner:
    config = LearnerConfig(num_workers=2, device="cpu", sync_timeout_s=SYNC_TIMEOUT_S)
    group = LearnerGroup(model_dir, config, seed=0)
    return GuardedLearner(group, rollout, failures=(LearnerDiedError, WeightSyncError))


def test_a_healthy_sync_answers_with_every_receiver(ray_cluster, model_dir):
    rollout = StandInRollout(["ok", "ok"])
    learner = guarded(model_dir, rollout)
    try:
        result = learner.sync(version=1)
        assert [r["version"] for r in result["rollout"]] == [1, 1]
        assert result["version"] == 1.0 and result["wire_dtype"] == "float32"
    finally:
        learner.group.shutdown()
        rollout.shutdown()


@pytest.mark.parametrize(
    ("behaviours", "named", "why"),
    [
        (["ok", "raise"], "rollout actor 1", "Failed to load weights"),
        (["hang", "ok"], "rollout actor 0", "did not finish within learner.sync_timeout_s=8s"),
    ],
    ids=["receiver-raises", "receiver-never-answers"],
)
def test_a_failing_or_silent_receiver_stops_the_run_within_the_timeout(
    ray_cluster, model_dir, behaviours, named, why
):
    rollout = StandInRollout(behaviours)
    learner = guarded(model_dir, rollout)
    try:
        started = time.monotonic()
        with pytest.raises(RunFailed, match="weight sync failed") as failure:
            learner.sync(version=1)
        elapsed = time.monotonic() - started
        assert named in str(failure.value) and why in str(failure.value)
        # Generous margin for a loaded 2-core machine: the point is "not forever".
        assert elapsed < SYNC_TIMEOUT_S + 30
        # On the object-store path nothing collective was left half done: the learner still
        # trains (on the NCCL path the group is marked unusable instead).
        assert learner.train_step(fixed_batch(2))["samples"] == 2.0
    finally:
        learner.group.shutdown()
        rollout.shutdown()
