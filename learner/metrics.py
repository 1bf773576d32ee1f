"""Prometheus metrics of the learner (ray.util.metrics, exported by Ray's metrics agent)."""

from __future__ import annotations

from ray.util import metrics

_STEP_GAUGES = {
    "loss": "Policy loss (this rank's share of the global token-mean)",
    "grad_norm": "Global gradient norm before clipping",
    "entropy": "Policy entropy on response tokens (this rank's share of the token-mean)",
    "clip_fraction": "Share of tokens whose ratio clip was active (this rank's share)",
    "mismatch_kl": "k3 KL between rollout and learner logprobs of the same tokens (rank share)",
}


class LearnerMetrics:
    """Per-rank learner gauges and the step-time histogram, tagged ``rank``."""

    def __init__(self, rank: int) -> None:
        self.tags = {"rank": str(rank)}
        self.gauges = {
            key: metrics.Gauge(f"azr_learner_{key}", description=desc, tag_keys=("rank",))
            for key, desc in _STEP_GAUGES.items()
        }
        self.step_seconds = metrics.Histogram(
            "azr_learner_step_seconds",
            description="Wall time of one learner optimizer step",
            boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
            tag_keys=("rank",),
        )
        self.sync_seconds = metrics.Histogram(
            "azr_weight_sync_seconds",
            description="Wall time of one weight sync (gather, buckets, rollout load)",
            boundaries=[0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60],
            tag_keys=("rank",),
        )
        self.sync_bytes = metrics.Counter(
            "azr_weight_sync_bytes",
            description="Bytes of weights sent to the rollout actors",
            tag_keys=("rank",),
        )

    def record_step(self, values: dict[str, float]) -> None:
        for key, gauge in self.gauges.items():
            gauge.set(values[key], tags=self.tags)
        self.step_seconds.observe(values["seconds"], tags=self.tags)

    def record_sync(self, seconds: float, num_bytes: int) -> None:
        self.sync_seconds.observe(seconds, tags=self.tags)
        if num_bytes:
            self.sync_bytes.inc(num_bytes, tags=self.tags)
