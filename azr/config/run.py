"""The root of the tree, `AZRConfig` (the whole run), and the run-wide sections that belong to
no component: metrics and checkpoints.

`AZRConfig` holds every section and checks at load what no single section can (async staleness,
induction inputs, sampling that fits `rollout.max_model_len`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from azr.config.buffer import BufferConfig
from azr.config.executor import ExecutorConfig
from azr.config.learner import LearnerConfig
from azr.config.model import ModelConfig
from azr.config.rollout import RolloutConfig
from azr.config.section import Section
from azr.config.selfplay import SelfPlayConfig


class MetricsConfig(Section):
    """Observability."""

    enabled: bool = True
    """Record metrics with ray.util.metrics (exported by Ray's per-node agent to Prometheus)."""
    log_file: str = "metrics.jsonl"
    """Per-step metrics JSONL, relative to the run directory."""
    loggers: list[Literal["jsonl", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["jsonl"]
    )
    """Where each step's record goes besides Prometheus, under the same names: jsonl = `log_file`
    (what `azr report` and the end-of-run report read: leave it in); tensorboard = event files in
    `<run dir>/tensorboard`; wandb = a W&B run in `<run dir>/wandb` (see `wandb_mode`). On
    resume, records past the checkpoint's step are set aside (`metrics.abandoned-<time>.jsonl`),
    TensorBoard purges them and W&B rewinds the same run to the checkpoint's step."""
    wandb_project: str = "azr"
    """W&B project of the run (the loggers include wandb)."""
    wandb_entity: str | None = None
    """W&B entity (user or team); None = the API key's default entity."""
    wandb_mode: Literal["auto", "online", "offline"] = "auto"
    """auto: the WANDB_MODE environment variable when set, else online when a W&B API key is
    configured (WANDB_API_KEY or a netrc entry), else offline (no network; `wandb sync
    <run dir>/wandb/offline-run-*` uploads later)."""
    report: bool = True
    """`azr train` draws `<run dir>/report/` (figures and report.md, as `azr report`) at the end."""


class CheckpointConfig(Section):
    """Checkpoints: learner weights (HF format), optimizer, buffers, RNG states, step, config."""

    every: int = Field(10, ge=0)
    """Checkpoint every this many steps (0 = only at the end and on Ctrl-C)."""
    keep_last: int = Field(3, ge=1)
    """Checkpoints kept on disk."""


class AZRConfig(Section):
    """The whole run."""

    run_name: str = "azr"
    """Name of the run; the run directory is `<output_dir>/<run_name>`."""
    output_dir: str = "runs"
    """Where run directories (checkpoints, buffers, metrics, resolved config) go."""
    seed: int = 0
    """Master seed (sampling, buffer sampling, learner init)."""
    ray_address: str | None = None
    """Ray cluster to join; None = the job's cluster if inside one, else start a local one."""
    model: ModelConfig = ModelConfig()
    """The policy model."""
    rollout: RolloutConfig = RolloutConfig()
    """Generation: vLLM rollout actors and sampling parameters."""
    executor: ExecutorConfig = ExecutorConfig()
    """The sandboxed executor pool."""
    buffer: BufferConfig = BufferConfig()
    """The durable task buffers."""
    learner: LearnerConfig = LearnerConfig()
    """The FSDP2 learner group and the update."""
    selfplay: SelfPlayConfig = SelfPlayConfig()
    """The self-play step and its schedule."""
    metrics: MetricsConfig = MetricsConfig()
    """Metrics export and logging."""
    checkpoint: CheckpointConfig = CheckpointConfig()
    """Checkpointing."""

    @model_validator(mode="after")
    def _cross_checks(self) -> AZRConfig:
        if self.selfplay.mode == "async" and self.selfplay.max_staleness < 1:
            raise ValueError(
                "selfplay.max_staleness must be >= 1 in async mode (samples lag one version)"
            )
        if self.selfplay.induction_inputs % 2:
            raise ValueError("selfplay.induction_inputs must be even (half shown, half hidden)")
        rollout = self.rollout
        for kind in ("solve", "eval"):
            if getattr(rollout, kind).n != 1:
                raise ValueError(
                    f"rollout.{kind}.n must be 1 (got {getattr(rollout, kind).n}): every solve "
                    "is its own prompt; selfplay.mc_samples sets the Monte-Carlo samples"
                )
        for kind in ("propose", "solve", "eval"):
            max_tokens = getattr(rollout, kind).max_tokens
            if max_tokens >= rollout.max_model_len:
                raise ValueError(
                    f"rollout.{kind}.max_tokens ({max_tokens}) leaves no room for a prompt "
                    f"in rollout.max_model_len ({rollout.max_model_len})"
                )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name
