"""The trained HF model made ready for the learner: activation checkpointing, FSDP2 sharding,
and the packed, chunked logprob forward registered as an FSDP forward method.

Invariants:

* parameter names stay the HF names (composable checkpointing adds no wrapper module), so
  checkpoints, weight sync and the rollout engine see the same names with or without it;
* checkpointing is applied to each decoder layer *before* ``fully_shard`` (FSDP2's hooks run
  outside the recomputed region, and FSDP2 skips its pre-forward all-gather during a
  recomputation because the pre-backward one already ran);
* `response_logprobs` runs inside the root module's FSDP pre/post-forward hooks, so the root's
  own parameters (embeddings, final norm, output head) are all-gathered while it runs.
"""

from __future__ import annotations

import types

import torch
from torch.distributed._composable import checkpoint
from torch.distributed.fsdp import (
    FSDPModule,
    MixedPrecisionPolicy,
    fully_shard,
    register_fsdp_forward_method,
)

from learner.batching import PackedMicroBatch
from learner.logprobs import packed_token_logprobs
from learner.loss import clipped_policy_loss

FORWARD_METHOD = "azr_response_logprobs"


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer blocks (HF's ``_no_split_modules`` names their classes)."""
    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no decoder layers found (_no_split_modules)")
    return layers


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute every decoder layer in backward (non-reentrant); call before `shard`."""
    for layer in decoder_layers(model):
        checkpoint(layer)


def shard(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """fully_shard each decoder layer, then the root (embeddings, norm, head); SUM gradients."""
    bf16 = {"param_dtype": torch.bfloat16, "reduce_dtype": torch.float32}
    mp = MixedPrecisionPolicy(**bf16) if device == "cuda" else MixedPrecisionPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, mp_policy=mp)
    # The root's only floating-point input is the batch of `response_logprobs`: its
    # temperatures must stay fp32 (bf16 turns 0.6 into 0.6016), so the root casts nothing;
    # the layers still get bf16 activations from the bf16 embeddings.
    root_mp = (
        MixedPrecisionPolicy(**bf16, cast_forward_inputs=False)
        if device == "cuda"
        else MixedPrecisionPolicy()
    )
    fully_shard(model, mp_policy=root_mp)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # SUM the rank gradients: each rank's loss is already ÷ the global token count.
            module.set_force_sum_reduction_for_comms(True)
            module.set_gradient_divide_factor(1.0)
    return model


def install_response_forward(model: torch.nn.Module, chunk_tokens: int) -> None:
    """Give ``model`` the method `response_logprobs` as ``model.azr_response_logprobs``, run
    under FSDP's forward hooks when the model is sharded (a plain call otherwise)."""

    def method(self: torch.nn.Module, batch: PackedMicroBatch) -> tuple[torch.Tensor, ...]:
        return packed_token_logprobs(
            self,
            batch.input_ids,
            batch.position_ids,
            batch.target_positions,
            batch.targets,
            batch.temperature,
            chunk_tokens,
        )

    setattr(model, FORWARD_METHOD, types.MethodType(method, model))
    register_fsdp_forward_method(model, FORWARD_METHOD)


def response_logprobs(
    model: torch.nn.Module, batch: PackedMicroBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logprob (with grad) and entropy (detached) of every response token of ``batch``."""
    return getattr(model, FORWARD_METHOD)(batch)


def backward_micro_batch(
    model: torch.nn.Module, batch: PackedMicroBatch, clip_ratio: float, global_token_count: int
) -> dict[str, float]:
    """Forward and backward of one micro-batch (gradients accumulate into ``model``).

    Returns its share of the step's token-means: loss, clip_fraction, mismatch_kl, entropy.
    """
    logprobs, entropy = response_logprobs(model, batch)
    terms = clipped_policy_loss(
        logprobs,
        batch.behaviour_logprobs,
        batch.advantages,
        batch.weights,
        clip_ratio,
        global_token_count,
    )
    terms.loss.backward()
    return {
        "loss": terms.loss.item(),
        "clip_fraction": terms.clip_fraction.item(),
        "mismatch_kl": terms.mismatch_kl.item(),
        "entropy": ((entropy * batch.weights).sum() / global_token_count).item(),
    }
