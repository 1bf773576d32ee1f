"""Learner on one CUDA GPU: FSDP2 (NCCL, W = 1, bf16 compute) train-step throughput at the
Qwen2.5-0.5B shape (random init), and the sender-side gather of the NCCL weight sync against
a plain device-to-device copy of the same bytes (ratio).

Run on a GPU machine: ``python benchmarks/learner_gpu.py``. Prints ``unavailable`` without
CUDA. No target: the figures show what a learner step and the sync's gather cost per GPU.
The broadcast into vLLM itself is not measured (needs vLLM's GPU build and a second GPU).
"""

from __future__ import annotations

import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

from azr.config import LearnerConfig, TinyModelConfig
from azr.tasks import Role, TaskType, TrainSample
from azr.tiny.build import init_qwen2
from learner.nccl_sync import NCCLWeightSender
from learner.worker import LearnerWorker

SEQUENCES, PROMPT_TOKENS, RESPONSE_TOKENS, STEPS = 16, 256, 256, 5


class CountingCommunicator:
    """Stands in for vLLM's PyNcclCommunicator: touches nothing, counts the bytes offered."""

    def __init__(self) -> None:
        self.bytes = 0

    def broadcast(self, tensor: torch.Tensor, src: int, stream: torch.cuda.Stream) -> None:
        self.bytes += tensor.numel() * tensor.element_size()


QWEN_05B = TinyModelConfig(
    hidden_size=896,
    intermediate_size=4864,
    num_layers=24,
    num_heads=14,
    num_kv_heads=2,
    max_position_embeddings=4096,
)


def qwen05b_shape(directory: Path) -> Path:
    init_qwen2(QWEN_05B, 151936).save_pretrained(directory)
    return directory


def batch(vocab: int) -> list[TrainSample]:
    rng = random.Random(0)
    return [
        TrainSample(
            prompt_token_ids=[rng.randrange(vocab) for _ in range(PROMPT_TOKENS)],
            response_token_ids=[rng.randrange(vocab) for _ in range(RESPONSE_TOKENS)],
            behaviour_logprobs=[-12.0] * RESPONSE_TOKENS,
            advantage=rng.choice([-1.0, 1.0]),
            task=TaskType.DEDUCTION,
            role=Role.SOLVE,
        )
        for _ in range(SEQUENCES)
    ]


def main() -> None:
    if torch.version.cuda is None:
        print("learner_gpu: unavailable (CPU-only torch build: torch.version.cuda is None)")
        return
    if not torch.cuda.is_available():
        print(f"learner_gpu: unavailable (no CUDA device visible; CUDA {torch.version.cuda})")
        return
    model_dir = qwen05b_shape(Path(tempfile.mkdtemp()) / "qwen05b")
    config = LearnerConfig(num_workers=1, device="cuda", micro_batch_tokens=4096, lr=1e-6)
    worker = LearnerWorker(0, 1, str(model_dir), config, seed=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = worker.setup("127.0.0.1", port)
    samples = batch(151936)
    micro = [samples[i : i + 8] for i in range(0, SEQUENCES, 8)]
    tokens = SEQUENCES * RESPONSE_TOKENS
    worker.train_step(micro, tokens)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(STEPS):
        out = worker.train_step(micro, tokens)
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - start) / STEPS
    print(
        f"train_step: {info['parameters'] / 1e6:.0f}M params, {SEQUENCES}x"
        f"{PROMPT_TOKENS + RESPONSE_TOKENS} tokens, {step_s * 1e3:.0f} ms/step, "
        f"{SEQUENCES * (PROMPT_TOKENS + RESPONSE_TOKENS) / step_s:,.0f} tokens/s, "
        f"loss {out['loss']:.4f}, grad_norm {out['grad_norm']:.3f}, "
        f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    )
    worker.nccl = NCCLWeightSender(rank=0)
    worker.nccl.comm = CountingCommunicator()
    worker.nccl_send()  # warm-up
    start = time.perf_counter()
    worker.nccl.comm.bytes = 0
    worker.nccl_send()
    gather_s = time.perf_counter() - start
    sent = worker.nccl.comm.bytes
    source = torch.empty(sent // 4, dtype=torch.float32, device="cuda")
    target = torch.empty_like(source)
    target.copy_(source)
    torch.cuda.synchronize()
    start = time.perf_counter()
    target.copy_(source)
    torch.cuda.synchronize()
    copy_s = time.perf_counter() - start
    print(
        f"weight sync gather: {sent / 1e9:.2f} GB in {gather_s * 1e3:.1f} ms "
        f"({sent / gather_s / 1e9:.1f} GB/s); device copy {sent / copy_s / 1e9:.1f} GB/s; "
        f"ratio {copy_s / gather_s:.2f}x"
    )
    worker.shutdown()


if __name__ == "__main__":
    sys.exit(main())
