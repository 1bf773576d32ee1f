"""Learner step memory and speed: packed + chunked response logprobs vs the former padded,
full-logits path, on the same model, batch and micro-batch budget, in the same run.

One train step (forward + backward of every micro-batch, then AdamW) of a scaled Qwen2 with
the real 151,936-token vocabulary on an AZR-like length mix: many short solver responses,
some long proposer ones, proposer prompts longer than solver prompts. Each variant runs in a
fresh child process; its peak memory is the kernel's resident-set high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs`` after set-up) minus the resident set
before the step: the step's own working memory above the model, its gradients and the AdamW
state (allocated during set-up, identical in both variants). The whole-process peaks are
printed too. Tokens/s counts real (prompt + response) tokens; padding is the share of the
positions the model computed that were padding.

Variants: ``old`` (former plan by padded size, right-padded batch, HF forward with logits at
every position, fp32 log-softmax), ``new`` (plan by real tokens, one packed row per
micro-batch, logits of response positions only, ``--chunk`` tokens at a time; the production
path), and ``new`` with activation checkpointing, compared with ``new`` on its own line.

Target (issue 13): peak ≥ 4× lower, tokens/s not lower, padding 0. Measured figures and the
machine: docs/learner.md. The last line is

    learner memory: peak X.Xx lower, tokens/s X.XXx, padding X.X%

    .venv/bin/python benchmarks/learner_memory.py [--hidden 128 --layers 4 --budget 2048]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

VOCAB = 151_936  # Qwen2.5's vocabulary (0.5B–3B; the 7B/14B checkpoints pad it to 152,064)


def length_mix(seed: int, solves: int, proposals: int) -> list[tuple[int, int]]:
    """(prompt, response) lengths: solver prompts 100–300 tokens with mostly short answers
    (3 in 4 under 64 tokens), proposer prompts 400–800 with 128–512-token programs."""
    rng = random.Random(seed)
    mix = []
    for _ in range(solves):
        short = rng.random() < 0.75
        mix.append((rng.randint(100, 300), rng.randint(16, 64) if short else rng.randint(64, 192)))
    mix += [(rng.randint(400, 800), rng.randint(128, 512)) for _ in range(proposals)]
    rng.shuffle(mix)
    return mix


def memory_kib() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def run_variant(args: argparse.Namespace) -> dict:
    """Child process: set up, then one measured train step; returns its figures."""
    import torch
    from support.padded_path import (
        collate_padded,
        padded_backward_micro_batch,
        plan_padded_micro_batches,
    )
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from azr.tasks import TrainSample
    from learner import policy
    from learner.batching import pack, plan_micro_batches, sample_length

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 128),
        max_position_embeddings=4096,
        tie_word_embeddings=False,  # as Qwen2.5-7B/14B
        dtype="float32",
    )
    model = Qwen2ForCausalLM(config).float().train()
    if args.variant == "new_ac":
        policy.enable_activation_checkpointing(model)
    policy.install_response_forward(model, args.chunk)
    rng = random.Random(1)
    samples = [
        TrainSample(
            [rng.randrange(VOCAB) for _ in range(p)],
            [rng.randrange(VOCAB) for _ in range(r)],
            [-12.0] * r,
            advantage=rng.uniform(-1, 1),
        )
        for p, r in length_mix(args.seed, args.solves, args.proposals)
    ]
    lengths = [sample_length(s) for s in samples]
    global_tokens = sum(len(s.response_token_ids) for s in samples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    if args.variant == "old":
        (plan,) = plan_padded_micro_batches(lengths, 1, args.budget)
        computed = sum(collate_padded([samples[i] for i in mb]).input_ids.numel() for mb in plan)

        def backward(indices):
            chosen = [samples[i] for i in indices]
            return padded_backward_micro_batch(model, chosen, 0.2, global_tokens)
    else:
        (plan,) = plan_micro_batches(lengths, 1, args.budget)
        computed = sum(lengths)

        def backward(indices):
            chosen = pack([samples[i] for i in indices])
            return policy.backward_micro_batch(model, chosen, 0.2, global_tokens)

    # Set-up: gradients and AdamW state exist before the measured step (a zero-gradient
    # AdamW step moves nothing), and one small micro-batch warms the kernels up.
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    backward(sorted(range(len(samples)), key=lambda i: lengths[i])[:2])
    optimizer.zero_grad(set_to_none=False)

    before = memory_kib()["VmRSS"]
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current resident set
    start = time.perf_counter()
    for indices in plan:
        backward(indices)
    optimizer.step()
    seconds = time.perf_counter() - start
    after = memory_kib()
    return {
        "variant": args.variant,
        "seconds": seconds,
        "tokens": sum(lengths),
        "computed": computed,
        "micro_batches": len(plan),
        "step_peak_mib": (after["VmHWM"] - before) / 1024,
        "process_peak_mib": after["VmHWM"] / 1024,
    }


def child(variant: str, args: argparse.Namespace) -> dict:
    argv = [sys.executable, __file__, "--child", variant]
    for key in ("hidden", "layers", "budget", "chunk", "solves", "proposals", "seed", "threads"):
        argv += [f"--{key}", str(getattr(args, key))]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--budget", type=int, default=2048, help="micro_batch_tokens")
    parser.add_argument("--chunk", type=int, default=256, help="logprob_chunk_tokens")
    parser.add_argument("--solves", type=int, default=24)
    parser.add_argument("--proposals", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant (fastest kept)")
    parser.add_argument("--child", choices=["old", "new", "new_ac"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.variant = args.child
        print(json.dumps(run_variant(args)))
        return

    from tqdm import tqdm

    order = ["old", "new", "new_ac"] * args.repeats
    runs: dict[str, list[dict]] = {}
    for variant in tqdm(order, desc="train steps", file=sys.stderr):
        runs.setdefault(variant, []).append(child(variant, args))
    best = {v: min(r, key=lambda x: x["seconds"]) for v, r in runs.items()}
    # Peaks: the old path's lowest and the new path's highest (the ratio errs low).
    peak = {
        "old": min(r["step_peak_mib"] for r in runs["old"]),
        "new": max(r["step_peak_mib"] for r in runs["new"]),
        "new_ac": max(r["step_peak_mib"] for r in runs["new_ac"]),
    }
    old, new, ac = best["old"], best["new"], best["new_ac"]
    print(
        f"shape: hidden {args.hidden}, {args.layers} layers, vocabulary {VOCAB:,}, fp32 CPU, "
        f"{args.solves + args.proposals} samples, {old['tokens']:,} real tokens, "
        f"micro_batch_tokens {args.budget}, logprob_chunk_tokens {args.chunk}"
    )
    for name, r in (("old (padded, full logits)", old), ("new (packed, chunked)", new)):
        print(
            f"{name}: {r['micro_batches']} micro-batches, {r['computed']:,} positions computed, "
            f"step peak {peak[r['variant']]:,.0f} MiB above the resident model "
            f"(process peak {r['process_peak_mib']:,.0f} MiB), "
            f"{r['tokens'] / r['seconds']:,.0f} tokens/s"
        )
    print(
        f"activation checkpointing (new path): step peak {peak['new_ac']:,.0f} MiB vs "
        f"{peak['new']:,.0f} MiB ({peak['new'] / peak['new_ac']:.2f}x lower), "
        f"time {ac['seconds'] / new['seconds']:.2f}x"
    )
    padding = 100.0 * (new["computed"] - new["tokens"]) / new["computed"]
    print(f"old path padding: {100.0 * (old['computed'] - old['tokens']) / old['computed']:.1f}%")
    print(
        f"learner memory: peak {peak['old'] / peak['new']:.1f}x lower, "
        f"tokens/s {old['seconds'] / new['seconds']:.2f}x, padding {padding:.1f}%"
    )


if __name__ == "__main__":
    main()
