"""The AZR policy loss: PPO-style clipped surrogate on TRR++ advantages, token-mean.

Invariant (exact token-mean across micro-batches and ranks): a micro-batch returns the **sum**
of its per-token losses divided by ``global_token_count`` (the response tokens of the whole
step's batch, on all ranks), never its own mean; summed over micro-batches and ranks (FSDP
reduce-scatter in SUM mode, ``learner.worker``) that is exactly
``sum_all_tokens(loss) / global_token_count`` whatever the split. Why: docs/learner.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LossTerms:
    """One micro-batch's contribution. Every field is a sum over its tokens ÷ global tokens.

    ``loss`` carries the gradient; the rest are detached scalars for metrics, so adding the
    terms of every micro-batch and rank gives the global token-mean of each quantity.
    """

    loss: torch.Tensor
    clip_fraction: torch.Tensor
    """Share of tokens whose clipped term was the active (larger-loss) one."""
    mismatch_kl: torch.Tensor
    """k3 estimate of KL(behaviour ‖ learner) on the sampled tokens (≥ 0, 0 iff they agree)."""
    ratio_mean: torch.Tensor


def clipped_policy_loss(
    logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_ratio: float,
    global_token_count: int,
) -> LossTerms:
    """Clipped policy-gradient loss of one micro-batch, normalised by the global token count.

    Args:
        logprobs: learner log-probabilities of the response tokens, with grad; any shape
            (the learner passes its packed (N,) tokens).
        behaviour_logprobs: rollout engine log-probabilities of the same tokens.
        advantages: each token's advantage (its sequence's), broadcastable to ``logprobs``.
        mask: weight of each token in the sums: 1.0 on response tokens, 0.0 elsewhere.
        clip_ratio: ε of the ratio clip, applied on both sides: [1 − ε, 1 + ε].
        global_token_count: response tokens in the whole step's batch (all micro-batches,
            all ranks); see the module docstring.
    """
    if global_token_count <= 0:
        raise ValueError(f"global_token_count must be positive, got {global_token_count}")
    mask = mask.to(logprobs.dtype)
    log_ratio = (logprobs - behaviour_logprobs) * mask
    ratio = torch.exp(log_ratio)
    adv = advantages.to(logprobs.dtype)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    # max of the two losses = min of the two surrogate objectives (the PPO pessimistic bound).
    per_token = torch.maximum(unclipped, clipped)
    loss = (per_token * mask).sum() / global_token_count
    with torch.no_grad():
        clip_active = (clipped > unclipped).to(logprobs.dtype) * mask
        # k3 = (r − 1) − log r with r = learner / behaviour: non-negative, unbiased under the
        # behaviour distribution; stale or wrong rollout weights make it grow.
        k3 = (ratio - 1.0) - log_ratio
        return LossTerms(
            loss=loss,
            clip_fraction=clip_active.sum() / global_token_count,
            mismatch_kl=(k3 * mask).sum() / global_token_count,
            ratio_mean=(ratio * mask).sum() / global_token_count,
        )
