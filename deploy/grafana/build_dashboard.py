"""Generate the azr Grafana dashboard (deploy/grafana/dashboards/azr.json).

    python deploy/grafana/build_dashboard.py          # rewrite azr.json
    python deploy/grafana/build_dashboard.py --check  # exit 1 if azr.json is out of date

The panels are written against the metrics the code records with ``ray.util.metrics``
(``METRICS`` below names each one as the code does). Ray's metrics agent exports a metric
``azr_x`` as ``ray_azr_x``; a counter gets ``_total`` appended unless its name already ends
with it; a histogram becomes ``_bucket``/``_sum``/``_count``. tests/test_deploy_config.py checks
every metric here against the code, tests/test_observability.py every query against a real
Prometheus scraping a real run.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DATASOURCE = {"type": "prometheus", "uid": "azr-prometheus"}
"""The datasource every panel uses; provisioning/datasources/azr.yaml creates it with this uid."""
DASHBOARD_UID = "azr-selfplay"
OUTPUT = Path(__file__).resolve().parent / "dashboards" / "azr.json"
RATE = "$__rate_interval"
"""Grafana's rate window (at least 4 scrape intervals); the observability test substitutes it."""

GAUGE_LOOKBACK = "30m"
"""How long a gauge shows its last value. Ray's metrics agent exports a gauge only for a couple
of report intervals after it was set, and most of ours are set once per step (minutes apart at
paper scale): without the lookback those panels would be blank between steps."""

MetricKind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Metric:
    """One metric as the code records it (``name`` without Ray's ``ray_`` prefix)."""

    name: str
    kind: MetricKind
    event: bool = False
    """A counter that exists only after its first event (a timeout, an eviction ...): Ray's
    Counter cannot be created at zero, so its panels fall back to ``vector(0)`` until then."""

    @property
    def series(self) -> str:
        """The Prometheus series name (histograms: the base of _bucket/_sum/_count)."""
        if self.kind == "counter" and not self.name.endswith("_total"):
            return f"ray_{self.name}_total"
        return f"ray_{self.name}"


def _m(name: str, kind: MetricKind, event: bool = False) -> Metric:
    return Metric(name, kind, event)


# Every metric the dashboard reads, by the module that records it.
METRICS = {
    m.name: m
    for m in [
        # driver/telemetry.py
        _m("azr_proposals_total", "counter"),
        _m("azr_solve_accuracy", "gauge"),
        _m("azr_valid_proposal_rate", "gauge"),
        _m("azr_learnability", "gauge"),
        _m("azr_reward_mean", "gauge"),
        _m("azr_proposal_comment_before_code_rate", "gauge"),
        _m("azr_proposal_comment_lines", "gauge"),
        _m("azr_policy_version", "gauge"),
        _m("azr_step", "gauge"),
        _m("azr_sample_staleness_max", "gauge"),
        _m("azr_samples_dropped_stale_total", "counter", event=True),
        _m("azr_step_phase_seconds", "gauge"),
        _m("azr_step_seconds", "gauge"),
        _m("azr_learner_idle_fraction", "gauge"),
        _m("azr_eval_accuracy", "gauge"),
        _m("azr_prompt_budget_events_total", "counter", event=True),
        _m("azr_weight_sync_probe_logprob_diff", "gauge"),
        # executor_pool/ray_metrics.py
        _m("azr_executor_runs_total", "counter"),
        _m("azr_executor_requests_total", "counter"),
        _m("azr_executor_latency_seconds", "histogram"),
        _m("azr_executor_queue_depth", "gauge"),
        _m("azr_executor_in_flight", "gauge"),
        _m("azr_executor_timeouts_total", "counter", event=True),
        _m("azr_executor_memory_kills_total", "counter", event=True),
        _m("azr_executor_sandbox_restarts_total", "counter", event=True),
        _m("azr_executor_pool_queue_depth", "gauge"),
        _m("azr_executor_pool_in_flight", "gauge"),
        _m("azr_executor_pool_actors", "gauge"),
        _m("azr_executor_pool_retries_total", "counter", event=True),
        # actors/metrics.py (rollout)
        _m("azr_rollout_generated_tokens", "counter"),
        _m("azr_rollout_prompt_tokens", "counter"),
        _m("azr_rollout_requests_in_flight", "gauge"),
        _m("azr_rollout_prompts_too_long", "counter", event=True),
        _m("azr_rollout_generate_seconds", "histogram"),
        _m("azr_rollout_policy_version", "gauge"),
        # actors/metrics.py EngineStats: vLLM's scheduler stats, from its stat-logger hook
        _m("azr_rollout_engine_running", "gauge"),
        _m("azr_rollout_engine_waiting", "gauge"),
        _m("azr_rollout_engine_kv_cache_usage", "gauge"),
        _m("azr_rollout_engine_prefix_cache_hit_tokens", "counter", event=True),
        # learner/metrics.py
        _m("azr_learner_loss", "gauge"),
        _m("azr_learner_grad_norm", "gauge"),
        _m("azr_learner_entropy", "gauge"),
        _m("azr_learner_clip_fraction", "gauge"),
        _m("azr_learner_mismatch_kl", "gauge"),
        _m("azr_learner_step_seconds", "histogram"),
        _m("azr_weight_sync_seconds", "histogram"),
        _m("azr_weight_sync_bytes", "counter"),
        # buffer_service/metrics.py
        _m("azr_buffer_size", "gauge"),
        _m("azr_buffer_adds", "counter"),
        _m("azr_buffer_dedup_hits", "counter", event=True),
        _m("azr_buffer_evictions", "counter", event=True),
        _m("azr_buffer_rejected", "counter", event=True),
        _m("azr_buffer_add_latency_s", "histogram"),
        _m("azr_buffer_sample_latency_s", "histogram"),
        _m("azr_buffer_store_damage", "counter", event=True),
    ]
}


