"""Plain result types the buffer service returns (they travel through Ray by value)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AddResult(BaseModel):
    """Outcome of one ``add_many`` batch; indices refer to positions in the submitted batch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    added: int = 0
    """Entries stored (durably, before this result was returned)."""
    duplicates: tuple[int, ...] = ()
    """Entries skipped as exact duplicates (same normalised program and input(s))."""
    rejected: tuple[tuple[int, str], ...] = ()
    """Malformed entries, never stored, with a machine-readable reason."""
    evicted: int = 0
    """Oldest entries evicted to keep the buffer within its size cap."""
    replayed: bool = False
    """True when the request id was already applied: this is the original result, unchanged
    data (a client retry after a lost reply)."""
