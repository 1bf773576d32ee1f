"""Learner: the loss by hand, batching, and the real FSDP2 group over gloo in a local Ray."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import pytest
import ray
import torch
from support.learner import TINY_VOCAB, build_tiny_qwen2, fixed_batch

from azr.config import LearnerConfig
from azr.tasks import TrainSample
from learner import checkpoint as ckpt
from learner.batching import InvalidSampleError, sample_length, validate_samples
from learner.group import LearnerDiedError, LearnerGroup
from learner.loss import clipped_policy_loss

# ---------------------------------------------------------------- loss, by hand (no Ray)


def test_clipped_loss_matches_hand_computed_values():
    # Two sequences, three positions; the last position of sequence 1 is padding.
    ratios = torch.tensor([[1.5, 0.5, 1.1], [0.5, 1.5, 9.0]])
    behaviour = torch.full((2, 3), -2.0)
    logprobs = (behaviour + ratios.log()).requires_grad_()
    advantages = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    terms = clipped_policy_loss(
        logprobs, behaviour, advantages[:, None], mask, 0.2, global_token_count=10
    )
    # A=+2: r=1.5 → clipped at 1.2 (−2.4); r=0.5 → unclipped (−1.0); r=1.1 → inside (−2.2).
    # A=−1: r=0.5 → clipped at 0.8 (+0.8); r=1.5 → unclipped (+1.5); the pad counts nothing.
    expected = (-2.4 - 1.0 - 2.2 + 0.8 + 1.5) / 10
    assert terms.loss.item() == pytest.approx(expected, abs=1e-6)
    assert terms.clip_fraction.item() == pytest.approx(2 / 10)
    terms.loss.backward()
    # Gradient: −A·r/N where the unclipped term is active, 0 where the clip is (and on pads).
    expected_grad = torch.tensor([[0.0, -2 * 0.5, -2 * 1.1], [0.0, 1.5, 0.0]]) / 10
    torch.testing.assert_close(logprobs.grad, expected_grad, atol=1e-6, rtol=0)
    # Positive advantage pushes its tokens up, negative pushes them down (gradient descent).
    assert logprobs.grad[0, 2] < 0 < logprobs.grad[1, 1]


def test_mismatch_kl_is_zero_iff_logprobs_agree():
    lp = torch.tensor([[-1.0, -2.0]])
    mask = torch.ones(1, 2)
    same = clipped_policy_loss(lp, lp.clone(), torch.tensor([1.0]), mask, 0.2, 2)
    assert same.mismatch_kl.item() == 0.0
    shifted = clipped_policy_loss(lp, lp - 0.1, torch.tensor([1.0]), mask, 0.2, 2)
    r = math.exp(0.1)
    assert shifted.mismatch_kl.item() == pytest.approx((r - 1) - 0.1, rel=1e-5)


def test_token_mean_is_exact_across_micro_batches():
    torch.manual_seed(0)
    logprobs = -torch.rand(4, 6) * 3
    behaviour = logprobs + torch.randn(4, 6) * 0.3
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5])
    mask = torch.ones(4, 6)
    mask[0, 4:] = 0  # sequences of different lengths: a per-micro-batch mean would be wrong
    mask[2, 1:] = 0
    n = int(mask.sum())
    whole = clipped_policy_loss(logprobs, behaviour, adv[:, None], mask, 0.2, n).loss
    parts = sum(
        clipped_policy_loss(logprobs[s], behaviour[s], adv[s, None], mask[s], 0.2, n).loss
        for s in (slice(0, 1), slice(1, 3), slice(3, 4))
    )
    assert parts.item() == pytest.approx(whole.item(), abs=1e-7)
    per_token = torch.maximum(
        -adv[:, None] * (logprobs - behaviour).exp(),
        -adv[:, None] * (logprobs - behaviour).exp().clamp(0.8, 1.2),
    )
    assert whole.item() == pytest.approx((per_token * mask).sum().item() / n, abs=1e-7)


# ---------------------------------------------------------------- batching (no Ray)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"response_token_ids": []}, "empty response"),
        ({"behaviour_logprobs": [-1.0]}, "behaviour logprobs for"),
        ({"advantage": math.nan}, "not finite"),
        ({"behaviour_logprobs": [0.5, -1.0]}, "finite and <= 0"),
        ({"prompt_token_ids": [1, TINY_VOCAB]}, "outside"),
        ({"response_token_ids": [3] * 300, "behaviour_logprobs": [-1.0] * 300}, "exceed"),
    ],
)
def test_bad_samples_are_rejected_with_a_clear_error(change, message):
    good = TrainSample([1, 2], [3, 4], [-1.0, -2.0], advantage=0.5)
    with pytest.raises(InvalidSampleError, match=message):
        validate_samples([good, replace(good, **change)], TINY_VOCAB, max_length=256)


# ---------------------------------------------------------------- the FSDP2 group (real Ray)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2")))


def make_group(model: str, workers: int, **overrides) -> LearnerGroup:
    settings = {"num_workers": workers, "lr": 1e-3, "grad_clip": 1.0, "init_timeout_s": 120}
    return LearnerGroup(model, LearnerConfig(**(settings | overrides)), seed=0)


PROBE = [[3, 14, 15, 92, 65, 35, 89, 79], [2, 71, 82, 81, 82, 84]]


def response_logprobs(group: LearnerGroup, samples: list[TrainSample]) -> list[list[float]]:
    """The learner's log-probability of each response token of each sample."""
    scored = group.logprobs([s.prompt_token_ids + s.response_token_ids for s in samples])
    return [lp[len(s.prompt_token_ids) - 1 :] for lp, s in zip(scored, samples, strict=True)]


