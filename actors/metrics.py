"""Rollout metrics (ray.util.metrics, exported by Ray's per-node agent), tagged actor/node."""

from __future__ import annotations

import logging

from ray.util import metrics

log = logging.getLogger(__name__)

_TAGS = ("actor", "node")


class RolloutMetrics:
    """The azr_rollout_* series of one RolloutActor."""

    def __init__(self, actor: str, node: str) -> None:
        tags = {"actor": actor, "node": node}
        self.generated_tokens = metrics.Counter(
            "azr_rollout_generated_tokens",
            description="Tokens generated (rate = rollout tokens/s).",
            tag_keys=_TAGS,
        )
        self.prompt_tokens = metrics.Counter(
            "azr_rollout_prompt_tokens", description="Prompt tokens processed.", tag_keys=_TAGS
        )
        self.requests_in_flight = metrics.Gauge(
            "azr_rollout_requests_in_flight",
            description="Prompts submitted to the engine and not yet finished.",
            tag_keys=_TAGS,
        )
        self.generate_seconds = metrics.Histogram(
            "azr_rollout_generate_seconds",
            description="Latency of one generate() call (a whole batch).",
            boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
            tag_keys=_TAGS,
        )
        self.weight_update_seconds = metrics.Histogram(
            "azr_rollout_weight_update_seconds",
            description="Time to load one full weight update in place.",
            boundaries=[0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60],
            tag_keys=_TAGS,
        )
        self.policy_version = metrics.Gauge(
            "azr_rollout_policy_version",
            description="Weight version the engine serves.",
            tag_keys=_TAGS,
        )
        for metric in (
            self.generated_tokens,
            self.prompt_tokens,
            self.requests_in_flight,
            self.generate_seconds,
            self.weight_update_seconds,
            self.policy_version,
        ):
            metric.set_default_tags(tags)


def attach_vllm_ray_stat_logger(llm) -> bool:
    """Route vLLM's own engine stats (KV usage, queue, TTFT ...) to Ray metrics (``vllm_*``).

    `LLM(...)` takes no stat-logger argument, so the in-process engine's logger manager is
    replaced by one holding vLLM's RayPrometheusStatLogger. Returns False (and logs why) when
    this vLLM version does not allow it; generation is unaffected either way.
    """
    try:
        from vllm.v1.metrics.loggers import StatLoggerManager
        from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

        engine = llm.llm_engine
        if not engine.log_stats:
            return False
        engine.logger_manager = StatLoggerManager(
            vllm_config=engine.vllm_config,
            custom_stat_loggers=[RayPrometheusStatLogger],
            enable_default_loggers=False,
        )
        return True
    except Exception as exc:  # vLLM internals moved: keep generating, report it
        log.warning("vLLM Ray stat logger not attached: %s", exc)
        return False
