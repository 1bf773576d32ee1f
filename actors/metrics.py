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


class EngineStats:
    """Engine internals from vLLM's scheduler stats, as azr_rollout_engine_* Ray metrics.

    vLLM ships a Ray stat logger (``vllm.v1.metrics.ray_wrappers.RayPrometheusStatLogger``), but
    it imports ``ray.serve``, which needs the ``ray[serve]`` extra this project does not install;
    this small logger records the figures the dashboard needs instead.
    """

    def __init__(self, tags: dict[str, str]) -> None:
        def gauge(name: str, description: str) -> metrics.Gauge:
            metric = metrics.Gauge(name, description=description, tag_keys=_TAGS)
            metric.set_default_tags(tags)
            return metric

        self.running = gauge("azr_rollout_engine_running", "Requests the engine is running.")
        self.waiting = gauge("azr_rollout_engine_waiting", "Requests queued in the engine.")
        self.kv_usage = gauge("azr_rollout_engine_kv_cache_usage", "KV-cache fraction in use.")
        self.prefix_hits = metrics.Counter(
            "azr_rollout_engine_prefix_cache_hit_tokens",
            description="Prompt tokens served from the prefix cache.",
            tag_keys=_TAGS,
        )
        self.prefix_hits.set_default_tags(tags)

    def factory(self, vllm_config, engine_index: int = 0):
        """A vLLM StatLoggerFactory: builds the per-engine logger bound to these metrics."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        stats = self

        class _Logger(StatLoggerBase):
            def __init__(self, vllm_config, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
                if scheduler_stats is None:
                    return
                stats.running.set(scheduler_stats.num_running_reqs)
                stats.waiting.set(scheduler_stats.num_waiting_reqs)
                stats.kv_usage.set(scheduler_stats.kv_cache_usage)
                hits = getattr(scheduler_stats.prefix_cache_stats, "hits", 0)
                if hits:
                    stats.prefix_hits.inc(hits)

            def log_engine_initialized(self) -> None:
                pass

        return _Logger(vllm_config, engine_index)


def attach_engine_stats(llm, tags: dict[str, str]) -> bool:
    """Record the in-process engine's scheduler stats as azr_rollout_engine_* metrics.

    `LLM(...)` takes no stat-logger argument, so the engine's logger manager is replaced by one
    holding our logger. Returns False (and logs why) when this vLLM version does not allow it;
    generation is unaffected either way.
    """
    try:
        from vllm.v1.metrics.loggers import StatLoggerManager

        engine = llm.llm_engine
        if not engine.log_stats:
            return False
        engine.logger_manager = StatLoggerManager(
            vllm_config=engine.vllm_config,
            custom_stat_loggers=[EngineStats(tags).factory],
            enable_default_loggers=False,
        )
        return True
    except Exception as exc:  # vLLM internals moved: keep generating, report it
        log.warning("vLLM engine stats not attached: %s", exc)
        return False
