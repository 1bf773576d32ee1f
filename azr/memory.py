"""Per-GPU memory estimate of a config's learner ranks and rollout engines (pure arithmetic).

From the model's shape (HF ``config.json`` fields, or a table of the paper models whose
checkpoints are not here) and the config, it adds up what each GPU holds:

* learner rank (FSDP2, W ranks, bf16 compute with fp32 master weights on GPU): the fp32
  shards of parameters, gradients and AdamW moments (16 bytes per parameter ÷ W); the root's
  unsharded bf16 parameters and gradients (embeddings, output head: FSDP2 keeps the root
  gathered from forward to the end of backward); two gathered decoder layers (current and
  prefetched) with their gradients; fp32 reduce-scatter copies; activations of one
  micro-batch (with activation checkpointing: every layer's input plus one layer recomputed
  and its backward); the packed row's block-diagonal attention mask (sdpa, tokens² bytes);
  the chunked logprob buffers and the head's fp32 gradient accumulator (`learner.logprobs`);
  a fixed allowance for the CUDA context, NCCL and allocator slack. Every transient is added
  as if all were live at once, so the total is an upper bound.
* rollout engine GPU (vLLM, tensor parallel t): weights ÷ t, the profiling run's activation
  peak (vLLM's H100 offline defaults: 16,384 batched tokens, 1,024 sequences), the same
  context allowance; the KV cache gets the rest of ``gpu_memory_utilization``, reported in
  tokens and in sequences of ``max_model_len``.

Activation bytes per token of one Qwen2 decoder layer, as autograd keeps them (c = compute
dtype bytes, H hidden, I intermediate, kv = kv heads × head dim): 2 RMSNorms upcast to fp32
(2 × (8H + cH)), q/k/v (c(H + 2kv)), rotary outputs (2cH), sdpa's inputs and output with GQA
keys and values repeated to every head under a mask (4cH), the o-projection input (cH), the
MLP's gate, activation, up and product (4cI): 16H + c(10H + 2kv + 4I).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from azr.config import AZRConfig

GIB = 1 << 30
H100_GIB = 79.6
"""What an 80 GB H100 reports (81,559 MiB)."""
CONTEXT_BYTES = 3 * GIB
"""CUDA context, NCCL communicators and allocator fragmentation per GPU process (an allowance)."""
VLLM_BATCHED_TOKENS = 16_384
VLLM_MAX_SEQS = 1_024
"""vLLM 0.32's offline (LLM class) defaults on GPUs of >= 70 GiB: its profiling run's size."""
RECOMPUTED_LAYERS = 2
"""With activation checkpointing: one layer's activations recomputed plus its backward's."""


class MemoryEstimateError(ValueError):
    """The model's shape is unknown (no config.json at the path and not a known model)."""


@dataclass(frozen=True)
class ModelShape:
    """The fields of a Qwen2-style (Llama-family) HF config that size its memory."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_parameters(self) -> int:
        """One decoder layer: q/k/v (with bias), o, gate/up/down, two norms."""
        h, kv = self.hidden, self.kv_dim
        return (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * self.intermediate + 2 * h

    @property
    def root_parameters(self) -> int:
        """Outside the layers: embeddings, the output head unless tied, the final norm."""
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + self.hidden

    @property
    def parameters(self) -> int:
        return self.layers * self.layer_parameters + self.root_parameters

    @classmethod
    def from_hf_config(cls, name: str, config: dict) -> ModelShape:
        return cls(
            name=name,
            hidden=config["hidden_size"],
            layers=config["num_hidden_layers"],
            heads=config["num_attention_heads"],
            kv_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
            intermediate=config["intermediate_size"],
            vocab=config["vocab_size"],
            tied=bool(config.get("tie_word_embeddings", False)),
        )


QWEN25_7B = ModelShape("Qwen2.5-7B", 3584, 28, 28, 4, 18944, 152064, tied=False)
QWEN25_14B = ModelShape("Qwen2.5-14B", 5120, 48, 40, 8, 13824, 152064, tied=False)
KNOWN_SHAPES = {
    alias.lower(): shape
    for shape, aliases in (
        (QWEN25_7B, ["Qwen2.5-7B", "Qwen2.5-Coder-7B", "Qwen2.5-7B-Coder", "Qwen2.5-7B-Instruct"]),
        (
            QWEN25_14B,
            ["Qwen2.5-14B", "Qwen2.5-Coder-14B", "Qwen2.5-14B-Coder", "Qwen2.5-14B-Instruct"],
        ),
    )
    for alias in aliases
}
"""Paper models by hub name or directory name (their config.json values)."""


def model_shape(config: AZRConfig) -> ModelShape:
    """The policy's shape: its config.json when the path exists, else a known model's by the
    path's last component (``Qwen/Qwen2.5-Coder-7B``, ``/mnt/models/Qwen2.5-7B-Coder``)."""
    path = config.model.path
    if path is None:
        tiny = config.model.tiny
        return ModelShape(
            "tiny",
            tiny.hidden_size,
            tiny.num_layers,
            tiny.num_heads,
            tiny.num_kv_heads,
            tiny.intermediate_size,
            tiny.vocab_size,
            tied=True,
        )
    config_file = Path(path).expanduser() / "config.json"
    if config_file.is_file():
        return ModelShape.from_hf_config(path, json.loads(config_file.read_text()))
    known = KNOWN_SHAPES.get(Path(path.rstrip("/")).name.lower())
    if known is None:
        raise MemoryEstimateError(
            f"model.path {path!r}: no config.json there and not a known model "
            f"({', '.join(sorted({s.name for s in KNOWN_SHAPES.values()}))})"
        )
    return known


