"""Which policy model a run trains: a checkpoint path or hub id, or the embedded tiny model."""

from __future__ import annotations

from pydantic import Field

from azr.config.section import Section


class TinyModelConfig(Section):
    """Shape of the embedded `tiny` model (Qwen2 architecture, random init, then warm-started)."""

    vocab_size: int = Field(3072, ge=300)
    """Byte-level BPE vocabulary size of the tokenizer trained offline on CRUXEval programs."""
    hidden_size: int = Field(128, ge=16)
    """Transformer width."""
    num_layers: int = Field(3, ge=1)
    """Number of decoder layers."""
    num_heads: int = Field(4, ge=1)
    """Attention heads."""
    num_kv_heads: int = Field(2, ge=1)
    """Key/value heads (grouped-query attention, as in Qwen2.5)."""
    intermediate_size: int = Field(384, ge=16)
    """MLP width."""
    max_position_embeddings: int = Field(2048, ge=128)
    """Longest sequence (prompt + response) the model supports."""
    seed: int = 0
    """Seed of the random initialisation and of the tokenizer corpus shuffle."""
    warm_start_steps: int = Field(200, ge=0)
    """Supervised warm-start steps on well-formed AZR responses (0 disables the warm start)."""
    warm_start_lr: float = Field(5e-3, gt=0)
    """Learning rate of the warm start."""
    warm_start_batch_size: int = Field(8, ge=1)
    """Sequences per warm-start step (2 proposals, 2 induction proposals, 4 solves at 8)."""
    data_path: str | None = None
    """CRUXEval JSONL for the tokenizer corpus and the warm start; None = the repo's own
    `data/cruxeval/cruxeval.jsonl`."""
    warm_start_max_seconds: float = Field(1200.0, gt=0)
    """Safety cap on the warm start's wall clock (200 steps take ~2 min on 2 cores); a capped warm
    start is used for this run but not cached, so the next run trains it again in full."""


class ModelConfig(Section):
    """Which policy model to train."""

    path: str | None = None
    """A local Hugging Face checkpoint directory, or a hub id such as `Qwen/Qwen2.5-7B-Coder`
    (fetched once per node into the Hugging Face cache, local files first). None builds the
    embedded tiny model."""
    cache_dir: str = "~/.cache/azr/models"
    """Where the tiny model (tokenizer, weights, warm start) is built and cached."""
    tiny: TinyModelConfig = TinyModelConfig()
    """Settings of the embedded tiny model (used only when `path` is None)."""
