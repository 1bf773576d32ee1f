"""The one typed config tree of azr.

Loaded from YAML (``configs/*.yaml``), overridden with ``section.key=value`` arguments, validated
at load (a bad key or value names its dotted path) and dumped as YAML beside every run. The field
docstrings of the section modules are the reference documentation of every setting; defaults are
the paper's.

One module per concept: `section` (the base of every section), `model`, `rollout`, `executor`,
`buffer`, `learner`, `selfplay` (one section each), `run` (the root `AZRConfig` and the run-wide
metrics and checkpoint sections) and `loading` (YAML, overrides, errors). Callers import every
name from here, ``azr.config``.
"""

from azr.config.buffer import BufferConfig
from azr.config.executor import (
    DEFAULT_BANNED_BUILTINS,
    DEFAULT_BANNED_MODULES,
    DockerConfig,
    ExecutorConfig,
)
from azr.config.learner import LearnerConfig
from azr.config.loading import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    ConfigError,
    dump_config,
    load_config,
    parse_override,
)
from azr.config.model import ModelConfig, TinyModelConfig
from azr.config.rollout import MIN_TRAINING_TEMPERATURE, RolloutConfig, SamplingConfig
from azr.config.run import AZRConfig, CheckpointConfig, MetricsConfig
from azr.config.section import Section
from azr.config.selfplay import EVAL_BENCHMARKS, SelfPlayConfig

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_BANNED_BUILTINS",
    "DEFAULT_BANNED_MODULES",
    "DEFAULT_CONFIG",
    "EVAL_BENCHMARKS",
    "MIN_TRAINING_TEMPERATURE",
    "AZRConfig",
    "BufferConfig",
    "CheckpointConfig",
    "ConfigError",
    "DockerConfig",
    "ExecutorConfig",
    "LearnerConfig",
    "MetricsConfig",
    "ModelConfig",
    "RolloutConfig",
    "SamplingConfig",
    "Section",
    "SelfPlayConfig",
    "TinyModelConfig",
    "dump_config",
    "load_config",
    "parse_override",
]
