"""RolloutActor: one vLLM engine in a Ray actor (RolloutGroup, in actors/group.py, holds M).

The engine runs in the actor's process on CPU (the vLLM CPU build), or on GPUs with tensor
parallelism. Invariants: weights are updated in place, never by restarting the engine; after
every update the prefix cache is reset before the policy version is bumped (cached KV blocks of
the old weights must not serve new prompts); every completion carries the version that produced
it and the logprobs of the distribution it was sampled from. Engine settings: docs/rollout.md.
An update whose tensor names or shapes differ from the checkpoint is refused before anything is
loaded (`actors.weight_check`), and a reload vLLM did not load in full is an error. Generation
never raises for length (an impossible prompt gets empty completions, finish reason
``prompt_too_long``); every request stops at the checkpoint's EOS ids and the chat template's
end-of-turn (`actors.stop_tokens`).
"""

from __future__ import annotations

import logging
import os
import time

import ray
import torch

from actors.metrics import RolloutMetrics, attach_engine_stats
from actors.stop_tokens import stop_token_ids
from actors.types import Completion, Generation
from actors.weight_check import CheckpointLayout, WeightSyncError
from azr.config import RolloutConfig, SamplingConfig
from azr.logs import route_process_output
from azr.models import resolve_model

log = logging.getLogger(__name__)

_EXTENSION = "actors.worker_extension.WeightSyncExtension"


def resolve_device(config: RolloutConfig) -> str:
    """``auto`` → cuda when a GPU is visible, else cpu."""
    if config.device != "auto":
        return config.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pin_cpu_threads(threads: int, actor_index: int) -> list[int]:
    """Pin this process to `threads` of its allowed cores, chosen by actor index.

    Actors on one node get disjoint cores while there are enough, and wrap around otherwise.
    """
    allowed = sorted(os.sched_getaffinity(0))
    start = actor_index * threads
    cores = sorted({allowed[(start + k) % len(allowed)] for k in range(threads)})
    os.sched_setaffinity(0, cores)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    return cores


def _model_max_len(model_path: str) -> int | None:
    import json
    from pathlib import Path

    config = json.loads((Path(model_path) / "config.json").read_text())
    return config.get("max_position_embeddings")


def engine_arguments(
    config: RolloutConfig, device: str, model_max_len: int | None
) -> dict[str, object]:
    """Every argument of `vllm.LLM` besides the model path, for a ``device`` engine."""
    args: dict[str, object] = {
        "dtype": config.dtype,
        # The CPU build needs eager mode; GPUs decode much faster with CUDA graphs.
        "enforce_eager": device == "cpu" if config.enforce_eager is None else config.enforce_eager,
        "seed": config.seed,
        # Behaviour-policy logprobs: what was actually sampled from (temperature, top-p).
        "logprobs_mode": "processed_logprobs",
        "worker_extension_cls": _EXTENSION,
        "disable_log_stats": False,
    }
    max_len = config.max_model_len
    if model_max_len is not None and model_max_len < max_len:
        log.info("rollout.max_model_len %d capped to the model's %d", max_len, model_max_len)
        max_len = model_max_len
    args["max_model_len"] = max_len
    if device == "cpu":
        args["kv_cache_memory_bytes"] = config.kv_cache_memory_bytes
        # No chunked prefill on CPU: a partly prefilled prompt makes vLLM rewind its seeded
        # generator (`Generator.set_offset`), which CPU generators do not support.
        args["enable_chunked_prefill"] = False
    else:
        args["tensor_parallel_size"] = config.tensor_parallel_size
        args["gpu_memory_utilization"] = config.gpu_memory_utilization
        # Inside a Ray actor (a placement group) vLLM would switch to its Ray executor and ask
        # the cluster for more GPUs; the actor already holds its TP GPUs: spawn workers locally.
        args["distributed_executor_backend"] = "mp"
    return args


