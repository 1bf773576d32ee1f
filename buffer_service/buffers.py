"""TaskBuffers: the three durable task buffers, in process and free of Ray.

State = the record log on disk (the truth at open) mirrored into in-memory indexes
(:class:`TaskBuffer`) that serve sampling. Every mutation is first appended to the log and
fsynced, then applied in memory, then acknowledged; replaying the log therefore rebuilds
exactly the acknowledged state, evictions included (they are a deterministic function of the
add order and the size cap).

Not thread-safe: the Ray actor around it runs one call at a time.
"""

from __future__ import annotations

import logging
import random
import sys
from collections import OrderedDict
from pathlib import Path

from azr.tasks import IDENTITY_INDUCTION, IDENTITY_TRIPLET, TaskType
from buffer_service.entries import KEY_SCHEME, BufferEntry, batch_keys
from buffer_service.key_pool import KeyPool
from buffer_service.record_log import RecordLog, read_log, write_log_atomically
from buffer_service.records import (
    SEED_REQUEST_ID,
    add_payload,
    chunked_add_payloads,
    decode_rng_state,
    encode_rng_state,
    meta_payload,
    parse_add_payload,
)
from buffer_service.results import AddResult
from buffer_service.task_buffer import TaskBuffer

log = logging.getLogger(__name__)

LOG_NAME = "buffers.log"
LEDGER_SIZE = 4096
"""Recent request ids remembered for idempotent retries (a retry comes seconds later)."""
COMPACT_MIN_DEAD = 10_000
"""Rewrite the log once it holds this many evicted entries and more dead than live ones."""


class CheckpointError(RuntimeError):
    """A buffer checkpoint is missing, damaged or for another step; nothing was changed."""


def checkpoint_file(path: str | Path, step: int) -> Path:
    """Where ``checkpoint(path, step)`` writes the buffers of ``step``."""
    return Path(path) / f"buffers-step{step:08d}.log"


