"""Log-probabilities of chosen tokens at their sampling temperature, in vocabulary chunks.

The learner never materialises full-vocabulary logits for a micro-batch. The model runs to its
last hidden states; only the positions that predict a response token go through the output
head, ``chunk_tokens`` positions at a time, and a custom autograd function recomputes each
chunk's logits in backward instead of keeping them. Invariants:

* at most ``chunk_tokens × vocabulary`` fp32 logits (and the same again for the softmax)
  exist at any moment, in forward and in backward;
* logits are computed in the head's dtype and upcast to fp32 (as the HF path does), then
  divided by the token's sampling temperature before the log-softmax, so the result is the
  log-probability under the distribution the rollout engine sampled from (vLLM's
  ``processed_logprobs``);
* the entropy is of that same tempered distribution and carries no gradient (a metric);
* the gradient equals that of ``log_softmax(h @ W.T / T).gather(target)`` to fp32 rounding.
"""

from __future__ import annotations

import torch


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """``(hidden, weight) → (logprob of target, entropy)`` per row, one chunk at a time."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_tokens):
        n = hidden.shape[0]
        logprobs = hidden.new_empty(n, dtype=torch.float32)
        entropy = hidden.new_empty(n, dtype=torch.float32)
        log_z = hidden.new_empty(n, dtype=torch.float32)
        with torch.no_grad():
            for start in range(0, n, chunk_tokens):
                rows = slice(start, start + chunk_tokens)
                logits = _scaled_logits(hidden[rows], weight, temperature[rows])
                lse = torch.logsumexp(logits, dim=-1)
                log_z[rows] = lse
                logprobs[rows] = logits.gather(1, targets[rows, None])[:, 0] - lse
                log_p = logits.sub_(lse[:, None])  # in place: one C × V buffer, not two
                entropy[rows] = -torch.linalg.vecdot(log_p.exp(), log_p)
                del logits, log_p
        ctx.save_for_backward(hidden, weight, targets, temperature, log_z)
        ctx.chunk_tokens = chunk_tokens
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, _grad_entropy):
        hidden, weight, targets, temperature, log_z = ctx.saved_tensors
        chunk = ctx.chunk_tokens
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        # fp32 accumulation over chunks (a bf16 sum of partial products would lose bits).
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            if ctx.needs_input_grad[1]
            else None
        )
        for start in range(0, hidden.shape[0], chunk):
            rows = slice(start, start + chunk)
            h, t, g = hidden[rows], targets[rows], grad_logprobs[rows].float()
            # d logprob / d (logits/T) = onehot(target) − softmax; chain rule: × g and ÷ T.
            probs = _scaled_logits(h, weight, temperature[rows])
            probs.sub_(log_z[rows, None]).exp_()
            d_logits = probs.mul_(-g[:, None])
            d_logits[torch.arange(len(t), device=t.device), t] += g
            d_logits.div_(temperature[rows, None])
            d_logits = d_logits.to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[rows] = (d_logits @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight.add_(d_logits.T @ h.to(weight.dtype))
            del probs, d_logits
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def _scaled_logits(
    hidden: torch.Tensor, weight: torch.Tensor, temperature: torch.Tensor
) -> torch.Tensor:
    """fp32 ``(h @ Wᵀ) / T`` of one chunk (a fresh C × V tensor the caller may overwrite);
    divided, not multiplied by 1/T, as vLLM's sampler does, for the same rounding."""
    logits = (hidden.to(weight.dtype) @ weight.T).float()
    return logits.div_(temperature[:, None])


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: torch.Tensor,
    chunk_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``targets[k]`` under ``softmax(hidden[k] @ weightᵀ / temperature[k])``
    and the entropy of that distribution (detached); both (N,) fp32.

    ``hidden`` (N, H) are the final hidden states of the predicting positions, ``weight``
    (V, H) the output head (no bias).
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if temperature.dtype != torch.float32:
        # e.g. cast to bf16 by a mixed-precision wrapper: 0.6 would become 0.6016.
        raise TypeError(f"temperature must be float32, got {temperature.dtype}")
    return _ChunkedTokenLogprobs.apply(hidden, weight, targets, temperature, chunk_tokens)


def packed_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    target_positions: torch.Tensor,
    targets: torch.Tensor,
    temperature: torch.Tensor,
    chunk_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run an HF causal LM over one packed row and return `token_logprobs` of ``targets``.

    ``position_ids`` restart at 0 for each packed sequence; with no attention mask and no cache,
    transformers turns the restarts into a block-diagonal causal mask (sdpa, eager, flex) or
    per-sequence lengths (flash attention), so no token sees another sequence.
    """
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("the output head has a bias; chunked logprobs support bias-free heads")
    hidden = model.base_model(
        input_ids=input_ids, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    predicting = hidden[0].index_select(0, target_positions)
    return token_logprobs(predicting, head.weight, targets, temperature, chunk_tokens)
