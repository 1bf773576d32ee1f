"""CRUXEval (Gu et al., 2024): 800 Python functions with one input and output each.

The repo ships the file (``data/cruxeval/``, MIT). This is its one loader. Rows split by a fixed
rule: an even id number (``sample_<k>``) is the *train* half (tokenizer corpus and warm start of
the tiny model), an odd one the *held-out* half (evaluation). Nothing here runs a program.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from azr.tasks import Triplet

REPO_ROOT = Path(__file__).resolve().parent.parent
CRUXEVAL_FILE = REPO_ROOT / "data" / "cruxeval" / "cruxeval.jsonl"
"""The bundled copy; every default that needs CRUXEval resolves to it."""


class CruxEvalFormatError(ValueError):
    """A CRUXEval file is missing or a line is not a CRUXEval row; names the file and line."""


@dataclass(frozen=True)
class CruxEvalRow:
    """One CRUXEval problem: ``repr(f(*input)) == output`` for the program ``code``."""

    id: str
    code: str
    input: str
    output: str

    @property
    def number(self) -> int:
        """k of ``sample_<k>`` (the split rule's key)."""
        return int(self.id.rsplit("_", 1)[-1])

    @property
    def held_out(self) -> bool:
        """Odd ids are the evaluation half; even ids may be trained on."""
        return self.number % 2 == 1

    @property
    def triplet(self) -> Triplet:
        return Triplet(program=self.code, input=self.input, output=self.output)


def resolve_data_path(path: str | Path | None) -> Path:
    """``None`` = the bundled file; a relative path is taken from the working directory."""
    return CRUXEVAL_FILE if path is None else Path(path).expanduser()


def load_cruxeval(path: str | Path | None = None) -> list[CruxEvalRow]:
    """Every row of a CRUXEval JSONL file (the bundled one by default), in file order; the
    first bad line raises `CruxEvalFormatError` naming it."""
    rows, errors = read_cruxeval(path)
    if errors:
        raise CruxEvalFormatError(": ".join(errors[0]))
    return rows


def read_cruxeval(
    path: str | Path | None = None,
) -> tuple[list[CruxEvalRow], list[tuple[str, str]]]:
    """The good rows of a CRUXEval JSONL file in file order, and a (``FILE:LINE``, why) pair
    per bad line (evaluation goes on without them). A file that cannot be read raises."""
    path = resolve_data_path(path)
    rows: list[CruxEvalRow] = []
    errors: list[tuple[str, str]] = []
    try:
        handle = path.open()
    except OSError as exc:
        raise CruxEvalFormatError(f"cannot read CRUXEval file {path}: {exc.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                row = CruxEvalRow(
                    id=str(record["id"]),
                    code=str(record["code"]),
                    input=str(record["input"]),
                    output=str(record["output"]),
                )
                row.number  # noqa: B018 -- the id must carry its number (split rule)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                errors.append(
                    (f"{path}:{number}", f"not a CRUXEval row ({type(exc).__name__}: {exc})")
                )
                continue
            rows.append(row)
    return rows, errors


def split_rows(rows: list[CruxEvalRow]) -> tuple[list[CruxEvalRow], list[CruxEvalRow]]:
    """(train, held-out) halves by id parity, keeping file order."""
    return [r for r in rows if not r.held_out], [r for r in rows if r.held_out]
