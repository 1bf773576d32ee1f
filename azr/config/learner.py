"""The learner section: the FSDP2 learner group, the TRR++ update and the weight-sync checks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from azr.config.section import Section


class LearnerConfig(Section):
    """The FSDP2 learner group and the Task-Relative REINFORCE++ update."""

    num_workers: int = Field(1, ge=1)
    """W: learner workers (one per GPU; CPU processes over gloo here)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = cuda (NCCL, bf16 mixed precision) when a GPU is visible, else cpu (gloo, fp32)."""
    lr: float = Field(1e-6, gt=0)
    """AdamW learning rate."""
    apply_updates: bool = True
    """False = a frozen control: every step computes the loss, gradients and metrics as usual
    but applies no optimizer step, so no weight ever changes, while generation, execution,
    buffers, weight syncs and evaluation run as in training (`benchmarks/learning.py`'s
    control arm)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    grad_clip: float = Field(1.0, gt=0)
    """Global gradient-norm clip."""
    clip_ratio: float = Field(0.2, gt=0, lt=1)
    """PPO-style clip of the importance ratio (both sides)."""
    advantage_eps: float = Field(1e-6, gt=0)
    """ε in A = (r − mean_g) / (std_g + ε)."""
    micro_batch_tokens: int = Field(8192, ge=64)
    """Real tokens (prompt + response) packed into one micro-batch, without padding: the
    sequences are concatenated in one row with restarting positions (gradient accumulation
    splits the batch by it; a longer sequence forms a micro-batch of its own)."""
    logprob_chunk_tokens: int = Field(1024, ge=1)
    """Response tokens whose full-vocabulary fp32 logits exist at once, in forward and in
    backward (recomputed there): logits memory is bounded by chunk × vocabulary × 4 bytes,
    ~0.6 GB at 1024 × 151,936, however large the micro-batch."""
    activation_checkpointing: bool = False
    """Keep only each decoder layer's input in forward and recompute the layer in backward:
    activation memory drops to ~one layer's worth for ~1/3 more compute. On in the GPU
    configs."""
    sync_bucket_mb: int = Field(64, ge=1)
    """Size of one weight-sync bucket streamed to the rollout actors."""
    gpus_per_worker: float = Field(1.0, ge=0)
    """GPUs requested per worker on GPU clusters."""
    cpus_per_worker: int = Field(1, ge=1)
    """CPUs per worker: its torch thread count on CPU, and its Ray CPU reservation unless
    `num_cpus_per_worker` says otherwise."""
    num_cpus_per_worker: float | None = Field(None, ge=0)
    """Ray CPUs reserved per worker; None = `cpus_per_worker`. A fraction lets workers that
    mostly wait (sync mode on a small machine) share cores with the rollout engine."""
    init_timeout_s: float = Field(300.0, gt=0)
    """Longest wait for the workers to start and join the process group before failing."""
    sync_timeout_s: float = Field(600.0, gt=0)
    """Longest wait for one weight sync, both sides together (learner send, every engine's
    load); past it, or at the first failure on either side, the run stops naming who."""
    verify_sync_every: int = Field(10, ge=0)
    """After the first weight sync of a process and then every this many syncs, compare the
    rollout engines' logprobs with the learner's on a fixed probe sequence; a mismatch beyond
    the tolerance stops the run. 0 = never (not advised: a bad sync then goes unseen)."""
    verify_sync_tolerance: float | None = Field(None, gt=0)
    """Largest mean |logprob difference| (nats per probe token) the check accepts; None = by
    dtype: `verify_sync_tolerance_fp32` when both sides compute in float32, else
    `verify_sync_tolerance_bf16`."""
    verify_sync_tolerance_fp32: float = Field(1e-3, gt=0)
    """The check's tolerance when the rollout engine and the learner both compute in float32
    (measured on CPU: ~1e-6; a sync that misses one layer's update is far above)."""
    verify_sync_tolerance_bf16: float = Field(0.05, gt=0)
    """The check's tolerance when either side computes in bfloat16/float16 (kernels differ
    in rounding: a correct bf16 sync still differs by a few hundredths of a nat per token)."""

    @property
    def reserved_cpus(self) -> float:
        """Ray CPUs one learner worker reserves."""
        return (
            self.cpus_per_worker if self.num_cpus_per_worker is None else self.num_cpus_per_worker
        )
