"""The one typed config tree of azr.

Loaded from YAML (``configs/*.yaml``), overridden with ``section.key=value`` arguments, validated
at load (a bad key or value names its dotted path) and dumped as YAML beside every run. The field
docstrings below are the reference documentation of every setting; defaults are the paper's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "tiny.yaml"

# AZR_SPEC "Validating a proposal": the modules banned on the AST (task quality, not security).
DEFAULT_BANNED_MODULES = [
    "random", "secrets", "time", "datetime", "calendar", "os", "sys", "subprocess",
    "multiprocessing", "threading", "asyncio", "concurrent", "socket", "ssl", "http", "urllib",
    "shutil", "pathlib", "tempfile", "signal", "ctypes", "importlib", "builtins", "gc", "logging",
    "hashlib", "hmac", "uuid", "pickle", "marshal", "sqlite3", "resource", "io", "faulthandler",
    "inspect", "code", "codeop", "pty", "fcntl", "mmap", "select", "selectors", "atexit",
]  # fmt: skip
EVAL_BENCHMARKS = ("cruxeval-o", "cruxeval-i", "humaneval")
"""The benchmarks `azr eval` knows by name (files: code:FILE.jsonl, math:FILE.jsonl)."""
# vLLM samples greedily below this temperature (its _SAMPLING_EPS) and then reports logprobs
# of the untempered distribution: such samples have no behaviour policy the learner can match.
MIN_TRAINING_TEMPERATURE = 1e-5

DEFAULT_BANNED_BUILTINS = [
    "__import__", "eval", "exec", "compile", "open", "input", "breakpoint", "globals", "locals",
    "vars", "getattr", "setattr", "delattr", "memoryview", "help", "exit", "quit",
]  # fmt: skip


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, docstrings are descriptions."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, validate_assignment=True
    )


class TinyModelConfig(Section):
    """Shape of the embedded `tiny` model (Qwen2 architecture, random init, then warm-started)."""

    vocab_size: int = Field(3072, ge=300)
    """Byte-level BPE vocabulary size of the tokenizer trained offline on CRUXEval programs."""
    hidden_size: int = Field(128, ge=16)
    """Transformer width."""
    num_layers: int = Field(3, ge=1)
    """Number of decoder layers."""
    num_heads: int = Field(4, ge=1)
    """Attention heads."""
    num_kv_heads: int = Field(2, ge=1)
    """Key/value heads (grouped-query attention, as in Qwen2.5)."""
    intermediate_size: int = Field(384, ge=16)
    """MLP width."""
    max_position_embeddings: int = Field(2048, ge=128)
    """Longest sequence (prompt + response) the model supports."""
    seed: int = 0
    """Seed of the random initialisation and of the tokenizer corpus shuffle."""
    warm_start_steps: int = Field(200, ge=0)
    """Supervised warm-start steps on well-formed AZR responses (0 disables the warm start)."""
    warm_start_lr: float = Field(5e-3, gt=0)
    """Learning rate of the warm start."""
    warm_start_batch_size: int = Field(8, ge=1)
    """Sequences per warm-start step (2 proposals, 2 induction proposals, 4 solves at 8)."""
    data_path: str | None = None
    """CRUXEval JSONL for the tokenizer corpus and the warm start; None = the repo's own
    `data/cruxeval/cruxeval.jsonl`."""
    warm_start_max_seconds: float = Field(1200.0, gt=0)
    """Safety cap on the warm start's wall clock (200 steps take ~2 min on 2 cores); a capped warm
    start is used for this run but not cached, so the next run trains it again in full."""


class ModelConfig(Section):
    """Which policy model to train."""

    path: str | None = None
    """A local Hugging Face checkpoint directory, or a hub id such as `Qwen/Qwen2.5-7B-Coder`
    (fetched once per node into the Hugging Face cache, local files first). None builds the
    embedded tiny model."""
    cache_dir: str = "~/.cache/azr/models"
    """Where the tiny model (tokenizer, weights, warm start) is built and cached."""
    tiny: TinyModelConfig = TinyModelConfig()
    """Settings of the embedded tiny model (used only when `path` is None)."""


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


class DockerConfig(Section):
    """The docker backend's container: one long-lived container per executor actor."""

    image: str = "azr-executor:test"
    """Image of the docker backend (deploy/docker/executor.Dockerfile on clusters)."""
    cpus: float = Field(1.0, gt=0)
    """--cpus of each executor container."""
    pids_limit: int = Field(64, ge=8)
    """--pids-limit of each executor container."""
    memory_mb: int | None = Field(None, ge=128)
    """--memory of each executor container; None = 2 * slots * memory_mb + 256 (two zygote
    children per slot)."""
    tmpfs_mb: int = Field(64, ge=8)
    """Size of the container's only writable filesystem (a tmpfs on /tmp holding the run
    directories)."""
    sweep_interval_s: float = Field(2.0, ge=0)
    """How often the host checks a container for processes that escaped a finished program (own
    session, reparented to init) and replaces it if any; 0 = never."""


