"""The selfplay section: the AZR step, its schedule and its periodic evaluation.

Also `EVAL_BENCHMARKS`, the benchmarks known by name; the removed ``selfplay.solve_weight``
still loads at its old default 1.0 (with a warning) and fails at any other value.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from azr.config.section import Section

log = logging.getLogger(__name__)

EVAL_BENCHMARKS = (
    "cruxeval-o", "cruxeval-i", "humaneval",
    "probe", "probe/deduction", "probe/abduction", "probe/induction",
)  # fmt: skip
"""The benchmarks `azr eval` knows by name (files: code:FILE.jsonl, math:FILE.jsonl)."""


class SelfPlayConfig(Section):
    """The AZR step: proposals, Monte-Carlo estimation, solving."""

    @model_validator(mode="before")
    @classmethod
    def _solve_weight_removed(cls, data: Any) -> Any:
        """``selfplay.solve_weight`` (λ in r_propose + λ · r_solve) is gone: advantages are
        normalised per (task type, role) group, so a positive factor on the solve rewards
        cancels and 0 made every solver advantage 0. 1.0 (the old default) still loads."""
        if not isinstance(data, dict) or "solve_weight" not in data:
            return data
        data = dict(data)
        value = data.pop("solve_weight")
        if value not in (1, 1.0):
            raise ValueError(
                f"solve_weight={value!r}: the setting was removed. TRR++ normalises rewards "
                "per (task type, role) group, so a factor on the solve rewards has no effect "
                "(and 0 stopped the solver learning); delete the key"
            )
        log.warning("selfplay.solve_weight has no effect and was removed: delete the key")
        return data

    steps: int = Field(100, ge=0)
    """Self-play steps to run."""
    batch_size: int = Field(64, ge=1)
    """B: samples per (task type × role) per step."""
    num_references: int = Field(6, ge=0)
    """K: reference triplets shown to deduction/abduction proposers."""
    induction_inputs: int = Field(10, ge=2)
    """N: inputs an induction proposer writes; half are shown, half are hidden tests."""
    mc_samples: int = Field(8, ge=2)
    """n: Monte-Carlo solver samples per valid proposal (learnability estimate)."""
    learnability_rule: Literal["paper", "reference"] = "paper"
    """paper: r_propose = 0 at solve rate 0 or 1; reference: −0.5 there (the reference code's variant)."""
    induction_scoring: Literal["binary", "fraction"] = "binary"
    """binary: 1 only if every hidden pair passes; fraction: the share of hidden pairs passed."""
    task_types: list[Literal["deduction", "abduction", "induction"]] = Field(
        default_factory=lambda: ["deduction", "abduction", "induction"]
    )
    """Task types trained (ablations drop one)."""
    mode: Literal["sync", "async"] = "sync"
    """sync = the paper's algorithm; async overlaps generation of step t+1 with the update of step t."""
    max_staleness: int = Field(1, ge=0)
    """η: in async mode, samples more than η policy versions old are not admitted."""
    eval_every: int = Field(10, ge=0)
    """Run the periodic evaluation every this many steps, and once at step 0 before any update
    (0 = never): pass@1 with the `rollout.eval` sampling on `eval_benchmarks`, by the same code
    as `azr eval`; its figures go to metrics.jsonl (`eval/<benchmark>`) and its files to
    `<run dir>/eval/step_<N>/`."""
    eval_size: int | None = Field(64, ge=1)
    """Problems per benchmark in the periodic evaluation: the first ones (CRUXEval's held-out
    half comes first); None = all. The probe's size is `probe_size`."""
    probe_size: int | None = Field(None, ge=1)
    """Problems per task type of the probe (`eval_benchmarks` entry `probe`, 220 per type) in
    the periodic evaluation, the first ones; None = `eval_size`. Every evaluation asks the same
    problems (the probe is fixed)."""
    eval_benchmarks: list[str] = Field(default_factory=lambda: ["cruxeval-o", "cruxeval-i"])
    """Benchmarks of the periodic evaluation, named as for `azr eval --benchmarks`:
    cruxeval-o, cruxeval-i, humaneval, probe, code:FILE.jsonl, math:FILE.jsonl."""
    eval_data: str | None = None
    """CRUXEval JSONL file (id, code, input, output) of cruxeval-o/-i, here and in `azr eval`;
    None = the repo's own `data/cruxeval/cruxeval.jsonl`."""

    @field_validator("eval_benchmarks")
    @classmethod
    def _known_benchmarks(cls, names: list[str]) -> list[str]:
        for name in names:
            kind, sep, path = name.partition(":")
            if name not in EVAL_BENCHMARKS and not (sep and kind in ("code", "math") and path):
                raise ValueError(
                    f"unknown benchmark {name!r}: expected one of {', '.join(EVAL_BENCHMARKS)}, "
                    "code:FILE.jsonl or math:FILE.jsonl"
                )
        return names