def expected_step_metrics(
    logprobs: list[list[float]], samples: list[TrainSample], clip: float
) -> dict[str, float]:
    """loss, clip_fraction and mismatch_kl of an update at these learner logprobs, by hand
    (float64): the per-token PPO terms, token-mean over the whole batch."""
    loss = clipped = k3 = 0.0
    tokens = sum(len(s.response_token_ids) for s in samples)
    for lps, s in zip(logprobs, samples, strict=True):
        for lp, behaviour in zip(lps, s.behaviour_logprobs, strict=True):
            ratio = math.exp(lp - behaviour)
            unclipped = -s.advantage * ratio
            clipped_term = -s.advantage * min(max(ratio, 1 - clip), 1 + clip)
            loss += max(unclipped, clipped_term)
            clipped += clipped_term > unclipped
            k3 += (ratio - 1) - (lp - behaviour)
    return {"loss": loss / tokens, "clip_fraction": clipped / tokens, "mismatch_kl": k3 / tokens}


def first_moment(directory) -> dict[str, torch.Tensor]:
    """AdamW exp_avg per parameter after one step = (1 − β1) · clipped gradient."""
    state = torch.load(directory / ckpt.OPTIMIZER_FILE, weights_only=True)["state"]
    return {name: s["exp_avg"] / (1 - 0.9) for name, s in state.items()}


@pytest.mark.slow
def test_fsdp2_group_learns_on_a_fixed_batch_and_clips(ray_cluster, tiny_model, tmp_path):
    group = make_group(tiny_model, 2, grad_clip=0.05)
    try:
        batch = fixed_batch()
        before = group.logprobs(PROBE)
        expected = expected_step_metrics(
            response_logprobs(group, batch), batch, LearnerConfig().clip_ratio
        )
        metrics = [group.train_step(batch)]
        group.save_checkpoint(str(tmp_path / "step1"))
        metrics += [group.train_step(batch) for _ in range(3)]
        losses = [m["loss"] for m in metrics]
        assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
        assert metrics[0]["tokens"] == sum(len(s.response_token_ids) for s in batch)
        assert metrics[0]["entropy"] == pytest.approx(math.log(TINY_VOCAB), rel=0.05)
        # The first update's figures are those of its own logprobs, token by token.
        assert 0 < expected["clip_fraction"] < 1  # the batch has clipped and unclipped tokens
        for key, value in expected.items():
            assert metrics[0][key] == pytest.approx(value, rel=1e-4, abs=1e-7), key
        after = group.logprobs(PROBE)
        assert max(abs(a - b) for a, b in zip(after[0], before[0], strict=True)) > 1e-3
        # The clip is honoured: the gradient AdamW saw has norm 0.05, not the raw norm.
        assert metrics[0]["grad_norm"] > 0.5
        seen = torch.cat([g.flatten() for g in first_moment(tmp_path / "step1").values()])
        assert seen.norm().item() == pytest.approx(0.05, rel=1e-4)
        # A dead rank surfaces as a clear error, not a hang.
        ray.kill(group.workers[1], no_restart=True)
        with pytest.raises(LearnerDiedError, match="rank 1 died"):
            group.train_step(batch)
        with pytest.raises(LearnerDiedError, match="unusable"):
            group.logprobs(PROBE)
    finally:
        group.shutdown()