class ExecutorConfig(Section):
    """The sandboxed Python executor pool: validation of proposals and scoring of answers."""

    backend: Literal["process", "docker"] = "process"
    """process: warm fork-server with namespaces/rlimits on the host; docker: one container each."""
    per_node: int = Field(1, ge=1)
    """Executor actors placed on every node that offers `resource`."""
    slots: int = Field(2, ge=1)
    """Programs one executor runs in parallel."""
    resource: str | None = None
    """Ray custom resource marking executor nodes (e.g. "executor"); None = every alive node."""
    timeout_s: float = Field(10.0, gt=0)
    """Wall-clock limit of one program run."""
    memory_mb: int = Field(1024, ge=64)
    """Address-space (process) or container memory (docker) limit per program run / executor."""
    max_output_chars: int = Field(4000, ge=16)
    """Longest canonical output repr; larger outputs make a proposal invalid (never truncated)."""
    max_input_chars: int = Field(4000, ge=16)
    """Longest input / literal answer text accepted before parsing."""
    max_program_chars: int = Field(20000, ge=64)
    """Longest program source accepted before parsing."""
    max_check_chars: int = Field(2_000_000, ge=20000)
    """Longest program + test of an evaluation check (`azr eval`'s code benchmarks: HumanEval+
    tests embed their inputs); a longer one fails as `check_too_large` without running."""
    sandbox_modules: list[str] = Field(default_factory=list)
    """Third-party modules the sandbox imports before it forks (from the interpreter's
    site-packages; on the docker backend the image must have them): isolated programs can
    import nothing else from outside the standard library. `azr eval` adds `math_verify`
    for math benchmarks; self-play needs none."""
    banned_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_BANNED_MODULES))
    """Modules a program may not import (checked on the AST, dotted imports included)."""
    banned_builtins: list[str] = Field(default_factory=lambda: list(DEFAULT_BANNED_BUILTINS))
    """Builtins a program may not name or call."""
    docker: DockerConfig = DockerConfig()
    """The container of the docker backend (one per executor actor)."""
    max_retries: int = Field(3, ge=0)
    """Times a batch is re-run after its executor or sandbox died."""
    chunk_size: int = Field(32, ge=1)
    """Requests per chunk the pool sends to one executor actor."""
    max_chunks_in_flight: int = Field(4, ge=1)
    """Chunks in flight per executor actor (backpressure)."""
    num_cpus_per_actor: float = Field(0.0, ge=0)
    """CPUs Ray reserves per executor actor; 0 lets executors share nodes (each program run is
    limited by the sandbox itself)."""
    start_timeout_s: float = Field(120.0, gt=0)
    """How long the pool waits for an executor actor to start its sandbox before giving up on it."""
    discovery_interval_s: float = Field(2.0, gt=0)
    """Least seconds between two looks at the cluster for joined/removed executor nodes."""

    @model_validator(mode="before")
    @classmethod
    def _docker_keys_of_0_1(cls, data: Any) -> Any:
        """``executor.docker_<key>`` (azr 0.1) still works for this release, with a warning:
        it is ``executor.docker.<key>`` now."""
        if not isinstance(data, dict) or not any(str(k).startswith("docker_") for k in data):
            return data
        data = dict(data)
        docker = dict(data.get("docker") or {})
        for old in [k for k in data if str(k).startswith("docker_")]:
            new = old.removeprefix("docker_")
            log.warning("executor.%s is deprecated: write executor.docker.%s", old, new)
            docker.setdefault(new, data.pop(old))
        data["docker"] = docker
        return data


class BufferConfig(Section):
    """The three durable task buffers (the curriculum)."""

    dir: str | None = None
    """Store directory; None = `<run dir>/buffer`."""
    max_size: int | None = Field(None, ge=1)
    """Entries kept per buffer; the oldest are evicted beyond it. None = unbounded."""
    seed_size: int = Field(256, ge=0)
    """Seeding phase: propose with the untrained model until each buffer holds this many tasks (0 = skip)."""
    seed_max_rounds: int = Field(20, ge=1)
    """Upper bound on seeding rounds, so a model that never proposes valid tasks cannot hang the run."""
    max_entry_chars: int = Field(100_000, ge=1_000)
    """Sanity cap on one entry's total text (program, inputs, outputs, message); larger entries are
    rejected as `entry_too_large` (the executor's own limits decide which tasks are valid)."""
    key_workers: int = Field(1, ge=0)
    """Helper processes that compute the dedup keys of a large batch alongside the buffer (parsing and
    compiling each program is > 90 % of an add's cost); idle between adds, not reserved as Ray CPUs.
    0 = all in the buffer's process."""


