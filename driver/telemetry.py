"""Driver-side metrics: self-play health, policy version, staleness, phase timings, eval, the
prompt budget's events and the weight-sync check.

Recorded with ``ray.util.metrics`` (exported by Ray's per-node metrics agent to Prometheus);
every name starts with ``azr_``. Actor-side metrics (executor, buffer, rollout, learner) are
recorded by the actors themselves.
"""

from __future__ import annotations

from ray.util import metrics

from azr.metrics import MetricFactory
from azr.step_metrics import proposal_outcome
from azr.step_types import StepOutput


class StepTelemetry:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        make = MetricFactory(metrics)
        task = ("task_type",)
        self.proposals = make.counter(
            "azr_proposals_total",
            "Proposals by task type and outcome (valid, invalid:<reason>, format_error:<reason>).",
            ("task_type", "outcome", "reason"),
        )
        self.solve_accuracy = make.gauge(
            "azr_solve_accuracy", "Mean solve accuracy of the step's solve batch.", task
        )
        self.valid_rate = make.gauge(
            "azr_valid_proposal_rate", "Share of proposals that validated.", task
        )
        self.learnability = make.gauge(
            "azr_learnability", "Mean learnability (r_propose) of valid proposals.", task
        )
        self.comment_before_code = make.gauge(
            "azr_proposal_comment_before_code_rate",
            "Share of valid proposals whose program has a comment line before code.",
            task,
        )
        self.comment_lines = make.gauge(
            "azr_proposal_comment_lines",
            "Comment lines per program of the step's valid proposals.",
            task,
        )
        self.reward = make.gauge(
            "azr_reward_mean", "Mean reward per task type and role.", ("task_type", "role")
        )
        self.version = make.gauge("azr_policy_version", "Policy version of the rollout weights.")
        self.step = make.gauge("azr_step", "Last completed self-play step.")
        self.staleness = make.gauge(
            "azr_sample_staleness_max", "Largest policy-version lag of a trained sample."
        )
        self.dropped = make.counter(
            "azr_samples_dropped_stale_total", "Samples dropped as too stale."
        )
        self.phase = make.gauge(
            "azr_step_phase_seconds", "Seconds spent per step phase.", ("phase",)
        )
        self.step_seconds = make.gauge("azr_step_seconds", "Wall-clock seconds of the last step.")
        self.idle = make.gauge(
            "azr_learner_idle_fraction", "Share of wall time the learner was idle."
        )
        self.eval = make.gauge(
            "azr_eval_accuracy", "pass@1 of the periodic evaluation per benchmark.", ("benchmark",)
        )
        self.budget = make.counter(
            "azr_prompt_budget_events_total",
            "Prompt-budget events: references dropped, induction sources drawn again, buffer "
            "tasks skipped, proposals rejected as prompt_too_long.",
            ("task_type", "event"),
        )
        self.sync_check = make.gauge(
            "azr_weight_sync_probe_logprob_diff",
            "Weight-sync check: |rollout - learner| logprob per probe token (mean, max).",
            ("stat",),
        )

    def publish(self, record: dict, output: StepOutput) -> None:
        if not self.enabled:
            return
        for proposal in output.proposals:
            outcome, _, reason = proposal_outcome(proposal).partition(":")
            self.proposals.inc(
                1, {"task_type": str(proposal.task), "outcome": outcome, "reason": reason or "none"}
            )
        for key, value in record.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[1:] == ["solve", "accuracy"]:
                self.solve_accuracy.set(value, {"task_type": parts[0]})
            elif len(parts) == 3 and parts[1:] == ["propose", "valid_rate"]:
                self.valid_rate.set(value, {"task_type": parts[0]})
            elif len(parts) == 3 and parts[1:] == ["propose", "learnability"]:
                self.learnability.set(value, {"task_type": parts[0]})
            elif len(parts) == 3 and parts[1:] == ["propose", "comment_before_code"]:
                self.comment_before_code.set(value, {"task_type": parts[0]})
            elif len(parts) == 3 and parts[1:] == ["propose", "comment_lines"]:
                self.comment_lines.set(value, {"task_type": parts[0]})
            elif len(parts) == 3 and parts[2] == "reward":
                self.reward.set(value, {"task_type": parts[0], "role": parts[1]})
            elif parts[0] == "time" and len(parts) == 2:
                self.phase.set(value, {"phase": parts[1]})
            elif parts[0] == "eval" and not key.endswith("format_ok"):
                self.eval.set(value, {"benchmark": parts[1]})
            elif len(parts) == 3 and parts[1] == "budget" and value > 0:
                self.budget.inc(value, {"task_type": parts[0], "event": parts[2]})
            elif key in ("sync/verify_mean_abs", "sync/verify_max_abs"):
                stat = key.removeprefix("sync/verify_").removesuffix("_abs")
                self.sync_check.set(value, {"stat": stat})
        self.version.set(record["policy_version"])
        self.step.set(record["step"])
        self.step_seconds.set(record["step_seconds"])
        self.idle.set(record["learner_idle_fraction"])
        if "learner_result/staleness_max" in record:
            self.staleness.set(record["learner_result/staleness_max"])
        dropped = record.get("learner_result/dropped_stale", 0.0)
        if dropped:
            self.dropped.inc(dropped)
