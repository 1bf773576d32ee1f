"""The Ray world of a run: rollout group, executor pool, buffer actor, learner group.

`Runtime` is a context manager: it joins (or starts) a Ray cluster, builds every actor from
the config, hands the driver plain-looking services, and tears down exactly what it started.
The death of a rollout or learner actor surfaces as :class:`RunFailed` with a clear message;
executor actors recover on their own inside the pool.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RaySystemError, RayTaskError

from azr.config import AZRConfig, SamplingConfig
from azr.selfplay import Services
from azr.tasks import TaskType
from buffer_service.wire import EntryBatch


class RunFailed(RuntimeError):
    """A rollout or learner actor died (or could not start): the run cannot go on."""


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


def _local_cpus(config: AZRConfig) -> int:
    """Logical CPUs for a local cluster: enough to place every actor of the run.

    On a laptop-sized machine the actors oversubscribe the cores (they are mostly idle in
    turn); Ray's CPU accounting would otherwise refuse to place them.
    """
    learner = config.learner.num_workers * config.learner.cpus_per_worker
    rollout = config.rollout.num_actors * config.rollout.cpu_threads
    executors = config.executor.per_node
    return int(max(os.cpu_count() or 1, learner + rollout + executors + 2))


class Runtime:
    """Builds and owns every actor of a run (use as a context manager)."""

    def __init__(self, config: AZRConfig):
        self.config = config
        self._started_ray = False
        self._closers: list[Any] = []

    def __enter__(self) -> Runtime:
        from transformers import AutoTokenizer

        from actors.group import RolloutGroup
        from azr.tiny_model import ensure_model
        from buffer_service import create_buffer_actor
        from executor_pool.pool import ExecutorPool
        from learner.group import LearnerDiedError, LearnerGroup

        config = self.config
        if not ray.is_initialized():
            address = config.ray_address or os.environ.get("RAY_ADDRESS")
            if address:
                ray.init(address=address)
            else:
                # "local": a fresh cluster even when another one runs on this machine.
                ray.init(address="local", num_cpus=_local_cpus(config), include_dashboard=False)
            self._started_ray = True
        try:
            self.model_path = str(ensure_model(config.model))
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            self.pool = ExecutorPool(
                config.executor,
                metrics=config.metrics.enabled,
                induction_scoring=config.selfplay.induction_scoring,
            )
            self._closers.append(self.pool.shutdown)
            buffer_dir = Path(config.buffer.dir or config.run_dir / "buffer")
            self.buffer = create_buffer_actor(config.buffer, buffer_dir, seed=config.seed)
            self._closers.append(lambda: ray.kill(self.buffer))
            self.store = BufferClient.for_actor(self.buffer)
            try:
                self.rollout = RolloutGroup(self.model_path, config.rollout)
                self._closers.append(self.rollout.shutdown)
            except (RayActorError, RaySystemError, RayTaskError) as exc:
                raise RunFailed(f"the rollout group could not start: {exc}") from exc
            try:
                self.learner = GuardedLearner(
                    LearnerGroup(self.model_path, config.learner, seed=config.seed),
                    LearnerDiedError,
                )
                self._closers.append(self.learner.group.shutdown)
            except LearnerDiedError as exc:
                raise RunFailed(f"the learner group could not start: {exc}") from exc
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.services = Services(
            generator=GuardedGenerator(self.rollout),
            executor=self.pool,
            store=self.store,
            tokenizer=self.tokenizer,
        )
        return self

    def sync_weights(self, version: int) -> dict:
        return self.learner.sync(self.rollout, version)

    def save(self, directory: Path, step: int) -> None:
        self.learner.group.save_checkpoint(str(directory / "learner"))
        ray.get(self.buffer.checkpoint.remote(str(directory / "buffer"), step))

    def restore(self, checkpoint: Path) -> None:
        step = int(checkpoint.name.split("_")[-1])
        self.learner.group.load_checkpoint(str(checkpoint / "learner"))
        ray.get(self.buffer.restore.remote(str(checkpoint / "buffer"), step))

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
    """The learner group, with the death of a rank turned into :class:`RunFailed`."""

    def __init__(self, group: Any, died: type[Exception]):
        self.group = group
        self._died = died

    def train_step(self, samples: list[Any]) -> dict[str, float]:
        try:
            return self.group.train_step(samples)
        except (self._died, RayActorError) as exc:
            raise RunFailed(f"a learner worker died: {exc}") from exc

    def sync(self, rollout: Any, version: int) -> dict:
        try:
            return self.group.sync_weights(rollout, version)
        except (self._died, RayActorError) as exc:
            raise RunFailed(f"weight sync failed, an actor died: {exc}") from exc
