"""LearnerWorker: one rank of the FSDP2 learner group (a Ray actor; the group wraps the class).

Every public method except `node_address` and `rng_state` is a *collective*: the group calls
it on all ranks at once, because FSDP2 all-gathers parameters in forward and reduce-scatters
gradients in backward. Gradient reduction is set to SUM (not FSDP's default mean) so the
``sum ÷ global_token_count`` terms of `learner.loss` add up to the exact global token-mean.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import ray
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule
from transformers import AutoConfig, AutoModelForCausalLM

from azr.config import LearnerConfig
from azr.logs import route_process_output
from azr.models import resolve_model
from azr.tasks import TrainSample
from learner import checkpoint as ckpt
from learner import policy, shard_sync
from learner.batching import empty_micro_batch, pack
from learner.metrics import LearnerMetrics
from learner.nccl_sync import Meta, NCCLWeightSender, parameter_metas
from learner.weight_buckets import split_into_buckets

FULL_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)
FULL_BROADCAST = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)


@contextlib.contextmanager
def quiet_zero_copy_puts() -> Iterator[None]:
    """Silence Ray's warning, on every zero-copy ``ray.put``, that the tensors must not change:
    ``ray.put`` copies them into the object store, and receivers only read (`worker_env`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Zero-copy tensor serialization")
        yield


def resolve_device(setting: str) -> str:
    """``auto`` → cuda when this process sees a GPU, else cpu."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


class LearnerWorker:
    """One FSDP2 rank: model shard, AdamW over its shard, loss, checkpoints, weight export."""

    def __init__(
        self, rank: int, world_size: int, model_path: str, config: LearnerConfig, seed: int
    ) -> None:
        route_process_output(f"learner-{rank}")
        self.rank = rank
        self.world_size = world_size
        self.model_path = model_path
        self.config = config
        self.seed = seed
        self.device = resolve_device(config.device)
        self.step = 0
        if self.device == "cpu":
            torch.set_num_threads(config.cpus_per_worker)
        self.metrics = LearnerMetrics(rank)
        self._own_shards: dict[str, torch.Tensor] = {}

    def node_address(self) -> tuple[str, int]:
        """This node's IP and a free TCP port (rank 0's answer is the rendezvous address)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, master_addr: str, master_port: int) -> dict[str, int]:
        """Join the process group, load and shard the model, build AdamW. Returns its size."""
        backend = "nccl" if self.device == "cuda" else "gloo"
        if self.device == "cuda":
            torch.cuda.set_device(0)  # Ray exposes exactly this worker's GPU as device 0
        dist.init_process_group(
            backend,
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=self.rank,
            world_size=self.world_size,
            timeout=timedelta(seconds=self.config.init_timeout_s),
        )
        torch.manual_seed(self.seed)
        self.model_path = str(resolve_model(self.model_path))  # a hub id: fetched on this node
        self.hf_config = AutoConfig.from_pretrained(self.model_path)
        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        # Tied parameters (embed_tokens / lm_head) appear under two names; HF checkpoints
        # and vLLM expect only the canonical one. Found before sharding replaces parameters.
        first_name: dict[int, str] = {}
        self.tied_aliases: dict[str, str] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            if id(param) in first_name:
                self.tied_aliases[name] = first_name[id(param)]
            else:
                first_name[id(param)] = name
        model.to(self.device)
        if self.config.activation_checkpointing:
            policy.enable_activation_checkpointing(model)
        self.model = policy.shard(model, self.device)
        policy.install_response_forward(self.model, self.config.logprob_chunk_tokens)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.config.lr,
            betas=self.config.betas,
            weight_decay=self.config.weight_decay,
        )
        return {"parameters": sum(p.numel() for p in model.parameters())}

    # -- training ---------------------------------------------------------------------------

    def train_step(
        self, micro_batches: list[list[TrainSample]], global_token_count: int
    ) -> dict[str, float]:
        """One optimizer step over this rank's micro-batches. Returns this rank's sums.

        ``loss``, ``entropy``, ``clip_fraction``, ``mismatch_kl`` are this rank's share of the
        global token-mean (the group adds the ranks); ``grad_norm`` (pre-clip, global) and
        ``seconds`` are the same kind of value on every rank.
        """
        start = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums = dict.fromkeys(("loss", "entropy", "clip_fraction", "mismatch_kl"), 0.0)
        for i, samples in enumerate(micro_batches):
            batch = (pack(samples) if samples else empty_micro_batch()).to(self.device)
            # Reduce-scatter only after the last micro-batch; until then grads accumulate.
            self.model.set_requires_gradient_sync(i == len(micro_batches) - 1)
            terms = policy.backward_micro_batch(
                self.model, batch, self.config.clip_ratio, global_token_count
            )
            for key, value in terms.items():
                sums[key] += value
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        grad_norm = float(grad_norm)
        # A non-finite norm (overflow, a poisoned batch) would write NaN into every weight:
        # skip the step on all ranks (the norm is global, so they agree) and report it.
        finite = math.isfinite(grad_norm)
        if finite and self.config.apply_updates:  # a frozen control computes but never steps
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        seconds = time.perf_counter() - start
        out = {**sums, "grad_norm": grad_norm, "seconds": seconds, "skipped": float(not finite)}
        self.metrics.record_step(out)
        return out

    @torch.no_grad()
    def logprobs(self, token_ids: list[list[int]]) -> list[list[float]]:
        """log p(token t | tokens < t) for t = 1 .. n−1 of each sequence (n−1 values each), at
        temperature 1 (the raw distribution, as the rollout engine's prompt logprobs).

        Every rank runs every sequence (FSDP forward is a collective); only rank 0's answer
        is used. A diagnostic path (weight-sync checks), not a training path.
        """
        self.model.eval()
        out = []
        for ids in token_ids:
            whole = TrainSample(ids[:1], ids[1:], [0.0] * (len(ids) - 1), advantage=0.0)
            lp, _ = policy.response_logprobs(self.model, pack([whole]).to(self.device))
            out.append(lp.double().cpu().tolist())
        self._reshard()
        return out

    def _reshard(self) -> None:
        """Free unsharded parameters. FSDP2 keeps the root's parameters unsharded after a
        no-grad forward; state-dict calls would then see plain tensors, not DTensor shards."""
        for module in self.model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    # -- weights out ------------------------------------------------------------------------

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Gathered full parameters on rank 0 (HF names, CPU, no tied aliases); {} elsewhere."""
        self._reshard()
        state = get_model_state_dict(self.model, options=FULL_CPU)
        for alias in self.tied_aliases:
            state.pop(alias, None)
        return state

    def weight_buckets(
        self, bucket_bytes: int, wire: str = "float32"
    ) -> tuple[list[ray.ObjectRef], int, dict]:
        """Collective path: gather with the state-dict API, then bucket and ``ray.put`` (rank 0).

        Returns (bucket refs, total bytes, {gather_s, put_s}); ([], 0, {...}) on other ranks.
        The refs are owned by this actor and stay valid while it lives.
        """
        start = time.perf_counter()
        state = self.full_state_dict()
        return self._put_buckets(state, bucket_bytes, wire, time.perf_counter() - start)

    def sync_layout_supported(self) -> bool:
        """Whether the object-store shard path (`learner.shard_sync`) fits this model."""
        self._reshard()
        return self.device == "cpu" and shard_sync.supports(self.model, set(self.tied_aliases))

    def put_local_shards(self) -> ray.ObjectRef | None:
        """Shard path, step 1 (every rank, no collective): publish this rank's shards."""
        self._reshard()
        shards = shard_sync.local_shards(self.model)
        if self.rank == 0:
            self._own_shards = shards  # rank 0 reads its own shards in place
            return None
        with quiet_zero_copy_puts():
            return ray.put(shards)

    def buckets_from_shards(
        self, shard_refs: list[ray.ObjectRef | None], bucket_bytes: int, wire: str = "float32"
    ) -> tuple[list[ray.ObjectRef], int, dict]:
        """Shard path, step 2 (rank 0): full tensors from every rank's shards, then buckets."""
        start = time.perf_counter()
        with warnings.catch_warnings():
            # Zero-copy views of the object store are read-only; they are only read here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            state = shard_sync.assemble(self._own_shards, shard_refs, self.rank)
        self._own_shards = {}
        return self._put_buckets(state, bucket_bytes, wire, time.perf_counter() - start)

    def _put_buckets(
        self, state: dict[str, torch.Tensor], bucket_bytes: int, wire: str, gather_s: float
    ) -> tuple[list[ray.ObjectRef], int, dict]:
        start = time.perf_counter()
        refs, total = [], 0
        if self.rank == 0:
            dtype = getattr(torch, wire)
            # The engines' dtype on the wire (bf16: half of fp32's bytes); floats only.
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
            with quiet_zero_copy_puts():
                for bucket in split_into_buckets(state, bucket_bytes):
                    total += sum(t.numel() * t.element_size() for t in bucket.values())
                    refs.append(ray.put(bucket))
        return refs, total, {"gather_s": gather_s, "put_s": time.perf_counter() - start}

    def nccl_connect(self, master_address: str, master_port: int, world_size: int) -> None:
        """GPU: join the weight-broadcast NCCL group (see `learner.nccl_sync`)."""
        self.nccl = NCCLWeightSender(self.rank)
        self.nccl.connect(master_address, master_port, world_size)

    def nccl_metas(self, wire: str = "float32") -> list[Meta]:
        """GPU: (name, wire dtype, shape) of every parameter, in `nccl_send`'s order."""
        return parameter_metas(self.model, wire)

    def nccl_send(self, wire: str = "float32") -> int:
        """GPU: gather every parameter (collective) and broadcast it from rank 0 in the
        ``wire`` dtype; bytes sent."""
        self._reshard()
        return self.nccl.send(self.model, getattr(torch, wire))

    def record_sync(self, seconds: float, num_bytes: int) -> None:
        """Export one sync's figures (measured by the group, recorded by rank 0's actor)."""
        self.metrics.record_sync(seconds, num_bytes)

    # -- checkpoints ------------------------------------------------------------------------

    def rng_state(self) -> dict:
        return ckpt.capture_rng_state()

    def save_checkpoint(self, directory: str) -> None:
        """HF weights + full optimizer state + every rank's RNG (rank 0 writes)."""
        model_state = self.full_state_dict()
        optim_state = get_optimizer_state_dict(self.model, self.optimizer, options=FULL_CPU)
        rng_states: list[dict] | None = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(ckpt.capture_rng_state(), rng_states, dst=0)
        if self.rank == 0:
            final = Path(directory)
            staging = ckpt.staging_dir(final)
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            ckpt.save_hf_weights(model_state, staging)
            ckpt.copy_model_files(self.model_path, staging, self.hf_config)
            torch.save(optim_state, staging / ckpt.OPTIMIZER_FILE)
            ckpt.save_learner_state(staging, self.step, self.world_size, rng_states)
            ckpt.finalize(staging, final)
        dist.barrier()

    def load_checkpoint(self, directory: str) -> int:
        """Restore weights, optimizer and RNG from a `save_checkpoint` directory. Returns step.

        Rank 0 reads the files and broadcasts; the shards land where each rank's FSDP layout
        wants them, so a checkpoint loads into any world size (RNG needs the same size).
        """
        path = Path(directory)
        payload: list = [None]
        model_state: dict[str, torch.Tensor] = {}
        optim_state: dict = {}
        if self.rank == 0:
            try:
                step, rng_states = ckpt.load_learner_state(path)
                model_state = ckpt.load_hf_weights(path)
                for alias, canonical in self.tied_aliases.items():
                    model_state[alias] = model_state[canonical]
                optim_state = torch.load(path / ckpt.OPTIMIZER_FILE, weights_only=True)
                payload = [(step, rng_states, None)]
            except Exception as exc:  # broadcast the failure so no rank hangs in a collective
                payload = [(0, [], f"{type(exc).__name__}: {exc}")]
        dist.broadcast_object_list(payload, src=0)
        step, rng_states, error = payload[0]
        if error is not None:
            raise ckpt.CheckpointError(f"cannot load learner checkpoint {path}: {error}")
        self._reshard()
        set_model_state_dict(self.model, model_state, options=FULL_BROADCAST)
        set_optimizer_state_dict(self.model, self.optimizer, optim_state, options=FULL_BROADCAST)
        if len(rng_states) == self.world_size:
            ckpt.restore_rng_state(rng_states[self.rank])
        self.step = step
        return step

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def worker_env(config: LearnerConfig) -> dict[str, str]:
    """Env vars of a worker process.

    Zero-copy tensor pickling makes ``ray.put`` of a weight bucket one memcpy into the object
    store (tensors travel as out-of-band numpy buffers) instead of pickling every byte in-band;
    receivers get read-only views of the store, which `load_weights` only copies from.
    """
    return {
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
        "OMP_NUM_THREADS": str(config.cpus_per_worker),
    }
