"""Learner test fixtures: a tiny Qwen2 checkpoint with a word-level tokenizer, a fixed batch."""

from __future__ import annotations

import math
import random
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

from azr.config import TinyModelConfig
from azr.tasks import Role, TaskType, TrainSample
from azr.tiny.build import init_qwen2

TINY_VOCAB = 500
"""Not a multiple of 64: vLLM pads its vocab-parallel layers to one, so every weight-sync test
also checks that a reload accepts the padding rows no checkpoint holds."""


LEARNER_SHAPE = TinyModelConfig(
    hidden_size=64,
    intermediate_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    max_position_embeddings=256,
)


def build_tiny_qwen2(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Qwen2 (fp32, tied embeddings) with a word-level tokenizer."""
    shape = LEARNER_SHAPE.model_copy(update={"seed": seed})
    init_qwen2(shape, TINY_VOCAB).save_pretrained(directory)
    vocab = {f"t{i}": i for i in range(TINY_VOCAB)}
    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token="t0"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def fixed_batch(num: int = 8, seed: int = 1, vocab: int = TINY_VOCAB) -> list[TrainSample]:
    """Samples of varied lengths, mixed-sign advantages, behaviour logprobs near uniform."""
    rng = random.Random(seed)
    samples = []
    for i in range(num):
        prompt = [rng.randrange(vocab) for _ in range(3 + rng.randrange(10))]
        response = [rng.randrange(vocab) for _ in range(2 + rng.randrange(14))]
        behaviour = [-math.log(vocab) + rng.uniform(-0.3, 0.3) for _ in response]
        samples.append(
            TrainSample(
                prompt_token_ids=prompt,
                response_token_ids=response,
                behaviour_logprobs=behaviour,
                advantage=rng.uniform(0.5, 1.5) * (1 if i % 2 else -1),
                task=TaskType.DEDUCTION,
                role=Role.SOLVE,
            )
        )
    return samples