@pytest.mark.slow
def test_frozen_control_computes_every_step_but_changes_no_weight(
    ray_cluster, tiny_model, tmp_path
):
    """learner.apply_updates=false (the learning benchmark's control arm): losses, gradients
    and metrics as in training, and the weights stay bit-identical (checksum)."""
    group = make_group(tiny_model, 2, apply_updates=False)
    try:
        batch = fixed_batch()
        before = group.logprobs(PROBE)
        group.save_checkpoint(str(tmp_path / "start"))
        metrics = [group.train_step(batch) for _ in range(2)]
        group.save_checkpoint(str(tmp_path / "end"))
        after = group.logprobs(PROBE)
    finally:
        group.shutdown()
    for m in metrics:  # every step computed its loss and gradient
        assert m["tokens"] == sum(len(s.response_token_ids) for s in batch)
        assert m["grad_norm"] > 0.1 and m["loss"] != 0
    assert metrics[1]["loss"] == pytest.approx(metrics[0]["loss"], rel=1e-6)  # same weights
    assert ckpt.weights_digest(tmp_path / "end") == ckpt.weights_digest(tmp_path / "start")
    assert after == before


@dataclass
class OneUpdate:
    """One update of ``fixed_batch(LAYOUT_SAMPLES)`` (no clipping) by a fresh group in one
    layout."""

    metrics: dict[str, float]
    probe_logprobs: list[list[float]]
    """The learner's logprobs of PROBE after the update."""
    gradient: dict[str, torch.Tensor]
    """The gradient AdamW saw, per parameter (from the saved first moment)."""
    before: list[list[float]]
    after: list[list[float]]
    """Each response's token logprobs under the learner, before and after the update."""


LAYOUT_SAMPLES = 16
"""Samples of the layouts' batch: 253 tokens, so a 64-token budget (the least the config
allows) makes several micro-batches on every rank (4 at W=1, 3 per rank at W=2)."""
LAYOUTS = {
    # name: (workers, micro-batch token budget (None: the whole batch in one), checkpointing)
    "w1": (1, None, False),
    "w1_micro": (1, 64, False),
    "w2_micro": (2, 64, False),
    "w2_micro_ac": (2, 64, True),
}


@pytest.fixture(scope="module")
def one_update_per_layout(ray_cluster, tiny_model, tmp_path_factory) -> dict[str, OneUpdate]:
    """W=1 one micro-batch, W=1 many, W=2 many, W=2 many with activation checkpointing (FSDP2
    over gloo): each group's first update of the same batch, made once for the tests below."""
    batch = fixed_batch(LAYOUT_SAMPLES)
    directory = tmp_path_factory.mktemp("one_update")
    updates = {}
    for name, (workers, budget, ac) in LAYOUTS.items():
        group = make_group(
            tiny_model,
            workers,
            micro_batch_tokens=budget or sum(sample_length(s) for s in batch),
            grad_clip=1e6,
            activation_checkpointing=ac,
            logprob_chunk_tokens=16,
        )
        try:
            before = response_logprobs(group, batch)
            metrics = group.train_step(batch)
            after = response_logprobs(group, batch)
            group.save_checkpoint(str(directory / name))
            updates[name] = OneUpdate(
                metrics, group.logprobs(PROBE), first_moment(directory / name), before, after
            )
        finally:
            group.shutdown()
    return updates


