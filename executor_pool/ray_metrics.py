"""Prometheus metrics of the executor pool, recorded with ``ray.util.metrics``.

Ray's per-node metrics agent exports them; every name starts with ``azr_executor``.
Actor metrics carry the tags ``actor`` and ``node``; pool metrics come from the driver.
"""

from __future__ import annotations

from collections.abc import Mapping

from ray.util import metrics

from azr.metrics import MetricFactory

_LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]

# SandboxExecutor.stats() counters that become Prometheus counters, by the metric they feed.
STAT_COUNTERS = {
    "runs": (
        "azr_executor_runs_total",
        "Sandbox runs (one per validation or executed answer; static rejections excluded).",
    ),
    "timeouts": ("azr_executor_timeouts_total", "Program runs stopped by the wall-clock limit."),
    "memory_kills": ("azr_executor_memory_kills_total", "Program runs killed by the memory limit."),
    "sandbox_restarts": (
        "azr_executor_sandbox_restarts_total",
        "Sandboxes (fork-server/container) restarted.",
    ),
}


class ActorMetrics:
    """Metrics of one ExecutorActor (tags: actor name, node id)."""

    def __init__(self, actor: str, node: str):
        make = MetricFactory(metrics, actor=actor, node=node)
        keys = ("actor", "node")
        self.requests = make.counter(
            "azr_executor_requests_total",
            "Requests (validations and scorings) finished by the executor.",
            (*keys, "kind"),
        )
        self.latency = make.histogram(
            "azr_executor_latency_seconds",
            "Seconds from a request reaching the executor actor to its result, per request.",
            _LATENCY_BOUNDARIES,
            (*keys, "kind"),
        )
        self.queue_depth = make.gauge(
            "azr_executor_queue_depth",
            "Requests inside the executor actor waiting for a free sandbox slot.",
            keys,
        )
        self.in_flight = make.gauge(
            "azr_executor_in_flight",
            "Requests running in the executor actor's sandbox slots.",
            keys,
        )
        self.stat_counters = {
            stat: make.counter(name, text, keys) for stat, (name, text) in STAT_COUNTERS.items()
        }

    def record_call(self, kind: str, requests: int, seconds: float) -> None:
        self.requests.inc(requests, {"kind": kind})
        # Each request of a chunk waits for the whole chunk, so every request saw `seconds`.
        for _ in range(requests):
            self.latency.observe(seconds, {"kind": kind})

    def record_load(self, requests_inside: int, slots: int) -> None:
        self.in_flight.set(min(requests_inside, slots))
        self.queue_depth.set(max(0, requests_inside - slots))

    def record_stat_deltas(self, deltas: Mapping[str, int]) -> None:
        for stat, delta in deltas.items():
            if delta > 0 and stat in self.stat_counters:
                self.stat_counters[stat].inc(delta)


class PoolMetrics:
    """Driver-side metrics of the ExecutorPool."""

    def __init__(self) -> None:
        make = MetricFactory(metrics)
        self.queue_depth = make.gauge(
            "azr_executor_pool_queue_depth",
            "Requests queued in the pool waiting for an executor actor (backpressure).",
        )
        self.in_flight = make.gauge(
            "azr_executor_pool_in_flight", "Requests sent to executor actors and not yet answered."
        )
        self.actors = make.gauge(
            "azr_executor_pool_actors", "Ready executor actors per node.", ("node",)
        )
        self.retries = make.counter(
            "azr_executor_pool_retries_total",
            "Chunks re-run after their executor actor or sandbox failed.",
        )
        self._last: tuple[int, int, tuple[tuple[str, int], ...]] | None = None
        self._nodes_seen: set[str] = set()

    def publish(self, queued: int, in_flight: int, ready_per_node: Mapping[str, int]) -> None:
        current = (queued, in_flight, tuple(sorted(ready_per_node.items())))
        if current == self._last:  # the loop runs every few ms; only changes are worth a call
            return
        self._last = current
        self.queue_depth.set(queued)
        self.in_flight.set(in_flight)
        for node in self._nodes_seen - set(ready_per_node):  # a node that left has none
            self.actors.set(0, {"node": node})
        self._nodes_seen = set(ready_per_node)
        for node, count in ready_per_node.items():
            self.actors.set(count, {"node": node})
