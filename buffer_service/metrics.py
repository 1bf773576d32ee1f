"""The buffer actor's Prometheus metrics (``ray.util.metrics``; names start with ``azr_buffer_``).

Besides recording, the class keeps running totals in plain Python so the actor can report
exactly what it exported (``totals()``), which is what the tests check.
"""

from __future__ import annotations

from collections import defaultdict

from ray.util import metrics

from azr.metrics import MetricFactory
from azr.tasks import TaskType
from buffer_service.record_log import DamageReport
from buffer_service.results import AddResult

_LATENCY_BOUNDS_S = [
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.5,
    1.0,
]


class BufferMetrics:
    """Buffer sizes, adds, dedup hits, rejections, evictions, latencies and store damage."""

    def __init__(self) -> None:
        make = MetricFactory(metrics)
        task = ("task",)
        self._size = make.gauge("azr_buffer_size", "Entries in the buffer", task)
        self._adds = make.counter("azr_buffer_adds", "Entries stored", task)
        self._dedup = make.counter(
            "azr_buffer_dedup_hits", "Entries skipped as exact duplicates", task
        )
        self._rejected = make.counter(
            "azr_buffer_rejected", "Malformed entries rejected", ("task", "reason")
        )
        self._evictions = make.counter(
            "azr_buffer_evictions", "Oldest entries evicted by the size cap", task
        )
        self._add_latency = make.histogram(
            "azr_buffer_add_latency_s",
            "Seconds per add_many batch, fsync included",
            _LATENCY_BOUNDS_S,
            task,
        )
        self._sample_latency = make.histogram(
            "azr_buffer_sample_latency_s",
            "Seconds per sampling call inside the actor",
            _LATENCY_BOUNDS_S,
            ("task", "kind"),
        )
        self._damage = make.counter(
            "azr_buffer_store_damage",
            "Damage found when opening the store (damaged regions, torn tails, unusable records)",
            ("kind",),
        )
        self._totals: dict[str, float] = defaultdict(float)

    def _count(
        self, metric: metrics.Counter, name: str, value: float, tags: dict[str, str]
    ) -> None:
        if value > 0:  # ray's Counter.inc rejects 0
            metric.inc(value, tags=tags)
            self._totals[name + ":" + ":".join(tags.values())] += value

    def record_add(self, task: TaskType, result: AddResult, size: int, seconds: float) -> None:
        """One add_many call (a replayed result counts nothing again)."""
        tags = {"task": task.value}
        self._add_latency.observe(seconds, tags=tags)
        self.record_size(task, size)
        if result.replayed:
            return
        self._count(self._adds, "adds", result.added, tags)
        self._count(self._dedup, "dedup_hits", len(result.duplicates), tags)
        self._count(self._evictions, "evictions", result.evicted, tags)
        for _, reason in result.rejected:
            self._count(self._rejected, "rejected", 1, {"task": task.value, "reason": reason})

    def record_size(self, task: TaskType, size: int) -> None:
        """Current size of one buffer."""
        self._size.set(size, tags={"task": task.value})
        self._totals[f"size:{task.value}"] = size

    def record_sample(self, task: TaskType, kind: str, seconds: float) -> None:
        """One sampling call (``kind``: references or tasks)."""
        self._sample_latency.observe(seconds, tags={"task": task.value, "kind": kind})
        self._totals[f"samples:{task.value}:{kind}"] += 1

    def record_recovery(self, report: DamageReport) -> None:
        """What opening the store found (nothing is recorded for an intact store)."""
        self._count(self._damage, "damage", len(report.damaged_regions), {"kind": "region"})
        self._count(self._damage, "damage", int(report.torn_tail_bytes > 0), {"kind": "torn_tail"})
        self._count(self._damage, "damage", len(report.invalid_records), {"kind": "invalid"})

    def totals(self) -> dict[str, float]:
        """Everything recorded so far, keyed ``name:tag values`` (sizes are current values)."""
        return dict(self._totals)
