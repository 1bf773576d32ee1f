"""The learner's former path, kept as the reference the packed, chunked path is checked against
(tests) and measured against (benchmarks/learner_memory.py); production never uses it.

Micro-batches are planned by *padded* size (count × longest ≤ budget), right-padded into a
(B, L) batch, run through the whole HF forward (full-vocabulary logits at every position,
prompts and padding included), then log-softmaxed in fp32. The only change from the former
code is the per-sequence temperature, so that both paths compute the same quantity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from azr.tasks import TrainSample
from learner.batching import balance_ranks, sample_length
from learner.loss import clipped_policy_loss


def plan_padded_micro_batches(
    lengths: list[int], world_size: int, token_budget: int
) -> list[list[list[int]]]:
    """Former plan: longest-first onto the least-loaded rank; on each rank, length-sorted
    samples while ``count × longest ≤ token_budget``; same depth on every rank."""
    plan: list[list[list[int]]] = []
    for indices in balance_ranks(lengths, world_size):
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
class PaddedBatch:
    input_ids: torch.Tensor
    """(B, L) right-padded with 0."""
    targets: torch.Tensor
    """(B, L − 1) = input_ids[:, 1:]."""
    response_mask: torch.Tensor
    """(B, L − 1) 1.0 where targets[b, t] is a response token."""
    behaviour_logprobs: torch.Tensor
    advantages: torch.Tensor
    """(B,)"""
    temperature: torch.Tensor
    """(B,)"""
    lengths: tuple[int, ...]
    """Real tokens of each row."""

    @property
    def padding_tokens(self) -> int:
        return self.input_ids.numel() - sum(self.lengths)


def collate_padded(samples: list[TrainSample]) -> PaddedBatch:
    length = max(sample_length(s) for s in samples)
    batch = len(samples)
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    mask = torch.zeros(batch, length - 1)
    behaviour = torch.zeros(batch, length - 1)
    for b, s in enumerate(samples):
        p, r = len(s.prompt_token_ids), len(s.response_token_ids)
        input_ids[b, :p] = torch.tensor(s.prompt_token_ids)
        input_ids[b, p : p + r] = torch.tensor(s.response_token_ids)
        mask[b, p - 1 : p - 1 + r] = 1.0
        behaviour[b, p - 1 : p - 1 + r] = torch.tensor(s.behaviour_logprobs)
    return PaddedBatch(
        input_ids,
        input_ids[:, 1:],
        mask,
        behaviour,
        torch.tensor([s.advantage for s in samples]),
        torch.tensor([s.temperature for s in samples]),
        tuple(sample_length(s) for s in samples),
    )


def token_logprobs_and_entropy(
    logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The former fp32 log-softmax over full logits (and the softmax entropy, detached)."""
    logits = logits.float()
    log_z = torch.logsumexp(logits, dim=-1)
    target_logits = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    logprobs = target_logits - log_z
    entropy = None
    if with_entropy:
        with torch.no_grad():
            probs = torch.softmax(logits, dim=-1)
            entropy = log_z - (probs * logits).sum(-1)
    return logprobs, entropy


def padded_backward_micro_batch(
    model: torch.nn.Module, samples: list[TrainSample], clip_ratio: float, global_tokens: int
) -> dict[str, float]:
    """The former per-micro-batch forward + backward; same return as the packed path's."""
    batch = collate_padded(samples)
    logits = model(input_ids=batch.input_ids, use_cache=False).logits[:, :-1]
    if (batch.temperature != 1.0).any():  # the former code had no temperature (one copy less)
        logits = logits.float() / batch.temperature[:, None, None]
    logprobs, entropy = token_logprobs_and_entropy(logits, batch.targets)
    terms = clipped_policy_loss(
        logprobs,
        batch.behaviour_logprobs,
        batch.advantages[:, None],
        batch.response_mask,
        clip_ratio,
        global_tokens,
    )
    terms.loss.backward()
    return {
        "loss": terms.loss.item(),
        "clip_fraction": terms.clip_fraction.item(),
        "mismatch_kl": terms.mismatch_kl.item(),
        "entropy": ((entropy * batch.response_mask).sum() / global_tokens).item(),
    }