def layer_activation_bytes(shape: ModelShape, dtype_bytes: int) -> int:
    """Bytes autograd keeps per token for one decoder layer (see the module docstring)."""
    h, c = shape.hidden, dtype_bytes
    return 16 * h + c * (10 * h + 2 * shape.kv_dim + 4 * shape.intermediate)


@dataclass(frozen=True)
class Estimate:
    """Named byte counts of one GPU and the GPU's size."""

    title: str
    items: list[tuple[str, int]]
    gpu_bytes: int
    notes: list[str]
    later_peak: int = 0
    """A peak at another moment, of other items (the total is the larger of the two)."""

    @property
    def total(self) -> int:
        return max(self.later_peak, sum(b for _, b in self.items))

    def render(self) -> str:
        width = max(len(name) for name, _ in self.items) + 2
        lines = [self.title]
        lines += [f"  {name:<{width}}{b / GIB:8.1f} GiB" for name, b in self.items]
        share = 100 * self.total / self.gpu_bytes
        lines.append(
            f"  {'total':<{width}}{self.total / GIB:8.1f} GiB "
            f"({share:.0f}% of {self.gpu_bytes / GIB:.1f})"
        )
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def learner_estimate(
    config: AZRConfig, shape: ModelShape, gpu_gib: float = H100_GIB, tokens: int | None = None
) -> Estimate:
    """One learner rank at a micro-batch of ``tokens`` (default: the config's budget, or
    ``max_model_len`` when longer, since one sequence always fits a micro-batch of its own).
    ``learner.device`` cuda or auto is sized as a GPU rank (bf16 compute), cpu as fp32."""
    le = config.learner
    gpu = le.device != "cpu"
    c = 2 if gpu else 4
    w = le.num_workers
    t = tokens or max(le.micro_batch_tokens, config.rollout.max_model_len)
    p, root, layer = shape.parameters, shape.root_parameters, shape.layer_parameters
    head = shape.vocab * shape.hidden
    per_layer = layer_activation_bytes(shape, c)
    if le.activation_checkpointing:
        activations = t * (shape.layers * c * shape.hidden + RECOMPUTED_LAYERS * per_layer)
        act_name = f"activations ({t:,} tokens, checkpointed)"
    else:
        activations = t * (shape.layers + 1) * per_layer
        act_name = f"activations ({t:,} tokens, all layers kept)"
    chunk = min(le.logprob_chunk_tokens, t)
    items = [
        ("parameters, fp32 shard", 4 * p // w),
        ("gradients, fp32 shard", 4 * p // w),
        ("AdamW moments, fp32 shard", 8 * p // w),
        ("root gathered: params + grads", 2 * c * root),
        ("2 gathered layers: params + grads", 2 * 2 * c * layer),
        ("layers' reduce-scatter fp32 copies", 4 * 2 * layer if gpu else 0),
        (act_name, activations),
        ("packed attention mask (sdpa)", t * t),
        (f"logits chunk ({chunk:,} tokens)", chunk * shape.vocab * (c + 8)),
        ("head gradient accumulator", (4 + c) * head),
        ("CUDA context, NCCL, slack", CONTEXT_BYTES if gpu else 0),
    ]
    # The root reduce-scatters last, after every activation is freed: a second, later peak.
    states = sum(b for _, b in items[:4]) + items[-1][1]
    end_of_backward = states + (4 * root if gpu else 0)
    where = f"{w} FSDP2 ranks on {'GPU, bf16 compute' if gpu else 'CPU, fp32'}"
    return Estimate(
        f"learner rank ({where}; {shape.name}, {p / 1e9:.2f}e9 parameters)",
        items,
        int(gpu_gib * GIB),
        [
            f"end of backward (root gradients reduce-scattered in fp32, activations freed): "
            f"{end_of_backward / GIB:.1f} GiB"
        ],
        later_peak=end_of_backward,
    )


def largest_micro_batch(
    config: AZRConfig, shape: ModelShape, gpu_gib: float = H100_GIB, fraction: float = 0.9
) -> int:
    """Largest multiple of 1,024 tokens whose learner estimate stays within ``fraction`` of
    the GPU (0 when even ``max_model_len`` tokens do not)."""
    best, tokens = 0, 1024
    while tokens <= 1 << 20:
        estimate = learner_estimate(config, shape, gpu_gib, tokens=tokens)
        if estimate.total > fraction * estimate.gpu_bytes:
            break
        best = tokens
        tokens += 1024
    return best if best >= config.rollout.max_model_len else 0


def kv_bytes_per_token(shape: ModelShape, tensor_parallel: int, dtype_bytes: int) -> int:
    """K and V of every layer for one token on one GPU (KV heads split over TP, at least one)."""
    heads = max(1, shape.kv_heads // tensor_parallel)
    return 2 * shape.layers * heads * shape.head_dim * dtype_bytes


def rollout_estimate(config: AZRConfig, shape: ModelShape, gpu_gib: float = H100_GIB) -> Estimate:
    """One GPU of one vLLM engine: weights, profiling peak, context; KV cache gets the rest.
    (A CPU engine: its weights and the explicit ``kv_cache_memory_bytes``.)"""
    ro = config.rollout
    c = 4 if ro.dtype == "float32" else 2
    if ro.device == "cpu":
        per_kv = kv_bytes_per_token(shape, 1, c)
        capacity = ro.kv_cache_memory_bytes // per_kv
        return Estimate(
            f"rollout engine (CPU, {ro.num_actors} engines)",
            [("weights", c * shape.parameters), ("KV cache", ro.kv_cache_memory_bytes)],
            int(gpu_gib * GIB),
            [f"KV cache holds {capacity:,} tokens ({per_kv / 1024:.1f} KiB each)"],
        )
    tp = ro.tensor_parallel_size
    gpu_bytes = int(gpu_gib * GIB)
    batched = VLLM_BATCHED_TOKENS
    per_token = c * (
        4 * shape.hidden + (shape.hidden + 2 * shape.kv_dim + 3 * shape.intermediate) // tp
    )
    sampler = VLLM_MAX_SEQS * shape.vocab * 4 * 2  # fp32 logits and their logprobs
    items = [
        (f"weights ({'fp32' if c == 4 else 'bf16'}, / TP {tp})", c * shape.parameters // tp),
        (f"profiling peak ({batched:,} tokens)", batched * per_token + sampler),
        ("CUDA context, NCCL, slack", CONTEXT_BYTES),
    ]
    budget = int(ro.gpu_memory_utilization * gpu_bytes)
    kv = max(0, budget - sum(b for _, b in items))
    items.append((f"KV cache (to {ro.gpu_memory_utilization:.2f} of the GPU)", kv))
    per_kv = kv_bytes_per_token(shape, tp, c)
    capacity = kv // per_kv
    notes = [
        f"KV cache holds {capacity:,} tokens ({per_kv / 1024:.0f} KiB each) = "
        f"{capacity // ro.max_model_len:,} sequences of max_model_len {ro.max_model_len:,}"
    ]
    if kv == 0:
        notes.append("NO ROOM for a KV cache: raise gpu_memory_utilization or tensor_parallel_size")
    return Estimate(
        f"rollout engine GPU ({ro.num_actors} engines x TP {tp}; vLLM)", items, gpu_bytes, notes
    )


def memory_report(config: AZRConfig, gpu_gib: float = H100_GIB) -> str:
    """The text `azr config show --memory` prints."""
    shape = model_shape(config)
    fits = largest_micro_batch(config, shape, gpu_gib)
    note = (
        f"largest micro_batch_tokens within 90% of the GPU: {fits:,}"
        if fits
        else "even one max_model_len sequence does not fit 90% of the GPU"
    )
    learner = learner_estimate(config, shape, gpu_gib)
    learner = replace(learner, notes=[*learner.notes, note])
    header = (
        f"per-GPU memory estimate (upper bound; GPU {gpu_gib:.1f} GiB; "
        f"{shape.layers} layers, hidden {shape.hidden}, vocabulary {shape.vocab:,})"
    )
    return "\n".join([header, learner.render(), rollout_estimate(config, shape, gpu_gib).render()])