@pytest.mark.slow
def test_one_update_raises_positive_and_lowers_negative_advantage_responses(
    one_update_per_layout,
):
    """The direction of the update: after one step, every response with a positive advantage
    is more likely under the learner and every one with a negative advantage less likely."""
    batch = fixed_batch(LAYOUT_SAMPLES)
    assert {s.advantage > 0 for s in batch} == {True, False}
    for name, update in one_update_per_layout.items():
        moved = [sum(a) - sum(b) for a, b in zip(update.after, update.before, strict=True)]
        for s, delta in zip(batch, moved, strict=True):
            assert math.copysign(1, delta) == math.copysign(1, s.advantage), (name, moved)
            assert abs(delta) > 1e-3, (name, moved)  # a real move, not rounding


@pytest.mark.slow
def test_world_size_and_micro_batching_do_not_change_the_update(one_update_per_layout):
    """W=1 one micro-batch vs W=1 many micro-batches vs W=2 many, with and without activation
    checkpointing (FSDP2 over gloo): same gradients and step."""
    reference = one_update_per_layout["w1"]
    assert reference.metrics["micro_batches"] == 1
    for name in ("w1_micro", "w2_micro", "w2_micro_ac"):
        update = one_update_per_layout[name]
        assert update.metrics["micro_batches"] > 1, name
        for key in ("loss", "grad_norm", "entropy", "clip_fraction", "mismatch_kl"):
            want = reference.metrics[key]
            assert update.metrics[key] == pytest.approx(want, rel=1e-5, abs=1e-7), (name, key)
        assert update.gradient.keys() == reference.gradient.keys()
        for param in update.gradient:
            torch.testing.assert_close(
                update.gradient[param], reference.gradient[param], rtol=1e-4, atol=1e-7
            )
        torch.testing.assert_close(
            torch.tensor(update.probe_logprobs[0]),
            torch.tensor(reference.probe_logprobs[0]),
            rtol=0,
            atol=1e-5,
        )


@pytest.mark.slow
def test_checkpoint_resume_gives_identical_next_step(ray_cluster, tiny_model, tmp_path):
    batch, later_batch = fixed_batch(seed=1), fixed_batch(seed=2)
    directory = tmp_path / "ckpt"
    group = make_group(tiny_model, 2)
    try:
        group.train_step(batch)
        group.save_checkpoint(str(directory))
        expected = group.train_step(later_batch)
        expected_lp = group.logprobs(PROBE)
    finally:
        group.shutdown()
    # HF format: a standard loader reads the weights, config and tokenizer.
    from transformers import AutoModelForCausalLM

    assert (directory / "tokenizer.json").is_file() and (directory / "config.json").is_file()
    assert json.loads((directory / ckpt.STATE_FILE).read_text())["step"] == 1
    hf = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    assert not any(k.startswith("lm_head") for k in ckpt.load_hf_weights(directory))

    resumed = make_group(tiny_model, 2)
    try:
        before = resumed.logprobs(PROBE)
        assert resumed.load_checkpoint(str(directory)) == 1
        restored = resumed.logprobs(PROBE)
        with torch.no_grad():
            ids = torch.tensor([PROBE[0]])
            hf_lp = torch.log_softmax(hf(ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None])
        torch.testing.assert_close(
            torch.tensor(restored[0], dtype=torch.float64), hf_lp[:, 0].double(), atol=1e-5, rtol=0
        )
        assert restored != before
        got = resumed.train_step(later_batch)
        for key in ("loss", "grad_norm", "entropy", "clip_fraction", "mismatch_kl"):
            assert got[key] == expected[key], key
        assert resumed.logprobs(PROBE) == expected_lp
        with pytest.raises(ckpt.CheckpointError, match="missing"):
            resumed.load_checkpoint(str(tmp_path / "nowhere"))
    finally:
        resumed.shutdown()
