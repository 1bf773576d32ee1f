"""The buffer section: the three durable task buffers (the curriculum)."""

from __future__ import annotations

from pydantic import Field

from azr.config.section import Section


class BufferConfig(Section):
    """The three durable task buffers (the curriculum)."""

    dir: str | None = None
    """Store directory; None = `<run dir>/buffer`."""
    max_size: int | None = Field(None, ge=1)
    """Entries kept per buffer; the oldest are evicted beyond it. None = unbounded."""
    seed_size: int = Field(256, ge=0)
    """Seeding phase: propose with the untrained model until each buffer holds this many tasks (0 = skip)."""
    seed_max_rounds: int = Field(20, ge=1)
    """Upper bound on seeding rounds, so a model that never proposes valid tasks cannot hang the run."""
    max_entry_chars: int = Field(100_000, ge=1_000)
    """Sanity cap on one entry's total text (program, inputs, outputs, message); larger entries are
    rejected as `entry_too_large` (the executor's own limits decide which tasks are valid)."""
    key_workers: int = Field(1, ge=0)
    """Helper processes that compute the dedup keys of a large batch alongside the buffer (parsing and
    compiling each program is > 90 % of an add's cost); idle between adds, not reserved as Ray CPUs.
    0 = all in the buffer's process."""