def metric(name: str) -> Metric:
    return METRICS[name]


# --- query builders (each returns PromQL) --------------------------------------------------


def _by(labels: tuple[str, ...]) -> str:
    return f" by ({', '.join(labels)})" if labels else ""


def rate(name: str, *by: str) -> str:
    """Per-second rate of a counter, summed per `by` labels."""
    m = metric(name)
    assert m.kind == "counter", name
    query = f"sum{_by(by)} (rate({m.series}[{RATE}]))"
    return f"({query}) or vector(0)" if m.event else query


def increase(name: str, *by: str) -> str:
    """Increase of a counter over the dashboard's time range."""
    m = metric(name)
    assert m.kind == "counter", name
    query = f"sum{_by(by)} (increase({m.series}[$__range]))"
    return f"({query}) or vector(0)" if m.event else query


def gauge(name: str, agg: str = "max", *by: str) -> str:
    """The last value of a gauge within `GAUGE_LOOKBACK`, aggregated per `by` labels."""
    m = metric(name)
    assert m.kind == "gauge", name
    return f"{agg}{_by(by)} (last_over_time({m.series}[{GAUGE_LOOKBACK}]))"


def quantile(name: str, q: float, *by: str) -> str:
    m = metric(name)
    assert m.kind == "histogram", name
    return f"histogram_quantile({q}, sum{_by(('le', *by))} (rate({m.series}_bucket[{RATE}])))"


def hist_mean(name: str, *by: str) -> str:
    """Mean observation over the rate window: rate(sum) / rate(count)."""
    m = metric(name)
    assert m.kind == "histogram", name
    return (
        f"sum{_by(by)} (rate({m.series}_sum[{RATE}]))"
        f" / sum{_by(by)} (rate({m.series}_count[{RATE}]))"
    )


def hist_rate(name: str, *by: str) -> str:
    """Observations per second of a histogram."""
    m = metric(name)
    assert m.kind == "histogram", name
    return f"sum{_by(by)} (rate({m.series}_count[{RATE}]))"


# --- panels --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: Literal["timeseries", "stat"] = "timeseries"
    width: int = 8


def panel(title: str, description: str, *targets: Target, **options) -> Panel:
    return Panel(title, description, targets, **options)


