"""The fixed in-distribution probe: solver tasks of every type the tiny model never trains on.

Built like the warm start's solves (`azr.tiny.data`) but from the *probe* split of
`azr.tiny.families`: programs and inputs disjoint from the warm start's. The file ships in
``data/probe/probe.jsonl``, made once by ``python -m driver.probe_data`` whose gold outputs
come from the executor (the sandbox runs every program; nothing is evaluated in-process): the
probe is fixed before any training, the same on every machine, and costs nothing at start-up.
`azr.eval.probe_bench` asks it (``azr eval MODEL --benchmarks probe``; the training loop's
``eval/probe/<type>``).

Rows are balanced over the families (the same number of each, in turn) and over the answers
(True and False in turn within each family), so neither a change of the mixture nor a model
that gives one answer to everything can pass for learning: a constant answer scores 50% on
deduction.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from azr.tasks import InductionTask, TaskType, Triplet, ValidateRequest
from azr.tiny.data import INDUCTION_INPUTS
from azr.tiny.families import FAMILIES, draw_inputs, draw_program

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PROBE_FILE = REPO_ROOT / "data" / "probe" / "probe.jsonl"
"""The shipped probe (gold outputs from the executor)."""
PROBE_SEED = 15
"""Seed of the shipped probe's draw."""
PER_TYPE = 220
"""Tasks per task type in the shipped probe."""


@dataclass(frozen=True)
class ProbeTask:
    """One probe task. Deduction/abduction: ``program``, ``input``, ``output``; induction:
    ``program``, ``message``, ``visible`` and ``hidden`` (input, output) pairs."""

    id: str
    task: TaskType
    family: str
    program: str
    input: str | None = None
    output: str | None = None
    message: str | None = None
    visible: tuple[tuple[str, str], ...] = ()
    hidden: tuple[tuple[str, str], ...] = ()

    @property
    def item(self) -> Triplet | InductionTask:
        """The task as self-play's solver sees it (`azr.prompts.solve_prompt`)."""
        if self.task == TaskType.INDUCTION:
            return InductionTask(
                program=self.program,
                message=self.message or "",
                visible=self.visible,
                hidden=self.hidden,
            )
        return Triplet(program=self.program, input=self.input or "", output=self.output or "")

    def to_json(self) -> str:
        record = {k: v for k, v in asdict(self).items() if v not in (None, ())}
        return json.dumps(record)

    @classmethod
    def from_dict(cls, record: dict) -> ProbeTask:
        """A row of the probe file; raises ValueError/KeyError/TypeError naming what is wrong."""
        task = TaskType(record["task"])
        pairs = {
            k: tuple((str(i), str(o)) for i, o in record.get(k, ())) for k in ("visible", "hidden")
        }
        row = cls(
            id=str(record["id"]),
            task=task,
            family=str(record["family"]),
            program=str(record["program"]),
            input=record.get("input"),
            output=record.get("output"),
            message=record.get("message"),
            **pairs,
        )
        if task == TaskType.INDUCTION:
            if not (row.visible and row.hidden and row.message):
                raise ValueError("an induction row needs visible and hidden pairs and a message")
        elif not (isinstance(row.input, str) and isinstance(row.output, str)):
            raise ValueError(f"a {task} row needs an input and an output")
        return row


@dataclass(frozen=True)
class ProbeDraft:
    """A probe task before the executor has run it: program, inputs, no outputs."""

    id: str
    task: TaskType
    family: str
    program: str
    inputs: tuple[str, ...]
    message: str


def draft_probe(seed: int = PROBE_SEED, per_type: int = PER_TYPE) -> list[ProbeDraft]:
    """``per_type`` distinct tasks per type from the probe split, families in turn."""
    rng = random.Random(seed)
    drafts = []
    for task in TaskType:
        n_inputs = INDUCTION_INPUTS if task == TaskType.INDUCTION else 1
        seen: set[tuple[str, tuple[str, ...]]] = set()
        while len(seen) < per_type:
            family = FAMILIES[len(seen) % len(FAMILIES)]
            program, params = draw_program(family, rng, "probe")
            # each family's tasks alternate a True and a False answer (induction: which comes
            # first): one answer given to every task scores 50%
            first = (len(seen) // len(FAMILIES)) % 2 == 0
            pairs = draw_inputs(family, params, rng, "probe", n_inputs, first)
            inputs = tuple(i for i, _ in pairs)
            if (program, inputs) in seen:
                continue
            seen.add((program, inputs))
            drafts.append(
                ProbeDraft(
                    f"{task}/{len(seen) - 1:04d}", task, family.name, program, inputs, family.hint
                )  # fmt: skip
            )
    return drafts


def validate_requests(drafts: list[ProbeDraft]) -> list[ValidateRequest]:
    """What the executor must run to give each draft its outputs (in order)."""
    return [
        ValidateRequest(
            program=d.program,
            inputs=d.inputs,
            require_distinct_inputs=d.task == TaskType.INDUCTION,
        )
        for d in drafts
    ]


def complete(draft: ProbeDraft, outputs: tuple[str, ...]) -> ProbeTask:
    """The probe task of ``draft`` with the executor's ``outputs``."""
    if draft.task != TaskType.INDUCTION:
        return ProbeTask(draft.id, draft.task, draft.family, draft.program,
                         input=draft.inputs[0], output=outputs[0])  # fmt: skip
    pairs = tuple(zip(draft.inputs, outputs, strict=True))
    half = len(pairs) // 2
    return ProbeTask(draft.id, draft.task, draft.family, draft.program,
                     message=draft.message, visible=pairs[:half], hidden=pairs[half:])  # fmt: skip


def read_probe(path: str | Path | None = None) -> tuple[list[ProbeTask], list[tuple[str, str]]]:
    """The good rows of a probe file (the shipped one by default) and a (``FILE:LINE``, why)
    pair per bad line. A file that cannot be read raises OSError."""
    path = Path(path) if path is not None else PROBE_FILE
    rows, errors = [], []
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(ProbeTask.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                errors.append(
                    (f"{path}:{number}", f"not a probe row ({type(exc).__name__}: {exc})")
                )
    return rows, errors
