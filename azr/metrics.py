"""The one way azr declares metrics: ``MetricFactory(backend, **default_tags).counter(...)``.

Every component's ``metrics.py`` and the driver's telemetry build their series through a
`MetricFactory` on ``ray.util.metrics`` (exported by Ray's per-node metrics agent to
Prometheus, where the names gain the ``ray_`` prefix). Names start with ``azr_``; each metric
gets the factory's default tags that it declares as tag keys. azr itself imports no backend:
the caller passes it in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class MetricFactory:
    """Counters, gauges and histograms on ``backend`` with this component's default tags."""

    def __init__(self, backend: Any, **default_tags: str) -> None:
        self.backend = backend
        self.default_tags = default_tags

    def counter(self, name: str, description: str, tag_keys: Sequence[str] = ()) -> Any:
        """A monotonically increasing count (rate() on the dashboard)."""
        return self._build(self.backend.Counter, name, description, tag_keys)

    def gauge(self, name: str, description: str, tag_keys: Sequence[str] = ()) -> Any:
        """A value that goes up and down (the last one set is exported)."""
        return self._build(self.backend.Gauge, name, description, tag_keys)

    def histogram(
        self,
        name: str,
        description: str,
        boundaries: Sequence[float],
        tag_keys: Sequence[str] = (),
    ) -> Any:
        """A distribution in buckets with these upper ``boundaries`` (quantiles on the dashboard)."""
        return self._build(
            self.backend.Histogram, name, description, tag_keys, boundaries=list(boundaries)
        )

    def _build(
        self, kind: Any, name: str, description: str, tag_keys: Sequence[str], **extra: Any
    ) -> Any:
        if not name.startswith("azr_"):
            raise ValueError(f"metric {name!r}: azr's metric names start with 'azr_'")
        metric = kind(name, description=description, tag_keys=tuple(tag_keys), **extra)
        defaults = {k: v for k, v in self.default_tags.items() if k in tag_keys}
        if defaults:
            metric.set_default_tags(defaults)
        return metric
