"""Prometheus metrics of the learner (ray.util.metrics, exported by Ray's metrics agent)."""

from __future__ import annotations

from ray.util import metrics

from azr.metrics import MetricFactory

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
        make = MetricFactory(metrics, rank=str(rank))
        rank_tag = ("rank",)
        self.gauges = {
            key: make.gauge(f"azr_learner_{key}", desc, rank_tag)
            for key, desc in _STEP_GAUGES.items()
        }
        self.step_seconds = make.histogram(
            "azr_learner_step_seconds",
            "Wall time of one learner optimizer step",
            [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
            rank_tag,
        )
        self.sync_seconds = make.histogram(
            "azr_weight_sync_seconds",
            "Wall time of one weight sync (gather, buckets, rollout load)",
            [0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60],
            rank_tag,
        )
        self.sync_bytes = make.counter(
            "azr_weight_sync_bytes", "Bytes of weights sent to the rollout actors", rank_tag
        )

    def record_step(self, values: dict[str, float]) -> None:
        for key, gauge in self.gauges.items():
            gauge.set(values[key])
        self.step_seconds.observe(values["seconds"])

    def record_sync(self, seconds: float, num_bytes: int) -> None:
        self.sync_seconds.observe(seconds)
        if num_bytes:
            self.sync_bytes.inc(num_bytes)
