"""From `TrainSample`s to padded tensors: validation, rank split, micro-batches by token budget.

The plan is made once, on the driver side (`LearnerGroup`), so every rank runs the *same
number* of micro-batches: each forward/backward of an FSDP2 model is a collective (all-gather,
reduce-scatter), and a rank that ran one pass fewer would hang the others. Ranks with less
work get empty micro-batches, which the worker runs as a zero-weight pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from azr.tasks import TrainSample


class InvalidSampleError(ValueError):
    """A training sample is malformed; the message names its index and what is wrong."""


def validate_samples(
    samples: list[TrainSample], vocab_size: int, max_length: int | None = None
) -> None:
    """Reject malformed samples before any work starts (no partial update on bad input)."""
    if not samples:
        raise InvalidSampleError("train_step needs at least one sample")
    for i, s in enumerate(samples):
        if not s.prompt_token_ids:
            raise InvalidSampleError(
                f"sample {i}: empty prompt (the first response token needs context)"
            )
        if not s.response_token_ids:
            raise InvalidSampleError(f"sample {i}: empty response")
        if len(s.behaviour_logprobs) != len(s.response_token_ids):
            raise InvalidSampleError(
                f"sample {i}: {len(s.behaviour_logprobs)} behaviour logprobs for "
                f"{len(s.response_token_ids)} response tokens"
            )
        if not math.isfinite(s.advantage):
            raise InvalidSampleError(f"sample {i}: advantage {s.advantage!r} is not finite")
        if any(not math.isfinite(lp) or lp > 0 for lp in s.behaviour_logprobs):
            raise InvalidSampleError(f"sample {i}: behaviour logprobs must be finite and <= 0")
        if max_length is not None and sample_length(s) > max_length:
            raise InvalidSampleError(
                f"sample {i}: {sample_length(s)} tokens exceed the model's {max_length}"
            )
        for t in (*s.prompt_token_ids, *s.response_token_ids):
            if not 0 <= t < vocab_size:
                raise InvalidSampleError(f"sample {i}: token id {t} outside [0, {vocab_size})")


def sample_length(s: TrainSample) -> int:
    return len(s.prompt_token_ids) + len(s.response_token_ids)


def plan_micro_batches(
    lengths: list[int], world_size: int, token_budget: int
) -> list[list[list[int]]]:
    """Split sample indices into ``plan[rank][micro_batch] = [sample indices]``.

    Samples go to ranks longest-first onto the least-loaded rank (balances tokens). On each
    rank, length-sorted samples are packed while ``count × longest ≤ token_budget`` (the
    padded size of the micro-batch). A single sample longer than the budget forms its own
    micro-batch. Every rank gets the same number of micro-batches (empty lists pad it).
    """
    loads = [0] * world_size
    per_rank: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        per_rank[rank].append(i)
        loads[rank] += lengths[i]
    plan: list[list[list[int]]] = []
    for indices in per_rank:
        micro: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in sorted(indices, key=lambda i: (lengths[i], i)):
            new_longest = max(longest, lengths[i])
            if current and (len(current) + 1) * new_longest > token_budget:
                micro.append(current)
                current, new_longest = [], lengths[i]
            current.append(i)
            longest = new_longest
        if current:
            micro.append(current)
        plan.append(micro)
    depth = max(1, max(len(m) for m in plan))
    for micro in plan:
        micro.extend([] for _ in range(depth - len(micro)))
    return plan


@dataclass
class MicroBatch:
    """Right-padded tensors of one micro-batch; position t predicts token t + 1.

    No attention mask is needed: padding is on the right only and attention is causal, so a
    real token never attends to a pad, and default position ids are the true positions.
    """

    input_ids: torch.Tensor
    """(B, L) token ids, padded with 0."""
    targets: torch.Tensor
    """(B, L − 1) = input_ids[:, 1:]."""
    response_mask: torch.Tensor
    """(B, L − 1) 1.0 where targets[b, t] is a response token."""
    behaviour_logprobs: torch.Tensor
    """(B, L − 1) rollout logprob of targets[b, t] on response positions, 0 elsewhere."""
    advantages: torch.Tensor
    """(B,) one advantage per sequence."""

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum().item())


def collate(samples: list[TrainSample]) -> MicroBatch:
    """Pad ``samples`` into a `MicroBatch` (fp32 logprobs and advantages)."""
    length = max(sample_length(s) for s in samples)
    batch = len(samples)
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    mask = torch.zeros(batch, length - 1, dtype=torch.float32)
    behaviour = torch.zeros(batch, length - 1, dtype=torch.float32)
    for b, s in enumerate(samples):
        p, r = len(s.prompt_token_ids), len(s.response_token_ids)
        input_ids[b, :p] = torch.tensor(s.prompt_token_ids, dtype=torch.long)
        input_ids[b, p : p + r] = torch.tensor(s.response_token_ids, dtype=torch.long)
        # Target index t holds token t + 1: response token j sits at target p − 1 + j.
        mask[b, p - 1 : p - 1 + r] = 1.0
        behaviour[b, p - 1 : p - 1 + r] = torch.tensor(s.behaviour_logprobs, dtype=torch.float32)
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    return MicroBatch(input_ids, input_ids[:, 1:], mask, behaviour, advantages)


def empty_micro_batch() -> MicroBatch:
    """A one-sequence, zero-weight batch: keeps a rank with no samples in the collectives."""
    input_ids = torch.zeros(1, 2, dtype=torch.long)
    zeros = torch.zeros(1, 1, dtype=torch.float32)
    return MicroBatch(input_ids, input_ids[:, 1:], zeros, zeros.clone(), torch.zeros(1))
