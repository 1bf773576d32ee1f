"""Weight-sync throughput: LearnerGroup.sync_weights into a real vLLM CPU RolloutGroup.

Prints GB/s of a full sync (rank-0 gather of the FSDP2 shards, bucketing, ``ray.put``,
the rollout engine's in-place reload) and, measured in the same run on the same bytes, of a
plain in-memory copy (``torch.Tensor.copy_`` of every parameter into a preallocated twin),
and their ratio (target ≥ 0.5×). Also prints the two halves of a sync: learner side (gather +
put) and rollout side (fetch + reload).

    .venv/bin/python benchmarks/weight_sync.py [--hidden 512 --layers 8 --workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch
from rich.console import Console

from actors.group import RolloutGroup
from azr.config import LearnerConfig, ModelConfig, RolloutConfig, TinyModelConfig
from azr.models import ensure_model
from azr.tiny.build import init_qwen2
from learner.checkpoint import load_hf_weights
from learner.group import LearnerGroup
from learner.weight_buckets import tensor_bytes

REPO = Path(__file__).resolve().parent.parent
console = Console()


def build_model(directory: Path, hidden: int, layers: int) -> Path:
    """A Qwen2 of the requested size sharing the tiny model's tokenizer (vLLM needs one)."""
    from transformers import Qwen2Config

    base = ensure_model(
        ModelConfig(
            cache_dir=str(REPO / ".scratch/models"), tiny=TinyModelConfig(warm_start_steps=0)
        )
    )
    base_config = Qwen2Config.from_pretrained(base)
    shape = TinyModelConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_layers=layers,
        num_heads=hidden // 64,
        num_kv_heads=max(1, hidden // 256),
        max_position_embeddings=base_config.max_position_embeddings,
    )
    model = init_qwen2(
        shape,
        base_config.vocab_size,
        eos_id=base_config.eos_token_id,
        pad_id=base_config.pad_token_id,
    )
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (base / name).is_file():
            shutil.copy2(base / name, directory / name)
    return directory


def memcpy_gbps(state: dict[str, torch.Tensor], repeats: int, allocate: bool) -> float:
    """GB/s of copying every tensor: into a preallocated twin (the baseline of the ratio), or
    into fresh memory (``allocate``: what any transport pays, page faults included)."""
    twins = {name: torch.empty_like(t) for name, t in state.items()}
    total = sum(tensor_bytes(t) for t in state.values())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for name, tensor in state.items():
            if allocate:
                twins[name] = tensor.clone()
            else:
                twins[name].copy_(tensor)
        times.append(time.perf_counter() - start)
    return total / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bucket-mb", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="azr-bench-sync-", dir=REPO / ".scratch"))
    rollout = learner = None
    try:
        ray.init(
            address="local", num_cpus=args.workers + 2, include_dashboard=False, log_to_driver=False
        )
        with console.status("building the model, the learner group and the vLLM engine"):
            model = str(build_model(workdir / "model", args.hidden, args.layers))
            state = load_hf_weights(Path(model))
            state.pop("lm_head.weight", None)  # tied: not sent
            total = sum(tensor_bytes(t) for t in state.values())
            learner_config = LearnerConfig(
                num_workers=args.workers, sync_bucket_mb=args.bucket_mb, cpus_per_worker=1
            )
            learner = LearnerGroup(model, learner_config, seed=0)
            rollout = RolloutGroup(
                model,
                RolloutConfig(device="cpu", dtype="float32", kv_cache_memory_bytes=64 << 20),
            )
        console.print(f"model: {total / 1e6:.1f} MB fp32, {len(state)} tensors, W={args.workers}")
        syncs, learner_side, rollout_side, gathers, puts, fetches = [], [], [], [], [], []
        for version in range(1, args.repeats + 2):
            result = learner.sync_weights(rollout, version)
            if version == 1:
                continue  # warm-up: first object-store allocations, first reload
            syncs.append(result["seconds"])
            rollout_side.append(result["rollout"][0]["seconds"])
            fetches.append(result["rollout"][0]["fetch_s"])
            learner_side.append(result["seconds"] - rollout_side[-1])
            gathers.append(result["gather_s"])
            puts.append(result["put_s"])
            console.print(
                f"  sync v{version}: {result['seconds'] * 1e3:.1f} ms, {result['buckets']:.0f} buckets"
            )
        baseline = memcpy_gbps(state, args.repeats, allocate=False)
        fresh = memcpy_gbps(state, args.repeats, allocate=True)
        sync_gbps = total / statistics.median(syncs) / 1e9
        console.print(f"weight sync      : {sync_gbps:.3f} GB/s (median of {len(syncs)})")
        console.print(
            f"  learner side   : {statistics.median(learner_side) * 1e3:.1f} ms "
            f"(gather {statistics.median(gathers) * 1e3:.1f} ms, "
            f"ray.put {statistics.median(puts) * 1e3:.1f} ms, rest: Ray calls)"
        )
        reload_s = statistics.median(r - f for r, f in zip(rollout_side, fetches, strict=True))
        console.print(
            f"  rollout side   : {statistics.median(rollout_side) * 1e3:.1f} ms (fetch "
            f"{statistics.median(fetches) * 1e3:.1f} ms, vLLM reload {reload_s * 1e3:.1f} ms = "
            f"{total / reload_s / 1e9:.3f} GB/s, i.e. at most {total / reload_s / 1e9 / baseline:.3f}x "
            "of the copy even if every other part were free)"
        )
        console.print(f"in-memory copy   : {baseline:.3f} GB/s (same bytes, same run)")
        console.print(f"copy, fresh mem  : {fresh:.3f} GB/s (clone: allocation + page faults)")
        console.print(f"ratio sync/copy  : {sync_gbps / baseline:.3f}x (target >= 0.5x)")
        console.print(f"ratio sync/clone : {sync_gbps / fresh:.3f}x")
    finally:
        if rollout is not None:
            rollout.shutdown()
        if learner is not None:
            learner.shutdown()
        ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
