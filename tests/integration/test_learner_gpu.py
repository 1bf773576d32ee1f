"""Learner on CUDA: FSDP2 over NCCL with bf16 mixed precision, checkpoints, the NCCL sender.

Skipped without a CUDA GPU (CI has none). On a GPU machine:
``pytest -m gpu tests/test_learner_gpu.py``. One GPU suffices: the group runs W = 1 (NCCL
refuses two ranks on one device), which still exercises NCCL process-group set-up, FSDP2's
all-gather/reduce-scatter on CUDA, bf16 compute with fp32 master weights and reductions, and
the gather that feeds the weight broadcast. vLLM's receiving side (``PyNcclCommunicator`` in
the rollout workers) needs vLLM's GPU build and a second device, so a recording communicator
stands in for it in `test_nccl_sender_broadcasts_every_full_parameter_in_meta_order`.
"""

from __future__ import annotations

import math
import socket

import pytest
import torch
from support import cuda_skip_reason
from support.learner import TINY_VOCAB, build_tiny_qwen2, fixed_batch
from support.padded_path import token_logprobs_and_entropy
from transformers import AutoModelForCausalLM

from azr.config import LearnerConfig
from learner.group import LearnerGroup
from learner.nccl_sync import NCCLWeightSender
from learner.worker import LearnerWorker

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(cuda_skip_reason() is not None, reason=f"needs CUDA: {cuda_skip_reason()}"),
]

PROBE = [[3, 14, 15, 92, 65, 35, 89, 79], [2, 71, 82, 81, 82, 84]]
BF16_LOGPROB_ATOL = 0.05  # bf16 has 8 mantissa bits; logprobs here are about −6.2


def cuda_config(**overrides) -> LearnerConfig:
    settings = {
        "num_workers": 1,
        "device": "cuda",
        "gpus_per_worker": 1.0,
        "lr": 1e-3,
        "grad_clip": 1.0,
        "init_timeout_s": 300,
    }
    return LearnerConfig(**(settings | overrides))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(build_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2")))


def cpu_fp32_logprobs(model_dir: str, sequences: list[list[int]]) -> list[list[float]]:
    """The same log p(token | prefix) from plain transformers in fp32 on the CPU."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for ids in sequences:
            batch = torch.tensor([ids])
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1]
            lp, _ = token_logprobs_and_entropy(logits, batch[:, 1:], False)
            out.append(lp[0].double().tolist())
    return out


def assert_close_lists(got: list[list[float]], want: list[list[float]], atol: float) -> None:
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(torch.tensor(g), torch.tensor(w), rtol=0, atol=atol)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "activation_ckpt"])
def test_fsdp2_on_cuda_learns_and_checkpoints_in_fp32(
    ray_cluster, tiny_model, tmp_path, checkpointing
):
    import ray

    assert ray.cluster_resources().get("GPU", 0) >= 1, "Ray does not see the GPU"
    config = cuda_config(activation_checkpointing=checkpointing, logprob_chunk_tokens=16)
    group = LearnerGroup(tiny_model, config, seed=0)
    try:
        assert group.use_gpu
        # bf16 forward of the fp32 checkpoint agrees with an fp32 CPU forward within bf16 error.
        before = group.logprobs(PROBE)
        assert_close_lists(before, cpu_fp32_logprobs(tiny_model, PROBE), BF16_LOGPROB_ATOL)
        batch = fixed_batch()
        metrics = [group.train_step(batch) for _ in range(4)]
        losses = [m["loss"] for m in metrics]
        assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
        for m in metrics:
            assert all(math.isfinite(m[k]) for k in ("loss", "grad_norm", "entropy"))
            assert m["skipped"] == 0.0 and m["grad_norm"] > 0
        assert metrics[0]["entropy"] == pytest.approx(math.log(TINY_VOCAB), rel=0.05)
        assert metrics[0]["mismatch_kl"] > 0  # behaviour logprobs are near, not at, uniform
        after = group.logprobs(PROBE)
        assert max(abs(a - b) for a, b in zip(after[0], before[0], strict=True)) > 1e-3
        # The checkpoint holds fp32 master weights (not the bf16 compute copies) in HF format:
        # plain transformers on the CPU reproduces the trained policy's logprobs.
        group.save_checkpoint(str(tmp_path / "ckpt"))
        saved = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32)
        assert all(p.dtype == torch.float32 for p in saved.parameters())
        assert_close_lists(
            cpu_fp32_logprobs(str(tmp_path / "ckpt"), PROBE), after, BF16_LOGPROB_ATOL
        )
        next_step = group.train_step(batch)
    finally:
        group.shutdown()
    # A fresh group restored from the checkpoint takes the same next step.
    resumed = LearnerGroup(tiny_model, cuda_config(), seed=0)
    try:
        assert resumed.load_checkpoint(str(tmp_path / "ckpt")) == 4
        again = resumed.train_step(batch)
    finally:
        resumed.shutdown()
    for key in ("loss", "grad_norm", "entropy", "clip_fraction", "mismatch_kl"):
        assert again[key] == pytest.approx(next_step[key], rel=1e-3, abs=1e-6), key


class RecordingCommunicator:
    """Stands in for vLLM's ``PyNcclCommunicator`` (GPU build not available): keeps a CPU
    copy of every tensor the sender broadcasts, with the stream it was asked to use."""

    def __init__(self) -> None:
        self.sent: list[torch.Tensor] = []

    def broadcast(self, tensor: torch.Tensor, src: int, stream: torch.cuda.Stream) -> None:
        assert src == 0 and tensor.is_cuda and tensor.is_contiguous()
        assert stream == torch.cuda.current_stream()
        self.sent.append(tensor.detach().cpu().clone())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nccl_sender_broadcasts_every_full_parameter_in_meta_order(tiny_model):
    """The NCCL sync's sending side on a real NCCL FSDP2 rank (in this process, W = 1):
    ``nccl_metas`` and ``nccl_send`` agree on order, dtype and shape, and the broadcast
    tensors are the gathered fp32 parameters — the same values a checkpoint would save."""
    worker = LearnerWorker(0, 1, tiny_model, cuda_config(), seed=0)
    worker.setup("127.0.0.1", free_port())
    try:
        worker.train_step([fixed_batch()], sum(len(s.response_token_ids) for s in fixed_batch()))
        metas = worker.nccl_metas()
        worker.nccl = NCCLWeightSender(rank=0)
        worker.nccl.comm = RecordingCommunicator()
        sent_bytes = worker.nccl_send()
        sent = worker.nccl.comm.sent
        full = worker.full_state_dict()
    finally:
        worker.shutdown()
    assert [name for name, _, _ in metas] == list(full)  # tied lm_head sent once, as HF names it
    assert len(sent) == len(metas)
    for (name, dtype, shape), tensor in zip(metas, sent, strict=True):
        assert str(tensor.dtype).removeprefix("torch.") == dtype == "float32", name
        assert tuple(tensor.shape) == shape == tuple(full[name].shape), name
        torch.testing.assert_close(tensor, full[name], rtol=0, atol=0)
    assert sent_bytes == sum(t.numel() * t.element_size() for t in sent)