class RolloutEngine:
    """The engine and its bookkeeping; `RolloutActor` is this class as a Ray actor."""

    def __init__(self, model_path: str, config: RolloutConfig, actor_index: int) -> None:
        route_process_output(f"rollout-{actor_index}")
        self.config = config
        self.actor_index = actor_index
        self.device = resolve_device(config)
        self._version = 0
        self._in_flight = 0
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        tags = {"actor": f"rollout-{actor_index}", "node": node}
        self.metrics = RolloutMetrics(**tags)
        local_path = str(resolve_model(model_path))
        self.layout = _read_layout(local_path)
        self.llm = self._start_engine(local_path)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.stop_token_ids = stop_token_ids(self.llm.get_tokenizer(), local_path)
        self.engine_stats_attached = attach_engine_stats(self.llm, tags)
        self.metrics.policy_version.set(0)

    def _start_engine(self, model_path: str):
        if self.device == "cpu":
            # Must be set before vLLM reads its environment (it reads it lazily).
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            self.cores = pin_cpu_threads(self.config.cpu_threads, self.actor_index)
        else:
            self.cores = []
        from vllm import LLM

        args = engine_arguments(self.config, self.device, _model_max_len(model_path))
        return LLM(model_path, **args)

    # -- generation ---------------------------------------------------------------------------

    def generate(
        self, prompts: list[str], sampling: SamplingConfig, first_index: int = 0
    ) -> list[Generation]:
        """Sample ``sampling.n`` completions per prompt; one Generation per prompt, in order.

        With ``sampling.seed`` set, prompt i of the whole batch (``first_index + i`` when a
        RolloutGroup sends this actor a slice) is seeded ``seed + i * n``, and vLLM seeds its
        n samples consecutively from there: every completion has its own seed, identical
        prompts in one batch still get independent samples, and results do not depend on how
        the batch was spread over actors.
        """
        if not prompts:
            return []
        prompt_ids = self._tokenize(prompts)
        fitting = [i for i, ids in enumerate(prompt_ids) if len(ids) < self.max_model_len]
        if len(fitting) < len(prompts):
            skipped = len(prompts) - len(fitting)
            log.warning(
                "%d prompt(s) of %d tokens or more skipped (longest %d)",
                skipped,
                self.max_model_len,
                max(len(ids) for ids in prompt_ids),
            )
            self.metrics.prompts_too_long.inc(skipped)
        params = [self._sampling_params(sampling, first_index + i) for i in fitting]
        version = self._version
        started = time.perf_counter()
        self._set_in_flight(len(fitting))
        try:
            outputs = self.llm.generate([prompts[i] for i in fitting], params, use_tqdm=False)
        finally:
            self._set_in_flight(-len(fitting))
        by_index = {
            i: self._to_generation(out, version) for i, out in zip(fitting, outputs, strict=True)
        }
        results = [
            by_index.get(i) or _too_long(ids, sampling.n, version)
            for i, ids in enumerate(prompt_ids)
        ]
        self.metrics.generate_seconds.observe(time.perf_counter() - started)
        generated = sum(len(c.token_ids) for g in results for c in g.completions)
        self.metrics.generated_tokens.inc(generated)
        self.metrics.prompt_tokens.inc(sum(len(prompt_ids[i]) for i in fitting))
        return results

    def _tokenize(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt, as the engine tokenizes a text prompt."""
        tokenizer = self.llm.get_tokenizer()
        return [tokenizer.encode(prompt) for prompt in prompts]

    def _sampling_params(self, sampling: SamplingConfig, prompt_index: int):
        from vllm import SamplingParams

        seed = None if sampling.seed is None else sampling.seed + prompt_index * sampling.n
        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=seed,
            logprobs=0,  # the sampled token's logprob only
            stop_token_ids=list(self.stop_token_ids),
            # Every sampling knob explicit: none is left to the checkpoint's generation_config.
            top_k=0,
            min_p=0.0,
            repetition_penalty=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
        )

    def _to_generation(self, output, version: int) -> Generation:
        completions = []
        for sample in output.outputs:
            token_ids = list(sample.token_ids)
            if sample.logprobs is None or len(sample.logprobs) != len(token_ids):
                raise RuntimeError("vLLM returned no per-token logprobs for a completion")
            logprobs = [
                float(step[tid].logprob)
                for tid, step in zip(token_ids, sample.logprobs, strict=True)
            ]
            completions.append(
                Completion(
                    token_ids=token_ids,
                    text=sample.text,
                    logprobs=logprobs,
                    finish_reason=sample.finish_reason,
                    policy_version=version,
                )
            )
        return Generation(prompt_token_ids=list(output.prompt_token_ids), completions=completions)

    def prompt_logprobs(self, token_ids: list[list[int]]) -> list[list[float]]:
        """Logprob of every token after the first of each sequence, under the current weights.

        Raw (temperature 1) distribution; ``len(result[i]) == len(token_ids[i]) - 1``.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if any(len(ids) < 2 for ids in token_ids):
            raise ValueError("prompt_logprobs needs sequences of at least 2 tokens")
        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, seed=0)
        prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in token_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [
            [
                float(step[tid].logprob)
                for tid, step in zip(ids[1:], out.prompt_logprobs[1:], strict=True)
            ]
            for ids, out in zip(token_ids, outputs, strict=True)
        ]

    # -- weights ------------------------------------------------------------------------------

    def update_weights(self, bucket_refs: list[ray.ObjectRef], version: int) -> dict:
        """Load a full HF state dict (given as buckets) in place and serve it as `version`.

        Each ref resolves to ``dict[str, torch.Tensor]`` (CPU tensors, HF parameter names); the
        buckets together are the full state dict. They are fetched one at a time while loading.
        """
        if version <= self._version:
            raise ValueError(f"weight version {version} is not newer than {self._version}")
        if self.device != "cpu":
            raise RuntimeError("GPU engines take weights over NCCL: use receive_weights_nccl")
        started = time.perf_counter()
        # Fetch and check every bucket before touching the engine: a reload that fails half way
        # would leave a model mixing two versions.
        buckets = ray.get(list(bucket_refs))
        for index, bucket in enumerate(buckets):
            if not isinstance(bucket, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in bucket.items()
            ):
                raise TypeError(f"weight bucket {index} is not a dict[str, torch.Tensor]")
        tensors = [(name, t) for bucket in buckets for name, t in bucket.items()]
        if not tensors:
            raise ValueError("update_weights got no tensors")
        if self.layout is not None:
            self.layout.check((name, tuple(t.shape)) for name, t in tensors)
        nbytes = sum(t.numel() * t.element_size() for _, t in tensors)
        fetched = time.perf_counter()
        loaded = self.llm.collective_rpc("azr_reload_weights", args=(iter(tensors),))[0]
        self.llm.reset_prefix_cache()
        result = self._finish_update(version, loaded, nbytes, started)
        return {**result, "fetch_s": fetched - started}

    def init_weight_group_nccl(
        self, master_address: str, master_port: int, rank_offset: int, world_size: int
    ) -> None:
        """GPU: join the learner's weight-broadcast NCCL group (vLLM side unverified)."""
        self.llm.collective_rpc(
            "azr_init_weight_group", args=(master_address, master_port, rank_offset, world_size)
        )

    def receive_weights_nccl(
        self, metas: list[tuple[str, str, tuple[int, ...]]], version: int
    ) -> dict:
        """GPU: receive tensors (name, dtype, shape) broadcast by learner rank 0 (unverified)."""
        started = time.perf_counter()
        try:
            if self.layout is not None:
                self.layout.check((name, tuple(shape)) for name, _, shape in metas)
        except WeightSyncError:
            # Learner rank 0 broadcasts regardless: take the broadcast, then refuse it.
            self.llm.collective_rpc("azr_discard_weights", args=(metas,))
            raise
        loaded = self.llm.collective_rpc("azr_receive_weights", args=(metas,))[0]
        self.llm.reset_prefix_cache()
        nbytes = sum(
            torch.empty((), dtype=getattr(torch, d)).element_size() * int(torch.Size(s).numel())
            for _, d, s in metas
        )
        return self._finish_update(version, loaded, nbytes, started)

    def _finish_update(
        self, version: int, loaded: dict[str, int], nbytes: int, started: float
    ) -> dict:
        """Serve ``version``; the report holds what vLLM loaded (`azr_reload_weights`)."""
        self._version = version
        seconds = time.perf_counter() - started
        self.metrics.weight_update_seconds.observe(seconds)
        self.metrics.policy_version.set(version)
        return {"version": version, **loaded, "bytes": nbytes, "seconds": seconds}

    def policy_version(self) -> int:
        """Version of the weights now served (0 = the initial checkpoint)."""
        return self._version

    def info(self) -> dict:
        """Where and how this engine runs (device, pinned cores, engine stats routing)."""
        return {
            "actor_index": self.actor_index,
            "device": self.device,
            "cores": self.cores,
            "pid": os.getpid(),
            "engine_stats": self.engine_stats_attached,
            "dtype": str(self.llm.llm_engine.model_config.dtype).removeprefix("torch."),
            "max_model_len": self.max_model_len,
            "stop_token_ids": list(self.stop_token_ids),
        }

    def _set_in_flight(self, delta: int) -> None:
        self._in_flight += delta
        self.metrics.requests_in_flight.set(self._in_flight)


def _read_layout(model_path: str) -> CheckpointLayout | None:
    """The checkpoint's tensor layout, or None (with a warning) for a checkpoint without
    safetensors files: updates are then checked only by what vLLM loads."""
    try:
        return CheckpointLayout.read(model_path)
    except FileNotFoundError as exc:
        log.warning("weight updates are not checked against the checkpoint's names: %s", exc)
        return None


def _too_long(prompt_token_ids: list[int], n: int, version: int) -> Generation:
    """The answer to a prompt the engine cannot take: ``n`` empty completions."""
    empty = Completion([], "", [], "prompt_too_long", version)
    return Generation(prompt_token_ids=prompt_token_ids, completions=[empty] * n)


RolloutActor = ray.remote(RolloutEngine)
"""`RolloutEngine` as a Ray actor class: ``RolloutActor.options(...).remote(path, config, i)``."""