class LearnerConfig(Section):
    """The FSDP2 learner group and the Task-Relative REINFORCE++ update."""

    num_workers: int = Field(1, ge=1)
    """W: learner workers (one per GPU; CPU processes over gloo here)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = cuda (NCCL, bf16 mixed precision) when a GPU is visible, else cpu (gloo, fp32)."""
    lr: float = Field(1e-6, gt=0)
    """AdamW learning rate."""
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


class SelfPlayConfig(Section):
    """The AZR step: proposals, Monte-Carlo estimation, solving."""

    @model_validator(mode="before")
    @classmethod
    def _solve_weight_removed(cls, data: Any) -> Any:
        """``selfplay.solve_weight`` (λ in r_propose + λ · r_solve) is gone: advantages are
        normalised per (task type, role) group, so a positive factor on the solve rewards
        cancels and 0 made every solver advantage 0. 1.0 (the old default) still loads."""
        if not isinstance(data, dict) or "solve_weight" not in data:
            return data
        data = dict(data)
        value = data.pop("solve_weight")
        if value not in (1, 1.0):
            raise ValueError(
                f"solve_weight={value!r}: the setting was removed. TRR++ normalises rewards "
                "per (task type, role) group, so a factor on the solve rewards has no effect "
                "(and 0 stopped the solver learning); delete the key"
            )
        log.warning("selfplay.solve_weight has no effect and was removed: delete the key")
        return data

    steps: int = Field(100, ge=0)
    """Self-play steps to run."""
    batch_size: int = Field(64, ge=1)
    """B: samples per (task type × role) per step."""
    num_references: int = Field(6, ge=0)
    """K: reference triplets shown to deduction/abduction proposers."""
    induction_inputs: int = Field(10, ge=2)
    """N: inputs an induction proposer writes; half are shown, half are hidden tests."""
    mc_samples: int = Field(8, ge=2)
    """n: Monte-Carlo solver samples per valid proposal (learnability estimate)."""
    learnability_rule: Literal["paper", "reference"] = "paper"
    """paper: r_propose = 0 at solve rate 0 or 1; reference: −0.5 there (the reference code's variant)."""
    induction_scoring: Literal["binary", "fraction"] = "binary"
    """binary: 1 only if every hidden pair passes; fraction: the share of hidden pairs passed."""
    task_types: list[Literal["deduction", "abduction", "induction"]] = Field(
        default_factory=lambda: ["deduction", "abduction", "induction"]
    )
    """Task types trained (ablations drop one)."""
    mode: Literal["sync", "async"] = "sync"
    """sync = the paper's algorithm; async overlaps generation of step t+1 with the update of step t."""
    max_staleness: int = Field(1, ge=0)
    """η: in async mode, samples more than η policy versions old are not admitted."""
    eval_every: int = Field(10, ge=0)
    """Run the periodic evaluation every this many steps (0 = never): pass@1 with the
    `rollout.eval` sampling on `eval_benchmarks`, by the same code as `azr eval`; its figures go
    to metrics.jsonl (`eval/<benchmark>`) and its files to `<run dir>/eval/step_<N>/`."""
    eval_size: int | None = Field(64, ge=1)
    """Problems per benchmark in the periodic evaluation: the first ones (CRUXEval's held-out
    half comes first); None = all."""
    eval_benchmarks: list[str] = Field(default_factory=lambda: ["cruxeval-o", "cruxeval-i"])
    """Benchmarks of the periodic evaluation, named as for `azr eval --benchmarks`:
    cruxeval-o, cruxeval-i, humaneval, code:FILE.jsonl, math:FILE.jsonl."""
    eval_data: str | None = None
    """CRUXEval JSONL file (id, code, input, output) of cruxeval-o/-i, here and in `azr eval`;
    None = the repo's own `data/cruxeval/cruxeval.jsonl`."""

    @field_validator("eval_benchmarks")
    @classmethod
    def _known_benchmarks(cls, names: list[str]) -> list[str]:
        for name in names:
            kind, sep, path = name.partition(":")
            if name not in EVAL_BENCHMARKS and not (sep and kind in ("code", "math") and path):
                raise ValueError(
                    f"unknown benchmark {name!r}: expected one of {', '.join(EVAL_BENCHMARKS)}, "
                    "code:FILE.jsonl or math:FILE.jsonl"
                )
        return names


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


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the dotted field path."""


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[: i + 1])}: is a value, not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"learner.lr=3e-6"`` → ``("learner.lr", 3e-6)``; values are YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key.strip()}: value {raw!r} is not valid YAML ({exc})") from None
    return key.strip(), value


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> AZRConfig:
    """Load a YAML config (default: configs/tiny.yaml), apply overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for text in overrides or []:
        _set_dotted(tree, *parse_override(text))
    try:
        return AZRConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def dump_config(config: AZRConfig) -> str:
    """The resolved config as YAML (loadable again by `load_config`)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
