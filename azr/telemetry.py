"""Driver-side metrics: self-play health, policy version, staleness, phase timings, eval.

Recorded with ``ray.util.metrics`` (exported by Ray's per-node metrics agent to Prometheus);
every name starts with ``azr_``. Actor-side metrics (executor, buffer, rollout, learner) are
recorded by the actors themselves.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge

from azr.selfplay import StepOutput
from azr.step_metrics import proposal_outcome


class StepTelemetry:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self.proposals = Counter(
            "azr_proposals_total",
            description="Proposals by task type and outcome (valid, invalid:<reason>, format_error:<reason>).",
            tag_keys=("task_type", "outcome", "reason"),
        )
        self.solve_accuracy = Gauge(
            "azr_solve_accuracy",
            description="Mean solve accuracy of the step's solve batch.",
            tag_keys=("task_type",),
        )
        self.valid_rate = Gauge(
            "azr_valid_proposal_rate",
            description="Share of proposals that validated.",
            tag_keys=("task_type",),
        )
        self.learnability = Gauge(
            "azr_learnability",
            description="Mean learnability (r_propose) of valid proposals.",
            tag_keys=("task_type",),
        )
        self.reward = Gauge(
            "azr_reward_mean",
            description="Mean reward per task type and role.",
            tag_keys=("task_type", "role"),
        )
        self.version = Gauge(
            "azr_policy_version", description="Policy version of the rollout weights."
        )
        self.step = Gauge("azr_step", description="Last completed self-play step.")
        self.staleness = Gauge(
            "azr_sample_staleness_max",
            description="Largest policy-version lag of a trained sample.",
        )
        self.dropped = Counter(
            "azr_samples_dropped_stale_total", description="Samples dropped as too stale."
        )
        self.phase = Gauge(
            "azr_step_phase_seconds",
            description="Seconds spent per step phase.",
            tag_keys=("phase",),
        )
        self.step_seconds = Gauge(
            "azr_step_seconds", description="Wall-clock seconds of the last step."
        )
        self.idle = Gauge(
            "azr_learner_idle_fraction", description="Share of wall time the learner was idle."
        )
        self.eval = Gauge(
            "azr_eval_accuracy", description="Greedy CRUXEval accuracy.", tag_keys=("benchmark",)
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
            elif len(parts) == 3 and parts[2] == "reward":
                self.reward.set(value, {"task_type": parts[0], "role": parts[1]})
            elif parts[0] == "time" and len(parts) == 2:
                self.phase.set(value, {"phase": parts[1]})
            elif parts[0] == "eval" and not key.endswith("format_ok"):
                self.eval.set(value, {"benchmark": parts[1]})
        self.version.set(record["policy_version"])
        self.step.set(record["step"])
        self.step_seconds.set(record["step_seconds"])
        self.idle.set(record["learner_idle_fraction"])
        if "learner_result/staleness_max" in record:
            self.staleness.set(record["learner_result/staleness_max"])
        dropped = record.get("learner_result/dropped_stale", 0.0)
        if dropped:
            self.dropped.inc(dropped)
