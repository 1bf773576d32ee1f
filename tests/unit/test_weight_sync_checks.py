"""The weight-sync safety checks without an engine: the rollout's checkpoint layout
(actors/weight_check.py) and the driver's probe comparison schedule (driver/sync_check.py).
The same checks against a real vLLM engine and learner: tests/integration/test_weight_sync.py."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from actors.weight_check import CheckpointLayout, WeightSyncError
from azr.config import LearnerConfig
from driver.sync_check import SyncVerifier, tolerance_for

STATE = {
    "model.embed_tokens.weight": torch.zeros(10, 4),
    "model.layers.0.self_attn.q_proj.weight": torch.zeros(4, 4),
    "model.layers.0.self_attn.rotary_emb.inv_freq": torch.zeros(2),
    "model.norm.weight": torch.zeros(4),
    "lm_head.weight": torch.zeros(10, 4),
}


@pytest.fixture
def layout(tmp_path) -> CheckpointLayout:
    names = list(STATE)
    save_file({n: STATE[n] for n in names[:2]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({n: STATE[n] for n in names[2:]}, tmp_path / "model-00002-of-00002.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"tie_word_embeddings": True}))
    return CheckpointLayout.read(tmp_path)


def sent(changes: dict[str, tuple[int, ...] | None] | None = None):
    """What a correct learner sends (no tied head, no computed buffer), with ``changes``
    (name → shape, or None to leave the tensor out)."""
    skip = ("lm_head.weight", "model.layers.0.self_attn.rotary_emb.inv_freq")
    out = {n: tuple(t.shape) for n, t in STATE.items() if n not in skip}
    for name, shape in (changes or {}).items():
        if shape is None:
            out.pop(name)
        else:
            out[name] = shape
    return list(out.items())


def test_the_layout_is_the_checkpoints_tensors_less_the_tied_head_and_computed_buffers(layout):
    assert layout.shapes == {
        "model.embed_tokens.weight": (10, 4),
        "model.layers.0.self_attn.q_proj.weight": (4, 4),
        "model.norm.weight": (4,),
    }
    layout.check(sent())  # a correct update passes


def test_a_missing_tensor_is_named(layout):
    with pytest.raises(WeightSyncError, match=r"missing 1: model.norm.weight"):
        layout.check(sent({"model.norm.weight": None}))


def test_a_misnamed_tensor_is_named_both_ways(layout):
    update = [("model.norm.weights" if n == "model.norm.weight" else n, s) for n, s in sent()]
    with pytest.raises(WeightSyncError) as info:
        layout.check(update)
    assert "missing 1: model.norm.weight" in str(info.value)
    assert "not in the model 1: model.norm.weights" in str(info.value)


def test_a_wrong_shape_and_a_duplicate_are_named(layout):
    with pytest.raises(WeightSyncError, match=r"wrong shape 1: model.norm.weight \(5,\)"):
        layout.check(sent({"model.norm.weight": (5,)}))
    with pytest.raises(WeightSyncError, match=r"sent twice 1: model.norm.weight"):
        layout.check([*sent(), ("model.norm.weight", (4,))])


class Sides:
    """Learner and engine logprobs of the probe, set by the test."""

    def __init__(self) -> None:
        self.learner = [-1.0, -2.0, -0.5]
        self.engines = [[-1.0, -2.0, -0.5], [-1.0, -2.0, -0.5]]
        self.calls = 0

    def learner_logprobs(self, sequences):
        self.calls += 1
        return [self.learner]

    def rollout_logprobs(self, sequences):
        return [[engine] for engine in self.engines]


def test_the_first_sync_is_checked_then_every_nth():
    sides = Sides()
    verifier = SyncVerifier([1, 2, 3, 4], 3, 1e-3, sides.learner_logprobs, sides.rollout_logprobs)
    checked = [verifier.after_sync(v) is not None for v in range(1, 9)]
    assert checked == [True, False, False, True, False, False, True, False]
    assert sides.calls == 3
    never = SyncVerifier([1, 2], 0, 1e-3, sides.learner_logprobs, sides.rollout_logprobs)
    assert never.after_sync(1) is None


def test_a_mismatch_names_the_engine_the_difference_and_the_tolerance():
    sides = Sides()
    verifier = SyncVerifier([1, 2, 3, 4], 10, 1e-3, sides.learner_logprobs, sides.rollout_logprobs)
    check = verifier.after_sync(1)
    assert check is not None and check.ok and check.mean_abs == 0.0
    sides.engines[1] = [-1.0, -2.3, -0.5]  # engine 1 differs by 0.3 on one of 3 tokens
    verifier.syncs = 0
    check = verifier.after_sync(7)
    assert not check.ok
    assert check.worst_actor == 1
    assert check.mean_abs == pytest.approx(0.1) and check.max_abs == pytest.approx(0.3)
    message = check.message()
    assert "version 7" in message and "engine 1" in message and "0.1" in message
    assert "tolerance 0.001" in message
    assert check.metrics() == {"verify_mean_abs": check.mean_abs, "verify_max_abs": check.max_abs}


def test_the_tolerance_follows_the_dtype_unless_set():
    config = LearnerConfig()
    assert tolerance_for(config, both_float32=True) == config.verify_sync_tolerance_fp32
    assert tolerance_for(config, both_float32=False) == config.verify_sync_tolerance_bf16
    assert config.verify_sync_tolerance_fp32 < config.verify_sync_tolerance_bf16
    assert tolerance_for(LearnerConfig(verify_sync_tolerance=0.2), both_float32=True) == 0.2
