"""EntryBatch: a batch of buffer entries that travels to the actor in a compact form.

Pickled as one tuple of plain fields per entry (which pickle handles in C) instead of model by
model, as Ray pickles a plain list (measured costs: docs/buffer.md). Unpickling rebuilds the
same models and trusts nothing: entries whose fields have exactly the declared types are
rebuilt with pydantic validation; anything else arrives as it was sent, so the actor rejects it
with the reason it would have given for the plain list.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import ValidationError

from azr.tasks import InductionTask, Triplet

_TRIPLET, _INDUCTION, _OTHER = "T", "I", "O"


class EntryBatch(list):
    """A list of buffer entries that pickles compactly (see the module docstring)."""

    def __init__(self, entries: Iterable[object] = ()) -> None:
        super().__init__(entries)

    def __reduce_ex__(self, protocol: object) -> tuple:
        return (_unpack, (_pack(self),))

    def __reduce__(self) -> tuple:
        return self.__reduce_ex__(2)


def _pack(entries: list[object]) -> tuple[str, list[object]]:
    kinds: list[str] = []
    rows: list[object] = []
    for e in entries:
        t = type(e)
        if t is Triplet:
            kinds.append(_TRIPLET)
            rows.append((e.program, e.input, e.output, e.step, e.policy_version))
        elif t is InductionTask:
            kinds.append(_INDUCTION)
            rows.append((e.program, e.message, e.visible, e.hidden, e.step, e.policy_version))
        else:
            kinds.append(_OTHER)
            rows.append(e)
    return "".join(kinds), rows


def _is_pairs(value: object) -> bool:
    return type(value) is tuple and all(
        type(p) is tuple and len(p) == 2 and type(p[0]) is str and type(p[1]) is str for p in value
    )


def _unpack(packed: tuple[str, list[object]]) -> EntryBatch:
    kinds, rows = packed
    out = EntryBatch()
    for kind, row in zip(kinds, rows, strict=True):
        if kind == _TRIPLET:
            program, inp, output, step, version = row
            fields = {
                "program": program,
                "input": inp,
                "output": output,
                "step": step,
                "policy_version": version,
            }
            exact = (
                type(program) is str
                and type(inp) is str
                and type(output) is str
                and type(step) is int
                and type(version) is int
            )
            out.append(_rebuild(Triplet, fields, exact))
        elif kind == _INDUCTION:
            program, message, visible, hidden, step, version = row
            fields = {
                "program": program,
                "message": message,
                "visible": visible,
                "hidden": hidden,
                "step": step,
                "policy_version": version,
            }
            exact = (
                type(program) is str
                and type(message) is str
                and _is_pairs(visible)
                and _is_pairs(hidden)
                and type(step) is int
                and type(version) is int
            )
            out.append(_rebuild(InductionTask, fields, exact))
        else:
            out.append(row)
    return out


def _rebuild(model: type[Triplet] | type[InductionTask], fields: dict, exact: bool) -> object:
    if exact:
        try:
            return model(**fields)
        except ValidationError:
            pass
    # As sent: wrong types stay wrong (never coerced), for the buffer to reject.
    return model.model_construct(**fields)
