"""The rollout section: vLLM engines and the explicit sampling of each kind of generation.

Training generations (propose, solve) are validated at load to come from a distribution the
learner reproduces exactly (temperature >= `MIN_TRAINING_TEMPERATURE`, top_p = 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from azr.config.section import Section

# vLLM samples greedily below this temperature (its _SAMPLING_EPS) and then reports logprobs
# of the untempered distribution: such samples have no behaviour policy the learner can match.
MIN_TRAINING_TEMPERATURE = 1e-5


class SamplingConfig(Section):
    """Explicit sampling parameters of one kind of generation (nothing is left to engine defaults)."""

    n: int = Field(1, ge=1)
    """Completions per prompt. Proposer: each completion is its own proposal (a step makes
    ``ceil(batch_size / n)`` proposer prompts per task type and keeps ``batch_size``
    proposals). Solver and eval: must be 1 (``selfplay.mc_samples`` sets the Monte-Carlo
    samples, one prompt each)."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature (0 = greedy)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_tokens: int = Field(1024, ge=1)
    """Longest response in tokens."""
    seed: int | None = None
    """Per-request seed; None derives one from the run seed and the step."""


class RolloutConfig(Section):
    """vLLM rollout actors (proposer and solver are the same engine)."""

    num_actors: int = Field(1, ge=1)
    """M: rollout actors, each hosting one engine."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where engines run; auto = cuda when a GPU is visible, else the vLLM CPU build."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs per engine (GPU only)."""
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    """Fraction of GPU memory vLLM may take (GPU only)."""
    kv_cache_memory_bytes: int = Field(1 << 30, ge=1 << 20)
    """Explicit KV-cache size on CPU (without it vLLM's CPU build reserves ~10 GiB)."""
    cpu_threads: int = Field(1, ge=1)
    """Torch/OpenMP threads pinned per CPU rollout actor."""
    num_cpus: float | None = Field(None, ge=0)
    """Ray CPUs reserved per CPU rollout actor; None = `cpu_threads`. Less lets the engine share
    cores with learner workers it takes turns with (sync mode)."""
    max_model_len: int = Field(4096, ge=128)
    """Longest prompt + response the engine accepts (capped to the model's own limit). Every
    prompt is built to fit ``max_model_len - max_tokens`` of its sampling: proposer prompts
    drop references until they fit, a proposal whose solver prompt would not fit is rejected
    as ``prompt_too_long``."""
    enforce_eager: bool | None = None
    """Disable CUDA graphs / compilation. None = on for the CPU build (which requires it), off
    on GPUs (CUDA graphs make decoding much faster, at some start-up time and memory)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Engine parameter dtype; auto = the checkpoint's (the tiny model is float32)."""
    seed: int = 0
    """Engine seed (requests without their own seed draw from it)."""
    propose: SamplingConfig = SamplingConfig(temperature=1.0, max_tokens=1024)
    """Sampling of proposer generations."""
    solve: SamplingConfig = SamplingConfig(temperature=1.0, max_tokens=1024)
    """Sampling of solver generations, Monte-Carlo samples included (temperature 1.0 per AZR_SPEC)."""
    eval: SamplingConfig = SamplingConfig(temperature=0.0, max_tokens=1024)
    """Sampling of evaluations (greedy): the loop's periodic one, and `azr eval` unless its
    --samples/--temperature/--max-tokens say otherwise."""

    @property
    def reserved_cpus(self) -> float:
        """Ray CPUs one CPU rollout actor reserves."""
        return self.cpu_threads if self.num_cpus is None else self.num_cpus

    @field_validator("propose", "solve")
    @classmethod
    def _trainable_sampling(cls, sampling: SamplingConfig, info: ValidationInfo) -> SamplingConfig:
        """Training generations must come from a distribution the learner reproduces exactly,
        softmax(logits / T) over the whole vocabulary: the importance ratio divides by it."""
        where = f"rollout.{info.field_name}"
        if sampling.temperature < MIN_TRAINING_TEMPERATURE:
            raise ValueError(
                f"{where}.temperature = {sampling.temperature}: training generations need a "
                f"temperature >= {MIN_TRAINING_TEMPERATURE} (vLLM samples greedily below it, and "
                "greedy samples have no behaviour distribution to train on)"
            )
        if sampling.top_p != 1.0:
            raise ValueError(
                f"{where}.top_p = {sampling.top_p}: training generations need top_p = 1.0 (the "
                "rollout's logprobs after nucleus truncation and renormalisation are of a "
                "distribution the learner does not reproduce; set the temperature instead)"
            )
        return sampling
