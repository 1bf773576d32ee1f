"""The JSON payloads of the buffer log (and of checkpoint files, which use the same format).

``add``: one acknowledged batch of one task type::

    {"t": "add", "ks": "<key scheme>", "task": "deduction", "rid": "..."|null, "step": 7,
     "keys": [...], "entries": [{...}, ...], "result": {...}|null}

``meta``: state that is not entries, first in a rewritten log or a checkpoint::

    {"t": "meta", "current_step": 7, "ledger": [[rid, step, result], ...], "rng": {...}|null}

Dedup keys are stored so reopening does not re-parse every program (the frame checksum
guards them), together with the key scheme that made them: a record from another scheme
(another Python version) has its keys recomputed. Entries are re-validated by pydantic.
"""

from __future__ import annotations

from azr.tasks import TaskType
from buffer_service.entries import KEY_SCHEME, BufferEntry, entry_from_dict, entry_to_dict
from buffer_service.results import AddResult

SEED_REQUEST_ID = "azr-seed"
CHUNK_ENTRIES = 1024
"""Entries per record when a whole buffer is written out (compaction, checkpoints): damage
to one record then costs at most this many entries."""


def add_payload(
    task: TaskType,
    rid: str | None,
    step: int,
    keyed: list[tuple[str, BufferEntry]],
    result: AddResult | None,
) -> dict:
    """The record of one add batch (``keyed`` = the (key, entry) pairs actually stored)."""
    return {
        "t": "add",
        "ks": KEY_SCHEME,
        "task": task.value,
        "rid": rid,
        "step": step,
        "keys": [k for k, _ in keyed],
        "entries": [entry_to_dict(e) for _, e in keyed],
        "result": None if result is None else result.model_dump(mode="json"),
    }


def chunked_add_payloads(task: TaskType, keyed: list[tuple[str, BufferEntry]]) -> list[dict]:
    """A buffer's entries as records of at most CHUNK_ENTRIES, in order."""
    out = []
    for start in range(0, len(keyed), CHUNK_ENTRIES):
        chunk = keyed[start : start + CHUNK_ENTRIES]
        step = max(e.step for _, e in chunk)
        out.append(add_payload(task, None, step, chunk, None))
    return out


def parse_add_payload(
    payload: dict,
) -> tuple[TaskType, str | None, int, list[tuple[str, BufferEntry]], AddResult | None]:
    """Decode an ``add`` record; raises KeyError/TypeError/ValueError when it is unusable."""
    task = TaskType(payload["task"])
    keys, entries = payload["keys"], payload["entries"]
    if not isinstance(keys, list) or not isinstance(entries, list) or len(keys) != len(entries):
        raise ValueError("keys and entries do not match")
    keyed = [(str(k), entry_from_dict(task, e)) for k, e in zip(keys, entries, strict=True)]
    rid = payload["rid"]
    result = payload["result"]
    return (
        task,
        None if rid is None else str(rid),
        int(payload["step"]),
        keyed,
        None if result is None else AddResult.model_validate(result),
    )


def meta_payload(
    current_step: int, ledger: list[tuple[str, int, AddResult]], rng: dict | None
) -> dict:
    """The record of non-entry state."""
    return {
        "t": "meta",
        "current_step": current_step,
        "ledger": [[rid, step, r.model_dump(mode="json")] for rid, step, r in ledger],
        "rng": rng,
    }


def encode_rng_state(state: tuple) -> list:
    """``random.Random.getstate()`` as JSON-ready lists."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def decode_rng_state(data: list) -> tuple:
    """Inverse of :func:`encode_rng_state`."""
    version, internal, gauss = data
    return (int(version), tuple(int(x) for x in internal), gauss)