def target(expr: str, legend: str = "") -> Target:
    return Target(expr, legend)


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Self-play health",
        [
            panel(
                "Policy version / step",
                "Weight version served to the rollout actors and the last completed step.",
                target(gauge("azr_policy_version"), "policy version"),
                target(gauge("azr_step"), "step"),
                kind="stat",
                width=4,
            ),
            panel(
                "Proposals / s by outcome",
                "valid, invalid (executor reason) or format_error (parser reason), per task type.",
                target(
                    rate("azr_proposals_total", "task_type", "outcome"), "{{task_type}} {{outcome}}"
                ),
                unit="ops",
                width=10,
            ),
            panel(
                "Proposals in range by reason",
                "Why proposals failed: the executor's or the parser's reason (none = valid).",
                target(
                    increase("azr_proposals_total", "outcome", "reason"),
                    "{{outcome}} {{reason}}",
                ),
                width=10,
            ),
            panel(
                "Valid proposal rate",
                "Share of the step's proposals that validated, per task type.",
                target(gauge("azr_valid_proposal_rate", "max", "task_type"), "{{task_type}}"),
                unit="percentunit",
            ),
            panel(
                "Solve accuracy",
                "Mean r_solve of the step's solve batch, per task type.",
                target(gauge("azr_solve_accuracy", "max", "task_type"), "{{task_type}}"),
                unit="percentunit",
            ),
            panel(
                "Learnability (r_propose)",
                "Mean 1 - s over valid proposals (0 when all or none of the n samples solve).",
                target(gauge("azr_learnability", "max", "task_type"), "{{task_type}}"),
            ),
            panel(
                "Mean reward",
                "Mean reward per task type and role, format penalties included.",
                target(
                    gauge("azr_reward_mean", "max", "task_type", "role"), "{{task_type}} {{role}}"
                ),
            ),
            panel(
                "CRUXEval accuracy",
                "Greedy CRUXEval-I (abduction) / -O (deduction) accuracy of the periodic check.",
                target(gauge("azr_eval_accuracy", "max", "benchmark"), "{{benchmark}}"),
                unit="percentunit",
            ),
            panel(
                "Step time by phase",
                "Seconds per phase of the last step, and the whole step.",
                target(gauge("azr_step_phase_seconds", "max", "phase"), "{{phase}}"),
                target(gauge("azr_step_seconds"), "step"),
                unit="s",
            ),
            panel(
                "Planning comments in valid proposals",
                "Share of valid programs with a comment line before code (the paper's comments "
                "that plan the code), and comment lines per program, per task type.",
                target(
                    gauge("azr_proposal_comment_before_code_rate", "max", "task_type"),
                    "{{task_type}} share",
                ),
                target(
                    gauge("azr_proposal_comment_lines", "max", "task_type"),
                    "{{task_type}} lines/program",
                ),
            ),
            panel(
                "Sample staleness",
                "Largest policy-version lag of a trained sample; samples dropped as too stale/s.",
                target(gauge("azr_sample_staleness_max"), "staleness max"),
                target(rate("azr_samples_dropped_stale_total"), "dropped/s"),
            ),
            panel(
                "Prompt budget in range",
                "Prompts kept within max_model_len - max_tokens: references dropped, induction "
                "sources drawn again, buffer tasks skipped, proposals rejected as "
                "prompt_too_long; prompts the engines still could not take (should stay 0).",
                target(
                    increase("azr_prompt_budget_events_total", "task_type", "event"),
                    "{{task_type}} {{event}}",
                ),
                target(increase("azr_rollout_prompts_too_long"), "engine: prompt too long"),
            ),
        ],
    ),
    (
        "Executor pool",
        [
            panel(
                "Program runs / s",
                "Sandboxed program runs per node (a validation runs 2 processes).",
                target(rate("azr_executor_runs_total", "node"), "{{node}}"),
                unit="ops",
            ),
            panel(
                "Requests / s",
                "Validations and scorings finished by the executor actors.",
                target(rate("azr_executor_requests_total", "kind"), "{{kind}}"),
                unit="reqps",
            ),
            panel(
                "Request latency",
                "Seconds from a request reaching an executor actor to its result.",
                target(quantile("azr_executor_latency_seconds", 0.5, "kind"), "p50 {{kind}}"),
                target(quantile("azr_executor_latency_seconds", 0.95, "kind"), "p95 {{kind}}"),
                unit="s",
            ),
            panel(
                "Timeouts, memory kills, restarts / s",
                "Runs stopped by the wall-clock or memory limit; sandboxes restarted; chunks retried.",
                target(rate("azr_executor_timeouts_total", "node"), "timeouts {{node}}"),
                target(rate("azr_executor_memory_kills_total", "node"), "memory kills {{node}}"),
                target(rate("azr_executor_sandbox_restarts_total", "node"), "restarts {{node}}"),
                target(rate("azr_executor_pool_retries_total"), "pool retries"),
                unit="ops",
            ),
            panel(
                "Queue depth",
                "Requests waiting in the pool (backpressure) and inside executor actors.",
                target(gauge("azr_executor_pool_queue_depth", "sum"), "pool queue"),
                target(gauge("azr_executor_queue_depth", "sum", "node"), "actors {{node}}"),
            ),
            panel(
                "In flight / executors",
                "Requests running in sandbox slots; ready executor actors per node.",
                target(gauge("azr_executor_pool_in_flight", "sum"), "pool in flight"),
                target(gauge("azr_executor_in_flight", "sum", "node"), "running {{node}}"),
                target(gauge("azr_executor_pool_actors", "max", "node"), "actors {{node}}"),
            ),
        ],
    ),
    (
        "Rollout",
        [
            panel(
                "Generated tokens / s",
                "Tokens generated per rollout actor.",
                target(rate("azr_rollout_generated_tokens", "actor"), "{{actor}}"),
                target(rate("azr_rollout_prompt_tokens", "actor"), "prompt {{actor}}"),
                unit="short",
            ),
            panel(
                "Requests in flight",
                "Prompts submitted to each engine and not yet finished.",
                target(gauge("azr_rollout_requests_in_flight", "sum", "actor"), "{{actor}}"),
            ),
            panel(
                "generate() latency",
                "Latency of one batched generate call.",
                target(quantile("azr_rollout_generate_seconds", 0.5), "p50"),
                target(quantile("azr_rollout_generate_seconds", 0.95), "p95"),
                unit="s",
            ),
            panel(
                "Engine KV cache usage",
                "vLLM's KV-cache fraction in use per engine (its scheduler stats).",
                target(gauge("azr_rollout_engine_kv_cache_usage", "max", "actor"), "{{actor}}"),
                unit="percentunit",
            ),
            panel(
                "Engine scheduler",
                "Requests running and waiting inside the vLLM engines; prefix-cache hit tokens/s.",
                target(gauge("azr_rollout_engine_running", "sum"), "running"),
                target(gauge("azr_rollout_engine_waiting", "sum"), "waiting"),
                target(rate("azr_rollout_engine_prefix_cache_hit_tokens"), "prefix hits/s"),
            ),
        ],
    ),
    (
        "Learner",
        [
            panel(
                "Learner step time",
                "Wall time of one optimizer step (all micro-batches).",
                target(hist_mean("azr_learner_step_seconds"), "mean"),
                target(quantile("azr_learner_step_seconds", 0.95), "p95"),
                target(gauge("azr_learner_idle_fraction"), "idle fraction"),
                unit="s",
            ),
            panel(
                "Loss",
                "Policy loss (token mean over the batch: the ranks' shares summed).",
                target(gauge("azr_learner_loss", "sum"), "loss"),
            ),
            panel(
                "Gradient norm",
                "Global gradient norm before clipping.",
                target(gauge("azr_learner_grad_norm", "max"), "grad norm"),
            ),
            panel(
                "Entropy",
                "Policy entropy on response tokens (token mean).",
                target(gauge("azr_learner_entropy", "sum"), "entropy"),
            ),
            panel(
                "Clip fraction",
                "Share of tokens whose importance-ratio clip was active.",
                target(gauge("azr_learner_clip_fraction", "sum"), "clip fraction"),
                unit="percentunit",
            ),
            panel(
                "Rollout/learner mismatch KL",
                "k3 KL between the rollout engine's and the learner's logprobs of the same tokens.",
                target(gauge("azr_learner_mismatch_kl", "sum"), "mismatch KL"),
            ),
        ],
    ),
    (
        "Weight sync",
        [
            panel(
                "Weight sync seconds",
                "One sync: gather, bucketed broadcast, rollout load.",
                target(hist_mean("azr_weight_sync_seconds"), "mean"),
                target(quantile("azr_weight_sync_seconds", 0.95), "p95"),
                unit="s",
            ),
            panel(
                "Weight sync throughput",
                "Bytes sent per second of sync time (GB/s while syncing).",
                target(
                    f"{rate('azr_weight_sync_bytes')} / "
                    f"sum (rate({metric('azr_weight_sync_seconds').series}_sum[{RATE}]))",
                    "bytes/s while syncing",
                ),
                unit="Bps",
            ),
            panel(
                "Sync check: probe logprob difference",
                "|rollout - learner| logprob per token of the fixed probe after a checked sync "
                "(mean is what learner.verify_sync_tolerance bounds; the run stops above it).",
                target(gauge("azr_weight_sync_probe_logprob_diff", "max", "stat"), "{{stat}}"),
            ),
            panel(
                "Versions",
                "Driver policy version against the version each rollout engine serves.",
                target(gauge("azr_policy_version"), "driver"),
                target(gauge("azr_rollout_policy_version", "max", "actor"), "{{actor}}"),
            ),
        ],
    ),
    (
        "Buffers",
        [
            panel(
                "Buffer size",
                "Tasks in each buffer (the curriculum).",
                target(gauge("azr_buffer_size", "max", "task"), "{{task}}"),
            ),
            panel(
                "Adds, dedup hits, evictions, rejections / s",
                "New tasks stored, exact duplicates skipped, oldest evicted, malformed rejected.",
                target(rate("azr_buffer_adds", "task"), "adds {{task}}"),
                target(rate("azr_buffer_dedup_hits", "task"), "dedup {{task}}"),
                target(rate("azr_buffer_evictions", "task"), "evicted {{task}}"),
                target(rate("azr_buffer_rejected", "task"), "rejected {{task}}"),
                unit="ops",
            ),
            panel(
                "Store damage found on open",
                "Damaged regions, torn tails and unusable records the durable store skipped.",
                target(increase("azr_buffer_store_damage", "kind"), "{{kind}}"),
            ),
            panel(
                "Buffer latency",
                "Seconds per add batch (fsync included) and per sampling call.",
                target(quantile("azr_buffer_add_latency_s", 0.95), "add p95"),
                target(
                    quantile("azr_buffer_sample_latency_s", 0.95, "kind"), "sample p95 {{kind}}"
                ),
                unit="s",
            ),
        ],
    ),
]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    height = 6 if panel.kind == "stat" else 8
    body: dict = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": dict(DATASOURCE),
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": height},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": dict(DATASOURCE),
                "expr": target.expr,
                "legendFormat": target.legend or "__auto",
                "range": True,
            }
            for i, target in enumerate(panel.targets)
        ],
    }
    if panel.kind == "timeseries":
        body["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    else:
        body["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}
        }
    return body


def build() -> dict:
    """The dashboard JSON model (Grafana schemaVersion 39)."""
    panels: list[dict] = []
    next_id = 1
    y = 0
    for title, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            body = _panel_json(panel, next_id, x, y)
            panels.append(body)
            next_id += 1
            x += panel.width
            row_height = max(row_height, body["gridPos"]["h"])
        y += row_height
    return {
        "uid": DASHBOARD_UID,
        "title": "AZR self-play",
        "description": "Absolute Zero self-play on Ray: generated by deploy/grafana/build_dashboard.py",
        "tags": ["azr", "ray"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "templating": {"list": []},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if azr.json is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT} ({sum(len(p.get('targets', [])) for p in build()['panels'])} queries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