class TaskBuffers:
    """Deduction, abduction and induction buffers backed by one append-only log.

    ``store_dir`` holds the log; a new store is seeded with the identity triplet
    (deduction, abduction) and the identity induction task, all at step 0. ``max_size``
    caps each buffer (None = unbounded); ``seed`` makes sampling reproducible;
    ``key_workers`` helper processes share the dedup keys of large batches (:class:`KeyPool`).
    """

    def __init__(
        self,
        store_dir: str | Path,
        *,
        seed: int,
        max_size: int | None = None,
        max_entry_chars: int = 100_000,
        key_workers: int = 0,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.max_size = max_size
        self.seed = seed
        self.max_entry_chars = max_entry_chars
        self._log, payloads, self.recovery = RecordLog.open(self.store_dir / LOG_NAME)
        self._keys = KeyPool(key_workers)
        self._reset(payloads)
        if not payloads:  # a new store (or one with nothing intact left: reported above)
            self._seed_identity()
        elif self._stale_records and not self.recovery.invalid_records:
            # Keys of another scheme were recomputed: store them, so the next open need not
            # (a compaction; skipped while unusable records are kept in the log for forensics).
            self._rewrite_log()
            log.info(
                "buffer store %s: dedup keys of %d records recomputed for key scheme %s",
                self._log.path,
                self._stale_records,
                KEY_SCHEME,
            )

    # ----------------------------------------------------------------- state rebuild
    def _reset(self, payloads: list[dict]) -> None:
        cap = self.max_size if self.max_size is not None else sys.maxsize
        self._buffers = {task: TaskBuffer(cap) for task in TaskType}
        self._rngs = {
            task: random.Random(f"azr-buffer:{self.seed}:{task.value}") for task in TaskType
        }
        self._ledger: OrderedDict[str, tuple[int, AddResult]] = OrderedDict()
        self._current_step = 0
        self._log_entries = 0  # entries in the log file, live or evicted (compaction trigger)
        self._stale_records = 0  # add records whose keys were made by another key scheme
        self.counters = {
            task: {"adds": 0, "duplicates": 0, "rejected": 0, "evictions": 0} for task in TaskType
        }
        for i, payload in enumerate(payloads):
            try:
                self._apply_payload(payload)
            except (KeyError, TypeError, ValueError) as exc:
                # An intact frame with unusable content (e.g. edited by hand): skip, report.
                why = f"record {i}: {type(exc).__name__}: {exc}"[:300]
                self.recovery.invalid_records.append(why)
                log.error("buffer store %s: skipped unusable %s", self._log.path, why)

    def _apply_payload(self, payload: dict) -> None:
        kind = payload["t"]
        if kind == "meta":
            self._current_step = max(self._current_step, int(payload["current_step"]))
            for rid, step, result in payload["ledger"]:
                self._remember(str(rid), int(step), AddResult.model_validate(result))
            return
        if kind != "add":
            raise ValueError(f"unknown record type {kind!r}")
        task, rid, step, keyed, result = parse_add_payload(payload)
        if payload.get("ks") != KEY_SCHEME:
            keyed = [(self._rekey(task, key, entry), entry) for key, entry in keyed]
            self._stale_records += 1
        buf = self._buffers[task]
        for key, entry in keyed:
            if key not in buf:
                buf.append(key, entry)
        self._log_entries += len(keyed)
        self._current_step = max(self._current_step, step)
        if rid is not None and result is not None:
            self._remember(rid, step, result)

    def _rekey(self, task: TaskType, old_key: str, entry: BufferEntry) -> str:
        """The key of a stored entry under this interpreter's key scheme."""
        ((key, _reason),) = batch_keys(task, [entry], sys.maxsize)
        # Accepted once, unparsable now (a language change): keep it under its old key.
        return old_key if key is None else key

    def _remember(self, rid: str, step: int, result: AddResult) -> None:
        self._ledger[rid] = (step, result)
        self._ledger.move_to_end(rid)
        while len(self._ledger) > LEDGER_SIZE:
            self._ledger.popitem(last=False)

    def _seed_identity(self) -> None:
        for task in TaskType:
            seed = IDENTITY_INDUCTION if task is TaskType.INDUCTION else IDENTITY_TRIPLET
            self.add_many(task, [seed], request_id=f"{SEED_REQUEST_ID}:{task.value}")

    # ----------------------------------------------------------------- adds
    def add_many(
        self, task: TaskType | str, entries: list[BufferEntry], request_id: str | None = None
    ) -> AddResult:
        """Validate, dedup and durably add entries; returns once they are on disk.

        ``request_id`` makes the call idempotent: a retry with an id already applied returns
        the original result (``replayed=True``) and changes nothing.
        """
        task = TaskType(task)
        entries = list(entries)
        if request_id is not None and request_id in self._ledger:
            return self._ledger[request_id][1].model_copy(update={"replayed": True})
        buf = self._buffers[task]
        fresh: list[tuple[str, BufferEntry]] = []
        keys_in_batch: set[str] = set()
        duplicates: list[int] = []
        rejected: list[tuple[int, str]] = []
        step = -1
        for i, (entry, (key, reason)) in enumerate(
            zip(entries, self._keys.batch_keys(task, entries, self.max_entry_chars), strict=True)
        ):
            if key is None:
                rejected.append((i, str(reason)))
                continue
            step = max(step, entry.step)
            if key in buf or key in keys_in_batch:
                duplicates.append(i)
                continue
            keys_in_batch.add(key)
            fresh.append((key, entry))
        evicted = max(0, len(buf) + len(fresh) - buf.max_size)
        result = AddResult(
            added=len(fresh),
            duplicates=tuple(duplicates),
            rejected=tuple(rejected),
            evicted=evicted,
        )
        step = max(step, 0)
        if fresh or request_id is not None or step > self._current_step:
            # Durable first: an exception here leaves memory untouched and nothing acknowledged.
            self._log.append([add_payload(task, request_id, step, fresh, result)])
        for key, entry in fresh:
            buf.append(key, entry)
        self._log_entries += len(fresh)
        self._current_step = max(self._current_step, step)
        if request_id is not None:
            self._remember(request_id, step, result)
        counters = self.counters[task]
        counters["adds"] += len(fresh)
        counters["duplicates"] += len(duplicates)
        counters["rejected"] += len(rejected)
        counters["evictions"] += evicted
        self._maybe_compact()
        return result

    def _maybe_compact(self) -> None:
        live = sum(len(b) for b in self._buffers.values())
        dead = self._log_entries - live
        if dead >= COMPACT_MIN_DEAD and dead > live:
            self._rewrite_log()
            log.info(
                "compacted buffer store %s: %d live entries, %d dropped", self._log.path, live, dead
            )

    def _rewrite_log(self) -> None:
        """Atomically replace the log with the live state (evicted entries dropped)."""
        self._log.replace_with(self._live_payloads(step=None))
        self._log_entries = sum(len(b) for b in self._buffers.values())
        self._stale_records = 0

    def _live_payloads(self, step: int | None, rng: bool = False) -> list[dict]:
        """The state as log records: meta first, then each buffer's entries in order.

        ``step`` keeps only entries (and request ids) produced at or before it.
        """
        ledger = [(rid, s, r) for rid, (s, r) in self._ledger.items() if step is None or s <= step]
        current = self._current_step if step is None else min(self._current_step, step)
        rng_states = {t.value: encode_rng_state(r.getstate()) for t, r in self._rngs.items()}
        payloads = [meta_payload(current, ledger, rng_states if rng else None)]
        for task, buf in self._buffers.items():
            keyed = [(k, e) for k, e in buf.keyed_entries() if step is None or e.step <= step]
            if step is not None and len(keyed) < len(buf):
                log.warning(
                    "checkpoint of step %d leaves out %d %s entries of later steps",
                    step,
                    len(buf) - len(keyed),
                    task.value,
                )
            payloads.extend(chunked_add_payloads(task, keyed))
        return payloads

    # ----------------------------------------------------------------- sampling
    def sample_references(self, task: TaskType | str, k: int) -> list[BufferEntry]:
        """``min(k, size)`` distinct entries, uniformly without replacement."""
        task = TaskType(task)
        return self._buffers[task].sample(k, self._rngs[task])

    def sample_reference_sets(
        self, task: TaskType | str, k: int, count: int
    ) -> list[list[BufferEntry]]:
        """``count`` independent draws of :meth:`sample_references` (one per proposer prompt),
        so a step's B prompts cost one call, not B."""
        task = TaskType(task)
        buf, rng = self._buffers[task], self._rngs[task]
        return [buf.sample(k, rng) for _ in range(count)]

    def sample_tasks(
        self, task: TaskType | str, n: int, *, new_first: bool = True, step: int | None = None
    ) -> list[BufferEntry]:
        """A solve batch of ``n`` entries (fewer only when the buffer is empty).

        With ``new_first``, entries produced at ``step`` (default: the latest step any add
        carried) come first, then uniform samples from the whole buffer fill the batch.
        The driver should pass ``step``: a step whose adds were all rejected has no new entries.
        """
        task = TaskType(task)
        new_step = (self._current_step if step is None else step) if new_first else None
        return self._buffers[task].sample_batch(n, new_step, self._rngs[task])

    # ----------------------------------------------------------------- inspection
    def size(self, task: TaskType | str) -> int:
        """Entries currently in ``task``'s buffer."""
        return len(self._buffers[TaskType(task)])

    def entries(self, task: TaskType | str) -> list[BufferEntry]:
        """All entries of ``task``'s buffer, oldest first."""
        return self._buffers[TaskType(task)].entries()

    @property
    def current_step(self) -> int:
        """The highest producing step any add has carried."""
        return self._current_step

    def stats(self) -> dict:
        """Sizes, counters since open, store size and what recovery found at open."""
        return {
            "current_step": self._current_step,
            "buffers": {
                task.value: {
                    "size": len(buf),
                    "max_size": self.max_size,
                    "newest_step": buf.newest_step,
                    **self.counters[task],
                }
                for task, buf in self._buffers.items()
            },
            "store": {"path": str(self._log.path), "bytes": self._log.size()},
            "recovery": self.recovery.as_dict(),
        }

    # ----------------------------------------------------------------- checkpoints
    def checkpoint(self, path: str | Path, step: int) -> str:
        """Write the buffers as of the end of ``step`` (and the sampling RNG state) under
        ``path``; returns the file written. Entries of later steps are left out."""
        target = checkpoint_file(path, step)
        target.parent.mkdir(parents=True, exist_ok=True)
        payloads = self._live_payloads(step=step, rng=True)
        payloads[0]["checkpoint_step"] = step
        write_log_atomically(target, payloads)
        return str(target)

    def restore(self, path: str | Path, step: int) -> None:
        """Make the buffers, the store and the sampling RNG exactly what ``checkpoint(path,
        step)`` saved; entries added after it are dropped. Raises CheckpointError (changing
        nothing) when the checkpoint is missing or damaged."""
        source = checkpoint_file(path, step)
        if not source.is_file():
            raise CheckpointError(f"no buffer checkpoint for step {step} at {source}")
        payloads, report = read_log(source)
        if report.damaged or not payloads or payloads[0].get("checkpoint_step") != step:
            raise CheckpointError(
                f"buffer checkpoint {source} is damaged or not of step {step}: {report.as_dict()}"
            )
        try:  # check every record before the live store is touched
            rng_states = {t: decode_rng_state(payloads[0]["rng"][t.value]) for t in TaskType}
            for payload in payloads[1:]:
                parse_add_payload(payload)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"buffer checkpoint {source} is unusable: {exc}") from exc
        self._log.replace_with(payloads)
        self._reset(payloads)
        for task in TaskType:
            self._rngs[task].setstate(rng_states[task])

    def key_worker_pids(self) -> list[int]:
        """Process ids of the running dedup-key helpers (:meth:`KeyPool.pids`)."""
        return self._keys.pids()

    def close(self) -> None:
        """Close the store (everything acknowledged is already on disk) and stop the key helpers."""
        self._keys.close()
        self._log.close()
