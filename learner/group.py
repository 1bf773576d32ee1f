"""LearnerGroup: the driver-side handle of W FSDP2 `LearnerWorker` actors.

The driver calls it like a local object; every method fans one collective out to all ranks
and waits for all of them. A rank that dies (OOM, segfault, node loss) raises
`LearnerDiedError` at once (the surviving ranks would otherwise hang in a collective until the
process-group timeout); the group is then unusable and the driver stops the run.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Protocol

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from transformers import AutoConfig

from azr.config import LearnerConfig
from azr.models import resolve_model
from azr.tasks import TrainSample
from learner.batching import plan_micro_batches, sample_length, validate_samples
from learner.checkpoint import CheckpointError
from learner.worker import LearnerWorker, resolve_device, worker_env


class LearnerDiedError(RuntimeError):
    """A learner worker died or the group could not start; the learner group is unusable."""


class WeightSyncError(RuntimeError):
    """A weight sync failed on one side or did not finish in time; the message names who."""


class WeightReceiver(Protocol):
    """What `sync_weights` needs from the rollout side (``actors.group.RolloutGroup``)."""

    actors: list[Any]
    weight_dtype: str
    """The engines' parameter dtype ("bfloat16", "float32" ...): the dtype on the wire."""

    def start_update(self, bucket_refs: list[ray.ObjectRef], version: int) -> list[ray.ObjectRef]:
        """Start loading the buckets on every actor; one ref per actor, in actor order."""
        ...


