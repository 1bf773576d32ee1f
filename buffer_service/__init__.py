"""Durable task buffers (deduction, abduction, induction) and the Ray actor serving them.

In process: :class:`TaskBuffers`. On Ray: :func:`create_buffer_actor` returns a handle to a
:class:`BufferActor` with the same methods.
"""

from buffer_service.actor import BufferActor, create_buffer_actor
from buffer_service.buffers import CheckpointError, TaskBuffers, checkpoint_file
from buffer_service.entries import BufferEntry, EntryRejected, entry_key
from buffer_service.record_log import DamageReport
from buffer_service.results import AddResult
from buffer_service.wire import EntryBatch

__all__ = [
    "AddResult",
    "BufferActor",
    "BufferEntry",
    "CheckpointError",
    "DamageReport",
    "EntryBatch",
    "EntryRejected",
    "TaskBuffers",
    "checkpoint_file",
    "create_buffer_actor",
    "entry_key",
]
