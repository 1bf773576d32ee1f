"""The learner's packed, chunked, temperature-aware path on a plain (unsharded) tiny Qwen2.

Checked against the former padded, full-logits path (`support.padded_path`) and against
each sequence run alone; torch and transformers only, no Ray.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import replace

import pytest
import torch
from support.learner import LEARNER_SHAPE, TINY_VOCAB
from support.padded_path import padded_backward_micro_batch, plan_padded_micro_batches

from azr.tasks import TrainSample
from azr.tiny.build import init_qwen2
from learner import policy
from learner.batching import (
    InvalidSampleError,
    empty_micro_batch,
    pack,
    plan_micro_batches,
    sample_length,
    validate_samples,
)
from learner.logprobs import token_logprobs

CLIP = 0.2


def tiny_model(attn: str = "sdpa", chunk_tokens: int = 5) -> torch.nn.Module:
    model = init_qwen2(LEARNER_SHAPE, TINY_VOCAB)
    model.config._attn_implementation = attn
    policy.install_response_forward(model, chunk_tokens)
    return model


def varied_samples(num: int, seed: int, temperatures=(0.6, 1.0, 1.3)) -> list[TrainSample]:
    """Mixed lengths (a 1-token prompt and a 1-token response included), signs, temperatures."""
    rng = random.Random(seed)
    samples = []
    for i in range(num):
        prompt = [rng.randrange(TINY_VOCAB) for _ in range(1 if i == 0 else 2 + rng.randrange(20))]
        response = [
            rng.randrange(TINY_VOCAB) for _ in range(1 if i == 1 else 1 + rng.randrange(12))
        ]
        samples.append(
            TrainSample(
                prompt,
                response,
                [-math.log(TINY_VOCAB) + rng.uniform(-0.5, 0.5) for _ in response],
                advantage=rng.uniform(-2, 2),
                temperature=temperatures[i % len(temperatures)],
            )
        )
    return samples


def alone_logprobs(model: torch.nn.Module, sample: TrainSample) -> torch.Tensor:
    """Plain HF forward of one sequence: log-softmax(logits / T) of its response tokens."""
    ids = torch.tensor([sample.prompt_token_ids + sample.response_token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1] / sample.temperature
    p = len(sample.prompt_token_ids)
    lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
    return lp[p - 1 :]


# ---------------------------------------------------------------- packing


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_sequences_do_not_attend_across_boundaries(attn):
    model = tiny_model(attn).eval()
    samples = varied_samples(5, seed=0)
    batch = pack(samples)
    with torch.no_grad():
        packed, _ = policy.response_logprobs(model, batch)
    alone = torch.cat([alone_logprobs(model, s) for s in samples])
    torch.testing.assert_close(packed, alone, rtol=0, atol=2e-5)
    # The check can fail: one row without restarting positions lets later sequences see
    # earlier ones, and their logprobs change.
    leaky = copy.copy(batch)
    leaky.position_ids = torch.arange(batch.input_ids.shape[1])[None]
    with torch.no_grad():
        mixed, _ = policy.response_logprobs(model, leaky)
    first = len(samples[0].response_token_ids)
    assert (mixed[first:] - alone[first:]).abs().max() > 1e-3


def test_pack_concatenates_without_padding_and_aligns_targets():
    samples = [
        TrainSample([5, 6, 7], [8, 9], [-0.5, -0.25], 1.0),
        TrainSample([1], [2], [-1.0], -1.0),
    ]
    batch = pack(samples)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 1, 2]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1]]
    assert batch.target_positions.tolist() == [2, 3, 5]
    assert batch.targets.tolist() == [8, 9, 2]
    # The position before each target holds the token that precedes it in its own sequence.
    assert batch.input_ids[0, batch.target_positions + 1].tolist() == batch.targets.tolist()
    assert batch.behaviour_logprobs.tolist() == [-0.5, -0.25, -1.0]
    assert batch.advantages.tolist() == [1.0, 1.0, -1.0]
    assert batch.num_tokens == 3 and empty_micro_batch().num_tokens == 0
    # Every response token carries its sequence's advantage, sign and value as given (a flipped
    # sign trains backwards).
    odd = pack([replace(samples[0], advantage=0.375), replace(samples[1], advantage=-2.5)])
    assert odd.advantages.dtype == torch.float32
    assert odd.advantages.tolist() == [0.375, 0.375, -2.5]


def test_plan_packs_real_tokens_within_budget_on_equal_depths():
    lengths = [5, 40, 12, 12, 30, 7, 100, 3, 20, 20]
    plan = plan_micro_batches(lengths, world_size=3, token_budget=36)
    assert len({len(rank) for rank in plan}) == 1
    assert sorted(i for rank in plan for mb in rank for i in mb) == list(range(len(lengths)))
    for rank in plan:
        for mb in rank:
            assert len(mb) <= 1 or sum(lengths[i] for i in mb) <= 36
    # Real tokens, not padded size: 30 + 5 fit one micro-batch of 36 (padded size would be 60).
    assert any(sorted(lengths[i] for i in mb) == [5, 30] for rank in plan for mb in rank)
    assert plan_micro_batches([100], world_size=2, token_budget=36) == [[[0]], [[]]]


# ---------------------------------------------------------------- chunked logprobs


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunked_logprobs_and_grads_equal_log_softmax_at_temperature(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(11, 16, requires_grad=True)
    weight = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 37, (11,))
    temperature = torch.tensor([0.6, 1.0, 1.7] * 3 + [0.6, 1.0])
    upstream = torch.randn(11)

    lp, ent = token_logprobs(hidden, weight, targets, temperature, chunk)
    (lp * upstream).sum().backward()
    got = (hidden.grad.clone(), weight.grad.clone())
    hidden.grad = weight.grad = None

    logits = (hidden @ weight.T) / temperature[:, None]
    ref = torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0]
    (ref * upstream).sum().backward()
    torch.testing.assert_close(lp, ref.detach())
    torch.testing.assert_close(ent, torch.distributions.Categorical(logits=logits).entropy())
    assert not ent.requires_grad
    torch.testing.assert_close(got[0], hidden.grad)
    torch.testing.assert_close(got[1], weight.grad)
    with pytest.raises(TypeError, match="float32"):
        token_logprobs(hidden, weight, targets, temperature.bfloat16(), chunk)


# ---------------------------------------------------------------- the whole step


def step(model, samples, planner, backward, budget: int) -> dict[str, float]:
    global_tokens = sum(len(s.response_token_ids) for s in samples)
    (micro,) = planner([sample_length(s) for s in samples], 1, budget)
    sums: dict[str, float] = {}
    for indices in micro:
        for key, value in backward(model, [samples[i] for i in indices], global_tokens).items():
            sums[key] = sums.get(key, 0.0) + value
    return sums


def packed_backward(model, samples, global_tokens):
    return policy.backward_micro_batch(model, pack(samples), CLIP, global_tokens)


def padded_backward(model, samples, global_tokens):
    return padded_backward_micro_batch(model, samples, CLIP, global_tokens)


def test_packed_chunked_step_equals_the_padded_full_logits_step():
    samples = varied_samples(12, seed=3)
    new = tiny_model(chunk_tokens=7)
    old = copy.deepcopy(new)
    got = step(new, samples, plan_micro_batches, packed_backward, budget=48)
    want = step(old, samples, plan_padded_micro_batches, padded_backward, budget=48)
    for key in ("loss", "clip_fraction", "mismatch_kl", "entropy"):
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
    assert got["loss"] != 0 and got["entropy"] > 1
    for (name, p_new), p_old in zip(new.named_parameters(), old.parameters(), strict=True):
        assert p_new.grad is not None, name
        torch.testing.assert_close(p_new.grad, p_old.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_temperature_changes_the_logprobs_the_learner_trains_on():
    """At the sampling temperature, the learner's logprobs are the rollout's; at T = 1 they
    are not (the former bias: mismatch_kl 0.02 on every step at T = 0.6)."""
    model = tiny_model().eval()
    sample = varied_samples(1, seed=4, temperatures=(0.6,))[0]
    with torch.no_grad():
        lp, _ = policy.response_logprobs(model, pack([sample]))
        at_one, _ = policy.response_logprobs(model, pack([replace(sample, temperature=1.0)]))
    torch.testing.assert_close(lp, alone_logprobs(model, sample), rtol=0, atol=2e-5)
    assert (lp - at_one).abs().max() > 1e-2


def saved_bytes(model: torch.nn.Module, batch) -> int:
    """Bytes of the tensors autograd keeps for backward during one forward."""
    total = 0

    def keep(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        policy.response_logprobs(model, batch)
    return total


def test_activation_checkpointing_keeps_the_gradients():
    samples = varied_samples(6, seed=5)
    plain = tiny_model()
    checkpointed = copy.deepcopy(plain)
    policy.enable_activation_checkpointing(checkpointed)
    policy.install_response_forward(checkpointed, 5)
    a = step(plain, samples, plan_micro_batches, packed_backward, budget=64)
    b = step(checkpointed, samples, plan_micro_batches, packed_backward, budget=64)
    # It is really on: the forward keeps far fewer activations for backward.
    saved = [saved_bytes(m, pack(samples)) for m in (plain, checkpointed)]
    assert saved[1] < saved[0] / 2, saved
    assert a == pytest.approx(b, rel=1e-6)
    assert [n for n, _ in plain.named_parameters()] == [
        n for n, _ in checkpointed.named_parameters()
    ]
    for p, q in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"temperature": 0.0}, "temperature 0.0"),
        ({"top_p": 0.9}, "top_p=0.9"),
        ({"top_k": 40}, "top_k=40"),
    ],
)
def test_samples_the_learner_cannot_reproduce_are_rejected(change, message):
    good = TrainSample([1, 2], [3, 4], [-1.0, -2.0], advantage=0.5, temperature=0.6)
    validate_samples([good], TINY_VOCAB)
    bad = replace(good, **change)
    with pytest.raises(InvalidSampleError, match=message):
        validate_samples([good, bad], TINY_VOCAB)
