"""The per-GPU memory estimate (azr/memory.py) against hand-computed numbers and HF's own
parameter counts, and the shipped GPU configs against it."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from azr.config import CONFIG_DIR, load_config
from azr.memory import (
    QWEN25_7B,
    QWEN25_14B,
    MemoryEstimateError,
    ModelShape,
    kv_bytes_per_token,
    layer_activation_bytes,
    learner_estimate,
    model_shape,
    rollout_estimate,
)
from driver.cli import main

GPU_CONFIGS = ["qwen2.5-7b-coder.yaml", "qwen2.5-14b-coder.yaml"]


@pytest.mark.parametrize("shape", [QWEN25_7B, QWEN25_14B], ids=lambda s: s.name)
def test_parameter_count_equals_the_hf_models(shape: ModelShape):
    config = Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        tie_word_embeddings=shape.tied,
    )
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    assert shape.layer_parameters == sum(p.numel() for p in model.model.layers[0].parameters())


def test_7b_figures_by_hand():
    # Qwen2.5-7B: 7,615,616,512 parameters (its model card: 7.61B).
    assert QWEN25_7B.parameters == 7_615_616_512
    # K and V, 28 layers, 4 KV heads over TP 2 = 2 per GPU, head dim 128, bf16.
    assert kv_bytes_per_token(QWEN25_7B, 2, 2) == 2 * 28 * 2 * 128 * 2 == 28_672
    assert kv_bytes_per_token(QWEN25_7B, 8, 2) == 2 * 28 * 1 * 128 * 2  # a head per GPU at least
    # One layer per token, bf16: 16·3584 + 2·(10·3584 + 2·512 + 4·18944).
    assert layer_activation_bytes(QWEN25_7B, 2) == 57_344 + 2 * (35_840 + 1_024 + 75_776)

    config = load_config(CONFIG_DIR / "qwen2.5-7b-coder.yaml")
    learner = dict(learner_estimate(config, QWEN25_7B, tokens=32_768).items)
    assert learner["parameters, fp32 shard"] == 4 * 7_615_616_512 // 8
    assert learner["AdamW moments, fp32 shard"] == 8 * 7_615_616_512 // 8
    # Checkpointed: every layer's bf16 input (28·2·3584) + 2 layers' full activations.
    assert learner["activations (32,768 tokens, checkpointed)"] == 32_768 * (
        28 * 2 * 3584 + 2 * 282_624
    )
    assert learner["packed attention mask (sdpa)"] == 32_768**2
    assert learner["logits chunk (1,024 tokens)"] == 1024 * 152_064 * (2 + 4 + 4)

    rollout = rollout_estimate(config, QWEN25_7B)
    weights = dict(rollout.items)["weights (bf16, / TP 2)"]
    assert weights == 2 * 7_615_616_512 // 2
    budget = int(config.rollout.gpu_memory_utilization * rollout.gpu_bytes)
    assert rollout.total == budget  # the KV cache takes exactly what the others leave


def test_activation_checkpointing_is_what_makes_a_7b_micro_batch_fit():
    config = load_config(CONFIG_DIR / "qwen2.5-7b-coder.yaml")
    on = learner_estimate(config, QWEN25_7B)
    off = learner_estimate(
        load_config(
            CONFIG_DIR / "qwen2.5-7b-coder.yaml", ["learner.activation_checkpointing=false"]
        ),
        QWEN25_7B,
    )
    assert on.total < 0.9 * on.gpu_bytes < off.total


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_shipped_gpu_configs_fit_their_estimate(name):
    config = load_config(CONFIG_DIR / name)
    shape = model_shape(config)
    assert config.learner.activation_checkpointing
    learner = learner_estimate(config, shape)
    assert learner.total < 0.9 * learner.gpu_bytes
    rollout = rollout_estimate(config, shape)
    kv = dict(rollout.items)[
        f"KV cache (to {config.rollout.gpu_memory_utilization:.2f} of the GPU)"
    ]
    # Room for far more than one full-length sequence per engine.
    per_token = kv_bytes_per_token(shape, config.rollout.tensor_parallel_size, 2)
    assert kv > 32 * config.rollout.max_model_len * per_token


def test_shape_from_config_json_or_known_names(tmp_path):
    hf = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 512,
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(hf))
    shape = model_shape(load_config(overrides=[f"model.path={tmp_path}"]))
    assert (shape.hidden, shape.kv_dim, shape.tied) == (64, 32, True)
    for path in ("Qwen/Qwen2.5-Coder-7B", "/mnt/models/Qwen2.5-7B-Coder/"):
        assert model_shape(load_config(overrides=[f"model.path={path}"])) == QWEN25_7B
    with pytest.raises(MemoryEstimateError, match="Llama-3-8B"):
        model_shape(load_config(overrides=["model.path=/models/Llama-3-8B"]))


def test_cli_prints_the_estimate(capsys):
    assert main(["config", "show", "--memory", "--config", str(CONFIG_DIR / GPU_CONFIGS[0])]) == 0
    out = capsys.readouterr().out
    assert "learner rank (8 FSDP2 ranks" in out and "7.62e9 parameters" in out
    assert "KV cache holds" in out and "largest micro_batch_tokens" in out
    assert main(["config", "show", "--memory", "model.path=/models/unknown"]) == 2
    assert "no config.json" in capsys.readouterr().err
