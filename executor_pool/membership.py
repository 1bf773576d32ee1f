"""Which executor actors exist, on which nodes, and in what state (the pool's membership).

Runs on the pool's dispatcher thread only. A member is ``starting`` until its ``ready()``
call returns (the sandbox is up), then ``ready``; it is ``dead`` once it died, failed to
start, or its node left. Dead members stay listed while calls to them are unresolved, so the
dispatcher can still match those calls' failures to retries.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from azr.config import ExecutorConfig
from executor_pool.actor import ExecutorActor

logger = logging.getLogger(__name__)

MAX_START_FAILURES = 3
"""Consecutive start-up failures after which a node gets no more executor actors."""
_RESOURCE_MARK = 0.01
"""Amount of ``executor.resource`` each actor takes: the resource marks nodes, it is no quota."""


@dataclass(frozen=True)
class MemberInfo:
    """One executor actor as the pool sees it."""

    name: str
    node_id: str
    state: str
    """starting | ready | dead (dead members stay listed while calls to them are unresolved)."""
    chunks_in_flight: int
    handle: ActorHandle


@dataclass(eq=False)
class Member:
    """Mutable bookkeeping of one executor actor."""

    name: str
    node_id: str
    handle: ActorHandle
    started_at: float
    state: str = "starting"
    in_flight: int = 0
    """Chunks sent to it and not yet resolved."""
    last_used: int = 0
    """Dispatch sequence number of its latest chunk (least recently used goes first)."""

    def info(self) -> MemberInfo:
        return MemberInfo(self.name, self.node_id, self.state, self.in_flight, self.handle)


class Membership:
    """Places, starts, replaces and retires executor actors (see module docstring)."""

    def __init__(
        self,
        config: ExecutorConfig,
        counters: collections.Counter[str],
        *,
        max_nodes: int | None,
        actor_kwargs: dict[str, Any],
    ):
        self._config = config
        self._counters = counters
        self._max_nodes = max_nodes
        self._actor_kwargs = actor_kwargs
        self.members: list[Member] = []
        self.nodes: frozenset[str] = frozenset()
        self.last_error: str | None = None
        self.fatal_error: str | None = None
        self._starting: dict[ray.ObjectRef, Member] = {}
        self._start_failures: collections.Counter[str] = collections.Counter()
        self._given_up: set[str] = set()
        self._next_refresh = 0.0
        self._sequence = itertools.count(1)
        self._names = itertools.count(1)

    # -- queries ---------------------------------------------------------------------------

    def starting_refs(self) -> list[ray.ObjectRef]:
        return list(self._starting)

    def is_starting_ref(self, ref: ray.ObjectRef) -> bool:
        return ref in self._starting

    def has_capacity(self) -> bool:
        """Whether any actor is ready or on its way."""
        return any(m.state != "dead" for m in self.members)

    def live_count(self) -> int:
        return sum(1 for m in self.members if m.state != "dead")

    def live_per_node(self) -> dict[str, int]:
        return dict(collections.Counter(m.node_id for m in self.members if m.state != "dead"))

    def ready_per_node(self) -> dict[str, int]:
        return dict(collections.Counter(m.node_id for m in self.members if m.state == "ready"))

    def usable_nodes(self) -> frozenset[str]:
        return self.nodes - self._given_up

    def next_sequence(self) -> int:
        return next(self._sequence)

    # -- changes ---------------------------------------------------------------------------

    def refresh_if_due(self, now: float) -> None:
        if now >= self._next_refresh:
            self.refresh()

    def refresh(self) -> None:
        """Look at the cluster: actors for new nodes, replacements, forget removed nodes."""
        self._next_refresh = time.monotonic() + self._config.discovery_interval_s
        self.nodes = self._executor_nodes()
        for member in self.members:
            if member.state != "dead" and member.node_id not in self.nodes:
                self.retire(member, "its node left the cluster")
        for node in sorted(self.nodes - self._given_up):
            live = sum(1 for m in self.members if m.node_id == node and m.state != "dead")
            for _ in range(self._config.per_node - live):
                self._start_member(node)
        self.members = [m for m in self.members if m.state != "dead" or m.in_flight]
        self.fatal_error = None  # a node that joins later may well work
        if self.nodes and self.nodes <= self._given_up:
            self.fatal_error = (
                f"executor actors failed to start on every executor node; last error: "
                f"{self.last_error}"
            )

    def retire(self, member: Member, why: str) -> None:
        """Stop sending work to a member; calls in flight resolve (or fail and retry) later."""
        if member.state == "dead":
            return
        logger.warning(
            "executor pool: %s on node %s retired: %s", member.name, member.node_id[:8], why
        )
        member.state = "dead"
        self._counters["actors_died"] += 1
        self._next_refresh = 0.0  # replace it now if its node is still there
        kill_actor(member.handle)

    def on_started(self, ref: ray.ObjectRef) -> None:
        """A ``ready()`` call resolved: the member is ready, or it failed to start."""
        member = self._starting.pop(ref)
        try:
            ray.get(ref)
        except Exception as exc:
            self._start_failed(member, exc)
            return
        if member.state == "starting":
            member.state = "ready"
            self._start_failures[member.node_id] = 0

    def expire_slow_starts(self, now: float) -> None:
        for ref, member in list(self._starting.items()):
            if now - member.started_at > self._config.start_timeout_s:
                del self._starting[ref]
                timeout = self._config.start_timeout_s
                self._start_failed(member, TimeoutError(f"not ready after {timeout:.0f}s"))

    def close_all(self, timeout_s: float) -> None:
        """Close every live sandbox (bounded wait), then kill every actor."""
        live = [m for m in self.members if m.state != "dead"]
        if live:
            try:
                closing = [m.handle.close.remote() for m in live]
                ray.wait(closing, num_returns=len(closing), timeout=timeout_s)
            except Exception as exc:
                logger.warning("executor pool: closing actors failed: %s", exc)
        for member in self.members:
            kill_actor(member.handle)
        self.members = []
        self._starting.clear()

    # -- internals -------------------------------------------------------------------------

    def _executor_nodes(self) -> frozenset[str]:
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
        except Exception as exc:  # GCS hiccup: keep the last known membership
            logger.warning("executor pool: cannot list nodes (%s); keeping the last view", exc)
            return self.nodes
        resource = self._config.resource
        if resource is not None:
            nodes = [n for n in nodes if n.get("Resources", {}).get(resource, 0) > 0]
        ids = sorted(n["NodeID"] for n in nodes)
        if self._max_nodes is not None:
            # The driver's own node first: `azr exec --workers N` means "on this machine".
            here = ray.get_runtime_context().get_node_id()
            ids = sorted(ids, key=lambda node: node != here)[: self._max_nodes]
        return frozenset(ids)

    def _start_member(self, node: str) -> None:
        config = self._config
        name = f"azr-executor-{node[:8]}-{next(self._names)}"
        options: dict[str, Any] = {
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False),
            "num_cpus": config.num_cpus_per_actor,
            # Chunks run side by side (the sandbox queues them on its S slots); +2 keeps
            # stats()/ready() answerable while the actor is saturated.
            "max_concurrency": config.max_chunks_in_flight + 2,
            "max_restarts": 0,
        }
        if config.resource is not None:
            options["resources"] = {config.resource: _RESOURCE_MARK}
        handle = ExecutorActor.options(**options).remote(config, name, node, **self._actor_kwargs)
        member = Member(name, node, handle, started_at=time.monotonic())
        self.members.append(member)
        self._starting[handle.ready.remote()] = member
        self._counters["actors_started"] += 1

    def _start_failed(self, member: Member, exc: BaseException) -> None:
        node = member.node_id
        self._counters["start_failures"] += 1
        self._start_failures[node] += 1
        self.last_error = f"{member.name} on node {node[:8]}: {short_error(exc)}"
        logger.warning("executor pool: actor failed to start: %s", self.last_error)
        if self._start_failures[node] >= MAX_START_FAILURES and node not in self._given_up:
            logger.error(
                "executor pool: giving up on node %s after %d failed starts",
                node[:8],
                MAX_START_FAILURES,
            )
            self._given_up.add(node)
        if member.state != "dead":
            member.state = "dead"
            self._next_refresh = 0.0
            kill_actor(member.handle)


def kill_actor(handle: ActorHandle) -> None:
    with contextlib.suppress(Exception):  # already dead, or Ray is going down
        ray.kill(handle, no_restart=True)


def short_error(exc: BaseException, limit: int = 600) -> str:
    """The gist of an exception in bounded size.

    Ray wraps remote failures in a traceback whose *last* line holds the real error
    (``SandboxError: image ... not found``), so a long text keeps its first line and its tail.
    """
    text = f"{type(exc).__name__}: {exc}".strip()
    if len(text) <= limit:
        return text
    lines = [line for line in text.splitlines() if line.strip()]
    head = lines[0][: limit // 3]
    tail = lines[-1][-(limit - len(head) - 7) :]
    return f"{head} ... {tail}"
