"""Rollout throughput: one RolloutActor (vLLM CPU build, in a Ray actor) vs HF `generate`.

Same model (the un-warmed tiny model), same prompts, same sampling (temperature 1, fixed
max_tokens, no early stop is forced either way). Prints generated tokens/s of each and the ratio.

    .venv/bin/python benchmarks/rollout_throughput.py [--prompts 16] [--n 4] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import ray
import torch

from actors.rollout import RolloutActor
from azr.config import ModelConfig, RolloutConfig, SamplingConfig, TinyModelConfig
from azr.models import ensure_model

REPO = Path(__file__).resolve().parent.parent


def hf_tokens_per_s(path: Path, prompts: list[str], n: int, max_tokens: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    torch.set_num_threads(1)  # the rollout actor gets one pinned thread too
    started, generated = time.perf_counter(), 0
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            max_new_tokens=max_tokens,
            num_return_sequences=n,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    new = out[:, enc["input_ids"].shape[1] :]
    generated = int((new != tokenizer.pad_token_id).sum())
    return generated / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    scratch = REPO / ".scratch"
    for name in ("tmp", "ray", "vllm"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(scratch / "vllm"))
    tiny = TinyModelConfig(warm_start_steps=0)
    path = ensure_model(ModelConfig(cache_dir=str(scratch / "models"), tiny=tiny))
    prompts = [f"def f{i}(x):\n    return x * {i} + " for i in range(args.prompts)]
    sampling = SamplingConfig(n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=0)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = RolloutConfig(device="cpu", cpu_threads=1, kv_cache_memory_bytes=256 << 20)
        actor = RolloutActor.options(num_cpus=1).remote(str(path), config, 0)
        ray.get(actor.generate.remote(prompts[:1], sampling))  # warm-up (kernel first use)
        started = time.perf_counter()
        results = ray.get(actor.generate.remote(prompts, sampling))
        seconds = time.perf_counter() - started
        tokens = sum(len(c.token_ids) for g in results for c in g.completions)
        vllm_rate = tokens / seconds
    finally:
        ray.shutdown()
    hf_rate = hf_tokens_per_s(path, prompts, args.n, args.max_tokens)
    print(f"workload: {args.prompts} prompts x n={args.n} x {args.max_tokens} tokens")
    print(f"rollout actor (vLLM CPU, 1 thread): {vllm_rate:8.1f} generated tokens/s")
    print(f"baseline HF generate (1 thread):    {hf_rate:8.1f} generated tokens/s")
    print(f"ratio rollout/baseline: {vllm_rate / hf_rate:.2f}x")


if __name__ == "__main__":
    main()
