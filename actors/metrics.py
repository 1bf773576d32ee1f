"""Rollout metrics (ray.util.metrics, exported by Ray's per-node agent), tagged actor/node."""

from __future__ import annotations

import logging

from ray.util import metrics

from azr.metrics import MetricFactory

log = logging.getLogger(__name__)

_TAGS = ("actor", "node")


class RolloutMetrics:
    """The azr_rollout_* series of one RolloutActor."""

    def __init__(self, actor: str, node: str) -> None:
        make = MetricFactory(metrics, actor=actor, node=node)
        self.generated_tokens = make.counter(
            "azr_rollout_generated_tokens", "Tokens generated (rate = rollout tokens/s).", _TAGS
        )
        self.prompt_tokens = make.counter(
            "azr_rollout_prompt_tokens", "Prompt tokens processed.", _TAGS
        )
        self.prompts_too_long = make.counter(
            "azr_rollout_prompts_too_long",
            "Prompts the engine could not take (at or over max_model_len): empty completions.",
            _TAGS,
        )
        self.requests_in_flight = make.gauge(
            "azr_rollout_requests_in_flight",
            "Prompts submitted to the engine and not yet finished.",
            _TAGS,
        )
        self.generate_seconds = make.histogram(
            "azr_rollout_generate_seconds",
            "Latency of one generate() call (a whole batch).",
            [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
            _TAGS,
        )
        self.weight_update_seconds = make.histogram(
            "azr_rollout_weight_update_seconds",
            "Time to load one full weight update in place.",
            [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60],
            _TAGS,
        )
        self.policy_version = make.gauge(
            "azr_rollout_policy_version", "Weight version the engine serves.", _TAGS
        )


class EngineStats:
    """Engine internals from vLLM's scheduler stats, as azr_rollout_engine_* Ray metrics.

    vLLM ships a Ray stat logger (``vllm.v1.metrics.ray_wrappers.RayPrometheusStatLogger``), but
    it imports ``ray.serve``, which needs the ``ray[serve]`` extra this project does not install;
    this small logger records the figures the dashboard needs instead.
    """

    def __init__(self, tags: dict[str, str]) -> None:
        make = MetricFactory(metrics, **tags)
        self.running = make.gauge(
            "azr_rollout_engine_running", "Requests the engine is running.", _TAGS
        )
        self.waiting = make.gauge(
            "azr_rollout_engine_waiting", "Requests queued in the engine.", _TAGS
        )
        self.kv_usage = make.gauge(
            "azr_rollout_engine_kv_cache_usage", "KV-cache fraction in use.", _TAGS
        )
        self.prefix_hits = make.counter(
            "azr_rollout_engine_prefix_cache_hit_tokens",
            "Prompt tokens served from the prefix cache.",
            _TAGS,
        )

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
