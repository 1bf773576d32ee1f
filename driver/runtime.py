"""The Ray world of a run: rollout group, executor pool, buffer actor, learner group.

`Runtime` is a context manager: it joins (or starts) a Ray cluster, builds the actors of its
``parts`` from the config (a training run: all four; `azr eval`: rollout and executors; its
score-only mode: executors), hands the driver plain-looking services, and tears down exactly
what it started. The death of a rollout or learner actor, a weight sync the rollout refuses or
did not load in full, and a sync whose probe logprobs disagree (`driver.sync_check`) surface as
:class:`RunFailed` with a clear message; executor actors recover on their own inside the pool.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RaySystemError, RayTaskError

from azr.config import AZRConfig, SamplingConfig
from azr.logs import LOG_DIR_ENV
from azr.selfplay import Services
from azr.tasks import TaskType
from buffer_service.wire import EntryBatch
from driver.checkpoint import step_of
from driver.sync_check import SyncVerifier, probe_token_ids, tolerance_for

TRAINING = frozenset({"rollout", "executors", "buffer", "learner"})
"""The parts of a training run."""
EVALUATION = frozenset({"rollout", "executors"})
"""The parts `azr eval` generates and scores with."""
SCORING = frozenset({"executors"})
"""The parts that score generations made elsewhere."""


class RunFailed(RuntimeError):
    """A rollout or learner actor died (or could not start), or a weight sync went wrong: the
    run cannot go on."""


class GuardedGenerator:
    """The rollout group, with actor death turned into :class:`RunFailed`."""

    def __init__(self, group: Any):
        self.group = group

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[Any]:
        try:
            return self.group.generate(prompts, sampling)
        except (RayActorError, RaySystemError) as exc:
            raise RunFailed(f"a rollout actor died during generation: {exc}") from exc


class BufferClient:
    """The buffer service's API shaped as `azr.selfplay.TaskStore`.

    ``call(method, *args, **kwargs)`` reaches either the BufferActor (``for_actor``) or an
    in-process ``TaskBuffers`` (``local``), which have the same methods.
    """

    def __init__(self, call: Callable[..., Any]):
        self._call = call

    @classmethod
    def for_actor(cls, actor: Any) -> BufferClient:
        return cls(lambda name, *a, **kw: ray.get(getattr(actor, name).remote(*a, **kw)))

    @classmethod
    def local(cls, buffers: Any) -> BufferClient:
        return cls(lambda name, *a, **kw: getattr(buffers, name)(*a, **kw))

    def reference_sets(self, task: TaskType, k: int, count: int) -> list[list[Any]]:
        return self._call("sample_reference_sets", task, k, count) if count > 0 else []

    def tasks(self, task: TaskType, n: int) -> list[Any]:
        # Uniform from the buffer as it was before this step's additions (the new tasks are
        # in the solve batch already, through their Monte-Carlo samples).
        return self._call("sample_tasks", task, n, new_first=False) if n > 0 else []

    def add(self, task: TaskType, tasks: list[Any]) -> int:
        # EntryBatch: the same list, pickled as plain tuples (half the Ray call's cost per entry).
        return int(self._call("add_many", task, EntryBatch(tasks)).added)

    def size(self, task: TaskType) -> int:
        return int(self._call("size", task))


def resource_demand(
    config: AZRConfig, gpus_in_cluster: bool, parts: frozenset[str] = TRAINING
) -> dict[str, float]:
    """Ray resources the actors of ``parts`` reserve (executors: those of one node)."""
    le, ro, ex = config.learner, config.rollout, config.executor
    learner = "learner" in parts
    rollout = "rollout" in parts
    learner_gpu = gpus_in_cluster and le.device != "cpu"
    rollout_gpu = gpus_in_cluster and ro.device != "cpu"
    cpu = (le.num_workers * le.reserved_cpus if learner else 0) + (
        ex.per_node * ex.num_cpus_per_actor
    )
    cpu += ro.num_actors * (1 if rollout_gpu else ro.reserved_cpus) if rollout else 0
    gpu = (le.num_workers * le.gpus_per_worker if learner and learner_gpu else 0) + (
        ro.num_actors * ro.tensor_parallel_size if rollout and rollout_gpu else 0
    )
    return {"CPU": cpu, **({"GPU": gpu} if gpu else {})}


def local_cpus(config: AZRConfig, parts: frozenset[str] = TRAINING) -> int:
    """Logical CPUs for a local cluster: the machine's cores, or more if the run needs them.

    On a laptop-sized machine the actors may oversubscribe the cores (they are mostly idle in
    turn); Ray's CPU accounting would otherwise refuse to place them.
    """
    need = resource_demand(config, gpus_in_cluster=False, parts=parts)["CPU"]
    return max(os.cpu_count() or 1, math.ceil(need))


def _cluster_is_growing() -> bool:
    """Whether the autoscaler is launching or setting up nodes (resources may still come)."""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
    except Exception:  # no autoscaler state to read: do not claim the cluster is fixed
        return True
    return bool(status.pending_launches or status.pending_nodes)


def check_placement(config: AZRConfig, parts: frozenset[str] = TRAINING) -> None:
    """Fail at once, naming what was asked and what the cluster has, when the run's actors
    cannot fit the cluster and no node is on its way (rather than after a placement timeout)."""
    have = ray.cluster_resources()
    need = resource_demand(config, gpus_in_cluster=have.get("GPU", 0) > 0, parts=parts)
    short = {k: v for k, v in need.items() if v > have.get(k, 0.0) + 1e-9}
    if not short or _cluster_is_growing():
        return
    asked = ", ".join(f"{k} {v:g}" for k, v in need.items())
    has = ", ".join(f"{k} {have.get(k, 0.0):g}" for k in need)
    raise RunFailed(
        f"the run's actors reserve {asked} (learner {config.learner.num_workers} x "
        f"{config.learner.reserved_cpus:g} CPU, rollout {config.rollout.num_actors} actor(s), "
        f"executors {config.executor.per_node} x {config.executor.num_cpus_per_actor:g} CPU per "
        f"node) but the cluster has {has} and no node is starting. Give Ray more logical CPUs "
        "(ray start --num-cpus=N) or lower learner.num_cpus_per_worker / rollout.num_cpus."
    )


class Runtime:
    """Builds and owns the actors of a run (use as a context manager)."""

    def __init__(
        self, config: AZRConfig, log_dir: Path | None = None, parts: frozenset[str] = TRAINING
    ):
        """``log_dir``: where actors write their output (None: Ray's defaults, e.g. tests);
        ``parts``: which actors to build (`TRAINING`, `EVALUATION`, `SCORING`)."""
        self.config = config
        self.log_dir = log_dir
        self.parts = parts
        self._started_ray = False
        self._closers: list[Any] = []

    def __enter__(self) -> Runtime:
        from transformers import AutoTokenizer

        from actors.group import RolloutGroup
        from azr.models import ensure_model
        from buffer_service import create_buffer_actor
        from executor_pool.pool import ExecutorPool
        from learner.group import LearnerDiedError, LearnerGroup, WeightSyncError

        config = self.config
        if not ray.is_initialized():
            quiet: dict[str, Any] = {}
            if self.log_dir is not None:
                # Actors write their output to <run>/logs/<kind>.log (azr.logs); Ray keeps its
                # own console handler off, and nothing is streamed back to this console.
                quiet = {
                    "runtime_env": {"env_vars": {LOG_DIR_ENV: str(self.log_dir.resolve())}},
                    "log_to_driver": False,
                    "configure_logging": False,
                }
            address = config.ray_address or os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address, **quiet)
            else:
                # "local": a fresh cluster even when another one runs on this machine.
                ray.init(
                    address="local",
                    num_cpus=local_cpus(config, self.parts),
                    include_dashboard=False,
                    **quiet,
                )
            self._started_ray = True
        self.tokenizer = self.store = self.rollout = self.learner = self.max_model_len = None
        try:
            check_placement(config, self.parts)
            if "rollout" in self.parts:
                self.model_path = str(ensure_model(config.model))
                # Actors resolve the model on their own node: a hub id is fetched there, once.
                self.model_source = config.model.path or self.model_path
                self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            self.pool = ExecutorPool(
                config.executor,
                metrics=config.metrics.enabled,
                induction_scoring=config.selfplay.induction_scoring,
            )
            self._closers.append(self.pool.shutdown)
            if "buffer" in self.parts:
                buffer_dir = Path(config.buffer.dir or config.run_dir / "buffer")
                self.buffer = create_buffer_actor(config.buffer, buffer_dir, seed=config.seed)
                self._closers.append(lambda: ray.kill(self.buffer))
                self.store = BufferClient.for_actor(self.buffer)
            if "rollout" in self.parts:
                try:
                    self.rollout = RolloutGroup(self.model_source, config.rollout)
                    self._closers.append(self.rollout.shutdown)
                except (RayActorError, RaySystemError, RayTaskError) as exc:
                    raise RunFailed(f"the rollout group could not start: {exc}") from exc
                self.max_model_len = self.rollout.max_model_len()
            if "learner" in self.parts:
                try:
                    group = LearnerGroup(self.model_source, config.learner, seed=config.seed)
                    self._closers.append(group.shutdown)
                except LearnerDiedError as exc:
                    raise RunFailed(f"the learner group could not start: {exc}") from exc
                self.learner = GuardedLearner(
                    group,
                    self.rollout,
                    failures=(LearnerDiedError, WeightSyncError),
                    verifier=self._sync_verifier(group),
                )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self._serve()

    def _serve(self) -> Runtime:
        """The services of the parts built (a missing part's service is None)."""
        generator = GuardedGenerator(self.rollout) if self.rollout is not None else None
        self.services = Services(
            generator=generator,  # type: ignore[arg-type]
            executor=self.pool,
            store=self.store,  # type: ignore[arg-type]
            tokenizer=self.tokenizer,
            max_model_len=self.max_model_len,
        )
        return self

    def _sync_verifier(self, group: Any) -> SyncVerifier:
        """The weight-sync check of this run: its probe, schedule and tolerance."""
        dtypes = {info["dtype"] for info in self.rollout.infos()}
        both_float32 = dtypes == {"float32"} and not group.use_gpu
        return SyncVerifier(
            probe_token_ids(self.tokenizer, self.max_model_len),
            every=self.config.learner.verify_sync_every,
            tolerance=tolerance_for(self.config.learner, both_float32),
            learner_logprobs=group.logprobs,
            rollout_logprobs=self.rollout.prompt_logprobs,
        )

    def sync_weights(self, version: int | None = None) -> dict:
        """Push the learner's weights to the rollout (as its own version unless given)."""
        return self.learner.sync(version)

    def save(self, directory: Path, step: int) -> None:
        """The learner's and the buffer's parts of a checkpoint (`driver.checkpoint`)."""
        self.learner.group.save_checkpoint(str(directory / "learner"))
        ray.get(self.buffer.checkpoint.remote(str(directory / "buffer"), step))

    def restore(self, checkpoint: Path) -> int:
        """Load a checkpoint's learner and buffer parts; returns the learner's policy version."""
        version = self.learner.group.load_checkpoint(str(checkpoint / "learner"))
        ray.get(self.buffer.restore.remote(str(checkpoint / "buffer"), step_of(checkpoint)))
        return version

    def __exit__(self, *exc_info: object) -> None:
        for close in reversed(self._closers):
            # Teardown must reach every actor even if one is already gone.
            with contextlib.suppress(Exception):
                close()
        self._closers.clear()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


class GuardedLearner:
    """The learner group, with a dead rank or a failed weight sync turned into :class:`RunFailed`
    (``failures``: the learner package's error types); every sync is counted by the
    `SyncVerifier` (checked when due)."""

    def __init__(
        self,
        group: Any,
        rollout: Any,
        failures: tuple[type[Exception], ...],
        verifier: SyncVerifier | None = None,
    ):
        self.group = group
        self.rollout = rollout
        self._failures = (*failures, RayActorError)
        self.verifier = verifier

    def train_step(self, samples: list[Any]) -> dict[str, float]:
        try:
            return self.group.train_step(samples)
        except self._failures as exc:
            raise RunFailed(f"a learner worker died: {exc}") from exc

    def sync(self, version: int | None = None) -> dict:
        """Send the learner's weights to the rollout group; the report carries the version
        (and ``verify_mean_abs``, ``verify_max_abs``, ``verify_seconds`` when the check ran)."""
        try:
            report = self.group.sync_weights(self.rollout, version)
        except self._failures as exc:
            raise RunFailed(f"weight sync failed: {exc}") from exc
        except RayTaskError as exc:  # the rollout refused the update or did not load it all
            raise RunFailed(f"weight sync failed: {_cause(exc)}") from exc
        if self.verifier is None:
            return report
        started = time.perf_counter()
        try:
            check = self.verifier.after_sync(int(report["version"]))
        except self._failures as exc:
            raise RunFailed(f"the weight-sync check failed, an actor died: {exc}") from exc
        if check is not None:
            report.update(check.metrics(), verify_seconds=time.perf_counter() - started)
            if not check.ok:
                raise RunFailed(check.message())
        return report


def _cause(exc: RayTaskError) -> str:
    """The remote exception's own message (a RayTaskError's text is a whole traceback)."""
    cause = getattr(exc, "cause", None)
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
