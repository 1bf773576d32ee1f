"""From `TrainSample`s to packed tensors: validation, rank split, micro-batches by token budget.

Invariants:

* **No padding.** A micro-batch is one row: its sequences concatenated, position ids restarting
  at 0 for each. The model sees the restarts and attends within each sequence only (transformers
  builds a block-diagonal causal mask from restarting position ids when no attention mask and no
  cache are given; `learner.logprobs` calls it that way, tests prove the boundaries hold).
* **Real-token budget.** A micro-batch holds at most ``token_budget`` real tokens; a sequence
  longer than the budget forms a micro-batch of its own.
* **Same depth on every rank.** The plan is made once, on the driver side (`LearnerGroup`), so
  every rank runs the same number of micro-batches: each forward/backward of an FSDP2 model is a
  collective (all-gather, reduce-scatter), and a rank that ran one pass fewer would hang the
  others. Ranks with less work get empty micro-batches, run as a zero-weight pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from azr.config import MIN_TRAINING_TEMPERATURE
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
        if not (math.isfinite(s.temperature) and s.temperature >= MIN_TRAINING_TEMPERATURE):
            raise InvalidSampleError(
                f"sample {i}: temperature {s.temperature!r} (greedy or invalid samples have no "
                "behaviour distribution to train on)"
            )
        if s.top_p != 1.0 or s.top_k != 0:
            raise InvalidSampleError(
                f"sample {i}: drawn with top_p={s.top_p}, top_k={s.top_k}; the learner "
                "reproduces only the full distribution (top_p=1.0, top_k=0)"
            )
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
    """Tokens the sample occupies in a packed micro-batch (prompt + response)."""
    return len(s.prompt_token_ids) + len(s.response_token_ids)


def balance_ranks(lengths: list[int], world_size: int) -> list[list[int]]:
    """Sample indices per rank: longest first, each onto the least-loaded rank (by tokens)."""
    loads = [0] * world_size
    per_rank: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        per_rank[rank].append(i)
        loads[rank] += lengths[i]
    return per_rank


def plan_micro_batches(
    lengths: list[int], world_size: int, token_budget: int
) -> list[list[list[int]]]:
    """Split sample indices into ``plan[rank][micro_batch] = [sample indices]``.

    Samples go to ranks longest-first onto the least-loaded rank (balances tokens). On each
    rank they are packed first-fit, longest first, into micro-batches of at most
    ``token_budget`` real tokens (a sample longer than the budget travels alone). Every rank
    gets the same number of micro-batches (empty lists pad it).
    """
    plan: list[list[list[int]]] = []
    for indices in balance_ranks(lengths, world_size):
        bins: list[list[int]] = []
        room: list[int] = []
        for i in indices:  # already longest first
            slot = next((b for b, free in enumerate(room) if lengths[i] <= free), None)
            if slot is None:
                bins.append([i])
                room.append(token_budget - lengths[i])
            else:
                bins[slot].append(i)
                room[slot] -= lengths[i]
        plan.append(bins)
    depth = max(1, max(len(m) for m in plan))
    for micro in plan:
        micro.extend([] for _ in range(depth - len(micro)))
    return plan


@dataclass
class PackedMicroBatch:
    """One micro-batch as a single row of concatenated sequences, plus its response tokens.

    Per-token tensors (``targets`` … ``weights``) cover response tokens only, in order:
    ``target_positions[k]`` is the row position whose hidden state predicts ``targets[k]``.
    """

    input_ids: torch.Tensor
    """(1, L) the sequences' tokens, back to back."""
    position_ids: torch.Tensor
    """(1, L) 0, 1, … restarting at every sequence: the attention boundaries."""
    target_positions: torch.Tensor
    """(N,) long: row index of the hidden state that predicts response token k."""
    targets: torch.Tensor
    """(N,) long: the response tokens."""
    behaviour_logprobs: torch.Tensor
    """(N,) fp32: the rollout engine's logprob of each response token."""
    advantages: torch.Tensor
    """(N,) fp32: its sequence's advantage."""
    temperature: torch.Tensor
    """(N,) fp32: the temperature its sequence was sampled at."""
    weights: torch.Tensor
    """(N,) fp32: 1.0 on real tokens, 0.0 in the placeholder of an empty micro-batch."""

    @property
    def num_tokens(self) -> int:
        """Real response tokens (those the loss counts)."""
        return int(self.weights.sum().item())

    def to(self, device: str | torch.device) -> PackedMicroBatch:
        return PackedMicroBatch(*(getattr(self, f.name).to(device) for f in fields(self)))


def pack(samples: list[TrainSample]) -> PackedMicroBatch:
    """Concatenate ``samples`` into one `PackedMicroBatch` (no padding anywhere)."""
    ids: list[int] = []
    positions: list[int] = []
    target_positions: list[int] = []
    targets: list[int] = []
    behaviour: list[float] = []
    advantages: list[float] = []
    temperature: list[float] = []
    for s in samples:
        start, p, r = len(ids), len(s.prompt_token_ids), len(s.response_token_ids)
        ids += s.prompt_token_ids
        ids += s.response_token_ids
        positions += range(p + r)
        # Response token j sits at row index start + p + j; the position before predicts it.
        target_positions += range(start + p - 1, start + p - 1 + r)
        targets += s.response_token_ids
        behaviour += s.behaviour_logprobs
        advantages += [s.advantage] * r
        temperature += [s.temperature] * r
    return PackedMicroBatch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([positions], dtype=torch.long),
        target_positions=torch.tensor(target_positions, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        behaviour_logprobs=torch.tensor(behaviour, dtype=torch.float32),
        advantages=torch.tensor(advantages, dtype=torch.float32),
        temperature=torch.tensor(temperature, dtype=torch.float32),
        weights=torch.ones(len(targets), dtype=torch.float32),
    )


def empty_micro_batch() -> PackedMicroBatch:
    """A two-token, zero-weight batch: keeps a rank with no samples in the collectives."""
    placeholder = pack([TrainSample([0], [0], [0.0], advantage=0.0)])
    placeholder.weights.zero_()
    return placeholder