class LearnerGroup:
    """W = ``config.num_workers`` FSDP2 ranks training one policy.

    Args:
        model_path: local HF checkpoint directory (config + safetensors) to start from.
        config: the ``learner`` section.
        seed: torch seed of every rank (the model is loaded, not randomly initialised; the
            seed covers dropout and anything else random in a step).
    """

    def __init__(self, model_path: str, config: LearnerConfig, seed: int) -> None:
        self.model_path = model_path
        self.config = config
        self.version = 0
        """Policy version of the learner's weights: the number of updates applied."""
        self._sent_version = 0
        self._broken: str | None = None
        hf_config = AutoConfig.from_pretrained(resolve_model(model_path))
        self.vocab_size = int(hf_config.vocab_size)
        self.max_length = int(getattr(hf_config, "max_position_embeddings", 1 << 30))
        use_gpu = resolve_device(config.device) == "cuda" or (
            config.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0
        )
        self.use_gpu = use_gpu
        self._nccl_ready = False
        self._shard_sync: bool | None = None
        gpus = config.gpus_per_worker if use_gpu else 0
        # Reserve every rank's bundle at once before any worker starts: all ranks or none.
        bundle = {"CPU": config.reserved_cpus, **({"GPU": gpus} if gpus else {})}
        self._pg = placement_group([bundle] * config.num_workers, strategy="PACK")
        try:
            ray.get(self._pg.ready(), timeout=config.init_timeout_s)
        except GetTimeoutError:
            remove_placement_group(self._pg)
            raise LearnerDiedError(
                f"learner group could not reserve {config.num_workers} × {bundle} within "
                f"{config.init_timeout_s}s (cluster has {ray.cluster_resources()})"
            ) from None
        actor_cls = ray.remote(LearnerWorker)
        self.workers = [
            actor_cls.options(
                num_cpus=config.reserved_cpus,
                num_gpus=gpus,
                max_restarts=0,
                runtime_env={"env_vars": worker_env(config)},
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self._pg, placement_group_bundle_index=rank
                ),
            ).remote(rank, config.num_workers, model_path, config, seed)
            for rank in range(config.num_workers)
        ]
        try:
            # Rank 0's address is the rendezvous of the process group.
            addr, port = self._all("node_address", ranks=[0])[0]
            info = self._all("setup", addr, port, timeout=config.init_timeout_s)
        except BaseException:
            self.shutdown()
            raise
        self.num_parameters = info[0]["parameters"]

    # -- fan-out ----------------------------------------------------------------------------

    def _all(
        self,
        method: str,
        *args: Any,
        per_rank: list[tuple] | None = None,
        ranks: list[int] | None = None,
        timeout: float | None = None,
    ) -> list[Any]:
        """Call ``method`` on the ranks (all by default); return results in rank order.

        Waits on whichever rank finishes first, so one rank's death surfaces immediately
        instead of after the others' collective timeout.
        """
        if self._broken:
            raise LearnerDiedError(f"learner group is unusable: {self._broken}")
        ranks = list(range(len(self.workers))) if ranks is None else ranks
        refs = {
            getattr(self.workers[r], method).remote(*(per_rank[r] if per_rank else args)): r
            for r in ranks
        }
        results: dict[int, Any] = {}
        pending = list(refs)
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not ready:
                self._broken = f"{method} timed out after {timeout}s"
                raise LearnerDiedError(f"learner {method} timed out after {timeout}s")
            rank = refs[ready[0]]
            try:
                results[rank] = ray.get(ready[0])
            except RayActorError as exc:
                self._broken = f"rank {rank} died during {method}"
                raise LearnerDiedError(
                    f"learner worker rank {rank} died during {method}: {exc}"
                ) from exc
            except CheckpointError:
                raise  # raised by every rank alike before any collective: the group is intact
            except Exception:
                # The other ranks may now wait forever in a collective this rank left.
                self._broken = f"rank {rank} failed during {method}"
                raise
        return [results[r] for r in ranks]

    # -- training ---------------------------------------------------------------------------

    def train_step(self, samples: list[TrainSample]) -> dict[str, float]:
        """One AdamW update on the whole batch (token-mean over all its response tokens).

        Returns ``loss, grad_norm, entropy, clip_fraction, mismatch_kl, tokens, seconds,
        samples, micro_batches, skipped`` (skipped = 1.0 when a non-finite gradient norm made
        every rank skip the optimizer step). Raises `InvalidSampleError` before any work on a
        malformed sample.
        """
        start = time.perf_counter()
        validate_samples(samples, self.vocab_size, self.max_length)
        plan = plan_micro_batches(
            [sample_length(s) for s in samples], len(self.workers), self.config.micro_batch_tokens
        )
        tokens = sum(len(s.response_token_ids) for s in samples)
        per_rank = [([[samples[i] for i in mb] for mb in micro], tokens) for micro in plan]
        results = self._all("train_step", per_rank=per_rank)
        self.version += 1
        summed = {
            key: sum(r[key] for r in results)
            for key in ("loss", "entropy", "clip_fraction", "mismatch_kl")
        }
        return {
            **summed,
            "grad_norm": results[0]["grad_norm"],
            "skipped": results[0]["skipped"],
            "tokens": float(tokens),
            "samples": float(len(samples)),
            "micro_batches": float(len(plan[0])),
            "seconds": time.perf_counter() - start,
        }

    def logprobs(self, token_ids: list[list[int]]) -> list[list[float]]:
        """Learner log p(token t | < t), t = 1..n−1, per sequence (as the rollout engine's
        ``prompt_logprobs`` without its leading None)."""
        return self._all("logprobs", token_ids)[0]

    # -- weight sync ------------------------------------------------------------------------

    def sync_weights(
        self, rollout_group: WeightReceiver, version: int | None = None
    ) -> dict[str, Any]:
        """Send the current weights to the rollout engines as policy ``version`` (default: the
        learner's own version, its update count; an explicit one relabels the weights, and
        later updates count on from it).

        CPU: rank 0 assembles the full parameters (`learner.shard_sync`, or a gloo gather as
        fallback), splits them into buckets of ``config.sync_bucket_mb`` MiB and ``ray.put``s
        each; the rollout group loads them in place. GPU: NCCL broadcast into the vLLM workers
        (`learner.nccl_sync`). Both paths, and what is verified: docs/learner.md. ``version``
        must exceed the last one sent (ValueError).
        Returns seconds, bytes, gbps, buckets, version, gather_s and put_s (rank 0's gather
        and ``ray.put`` time, CPU path) and the rollout group's own answer under ``rollout``.
        """
        version = self.version if version is None else version
        if version <= self._sent_version:
            raise ValueError(f"weight version {version} is not newer than {self._sent_version}")
        start = time.perf_counter()
        timings: dict[str, float] = {}
        wire = wire_dtype(rollout_group.weight_dtype)
        if self.use_gpu:
            total, num_buckets, rollout_result = self._sync_nccl(rollout_group, version, wire)
        else:
            bucket_bytes = self.config.sync_bucket_mb * (1 << 20)
            refs, total, timings = self._cpu_buckets(bucket_bytes, wire)
            receives = rollout_group.start_update(refs, version)
            rollout_result = self._sync_together([], _receivers(receives))
            num_buckets = len(refs)
            del refs  # the object store frees the buckets once no one holds a reference
        seconds = time.perf_counter() - start
        self._sent_version = self.version = version
        self._all("record_sync", seconds, total, ranks=[0])
        return {
            "seconds": seconds,
            "bytes": float(total),
            "gbps": total / seconds / 1e9 if seconds > 0 else 0.0,
            "buckets": float(num_buckets),
            "version": float(version),
            "wire_dtype": wire,
            **timings,
            "rollout": rollout_result,
        }

    def _cpu_buckets(
        self, bucket_bytes: int, wire: str = "float32"
    ) -> tuple[list[ray.ObjectRef], int, dict]:
        """Rank 0's bucket refs (tensors in the ``wire`` dtype): via the object store
        (`learner.shard_sync`) when the model's layout allows, else via the collective
        state-dict gather."""
        if self._shard_sync is None:
            self._shard_sync = self._all("sync_layout_supported", ranks=[0])[0]
        if not self._shard_sync:
            return self._all("weight_buckets", bucket_bytes, wire)[0]
        start = time.perf_counter()
        shard_refs = self._all("put_local_shards")
        published = time.perf_counter() - start
        refs, total, timings = self._all(
            "buckets_from_shards", shard_refs, bucket_bytes, wire, ranks=[0]
        )[0]
        return refs, total, {**timings, "gather_s": timings["gather_s"] + published}

    def _sync_together(
        self,
        senders: list[tuple[str, ray.ObjectRef]],
        receivers: list[tuple[str, ray.ObjectRef]],
        collective: bool = False,
    ) -> list[Any]:
        """Wait for both sides of a sync at once, within ``config.sync_timeout_s``.

        A failure on either side ends the wait at once, naming the actor (NCCL peers would
        otherwise block forever in a broadcast the failed side left); so does the deadline,
        naming who had not answered. After a failed ``collective`` (NCCL) sync the group is
        unusable: its collective state is unknown. Returns the receivers' answers in order.
        """
        timeout = self.config.sync_timeout_s
        pending = {ref: name for name, ref in [*senders, *receivers]}
        answers: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        while pending:
            left = max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
            if not ready:
                silent = ", ".join(sorted(pending.values()))
                if collective:
                    self._broken = f"weight sync timed out waiting for {silent}"
                raise WeightSyncError(
                    f"it did not finish within learner.sync_timeout_s={timeout:g}s: "
                    f"no answer from {silent}"
                )
            name = pending.pop(ready[0])
            try:
                answers[name] = ray.get(ready[0])
            except Exception as exc:
                if collective:
                    self._broken = f"weight sync failed on {name}"
                cause = getattr(exc, "cause", None) or exc  # a RayTaskError's text is a traceback
                raise WeightSyncError(f"{name} failed: {type(cause).__name__}: {cause}") from exc
        return [answers[name] for name, _ in receivers]

    def _sync_nccl(self, rollout_group: Any, version: int, wire: str) -> tuple[int, int, Any]:
        """GPU path (vLLM side unverified): NCCL broadcast into the vLLM workers, see
        `learner.nccl_sync` for the group layout. Uses the rollout group's ``actors`` and
        their ``init_weight_group_nccl`` / ``receive_weights_nccl`` (actors/rollout.py)."""
        actors = rollout_group.actors
        if not self._nccl_ready:
            addr, port = self._all("node_address", ranks=[0])[0]
            tp = rollout_group.config.tensor_parallel_size
            world = 1 + len(actors) * tp
            joins = [
                actor.init_weight_group_nccl.remote(addr, port, 1 + i * tp, world)
                for i, actor in enumerate(actors)
            ]
            connect = self.workers[0].nccl_connect.remote(addr, port, world)
            self._sync_together(
                [("learner rank 0 (NCCL connect)", connect)], _receivers(joins), collective=True
            )
            self._nccl_ready = True
        metas = self._all("nccl_metas", wire, ranks=[0])[0]
        # Receivers first: they block inside the NCCL broadcast that rank 0 then starts; every
        # rank joins the gathers, so all of them are senders.
        receives = [actor.receive_weights_nccl.remote(metas, version) for actor in actors]
        sends = [
            (f"learner rank {r}", w.nccl_send.remote(wire)) for r, w in enumerate(self.workers)
        ]
        answers = self._sync_together(sends, _receivers(receives), collective=True)
        total = _metas_bytes(metas)
        return total, 0, answers

    # -- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self, directory: str) -> None:
        """HF-format weights (+ config, tokenizer), full optimizer state, RNG of every rank."""
        self._all("save_checkpoint", directory)

    def load_checkpoint(self, directory: str) -> int:
        """Restore a `save_checkpoint` directory exactly; returns the learner step stored,
        which becomes the policy version (the engines get it at the next sync)."""
        self.version = self._all("load_checkpoint", directory)[0]
        return self.version

    def shutdown(self) -> None:
        """Leave the process group and free the actors and their reservation (idempotent)."""
        workers, self.workers = getattr(self, "workers", []), []
        if workers and not self._broken:
            # A dead or hung rank makes this fail; killing below is the cleanup then.
            with contextlib.suppress(Exception):
                ray.get([w.shutdown.remote() for w in workers], timeout=30)
        for w in workers:
            ray.kill(w, no_restart=True)
        if getattr(self, "_pg", None) is not None:
            remove_placement_group(self._pg)
            self._pg = None
        self._broken = self._broken or "shut down"


def _receivers(refs: list[ray.ObjectRef]) -> list[tuple[str, ray.ObjectRef]]:
    return [(f"rollout actor {i}", ref) for i, ref in enumerate(refs)]


def wire_dtype(engine_dtype: str) -> str:
    """The dtype weights travel in: the engines' own 16-bit dtype (half the bytes of fp32
    master weights, and what they load anyway), else float32."""
    return engine_dtype if engine_dtype in ("bfloat16", "float16") else "float32"


def _metas_bytes(metas: list[tuple[str, str, tuple[int, ...]]]) -> int:
    import torch

    return sum(
        torch.empty((), dtype=getattr(torch, dtype)).element_size() * int(torch.Size(shape).numel())
        for _, dtype, shape in metas
    )
