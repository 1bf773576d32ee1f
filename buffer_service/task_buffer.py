"""One task type's buffer in memory: insertion order, dedup index, oldest-first eviction.

Entries live in a list addressed by an *absolute position* (0 for the first entry ever
appended). Evicting the oldest advances ``head``; the list is trimmed once the dead prefix is
large, so eviction and uniform indexing are both O(1) amortised, which keeps sampling fast at
100,000+ entries.
"""

from __future__ import annotations

import random

from buffer_service.entries import BufferEntry


class TaskBuffer:
    """Entries of one task type, oldest first, capped at ``max_size``."""

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self._items: list[tuple[str, BufferEntry] | None] = []
        self._base = 0  # absolute position of _items[0]
        self._head = 0  # absolute position of the oldest live entry
        self._keys: dict[str, int] = {}  # dedup key -> absolute position
        # Positions added for the newest step seen by this buffer (new-first sampling).
        self._newest_step = -1
        self._newest_positions: list[int] = []
        self._newest_start = 0  # _newest_positions[:_newest_start] have been evicted

    def __len__(self) -> int:
        return self._base + len(self._items) - self._head

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def append(self, key: str, entry: BufferEntry) -> int:
        """Add an entry whose key is not present; returns how many oldest entries it evicted."""
        if key in self._keys:
            raise KeyError(f"duplicate key {key}")
        pos = self._base + len(self._items)
        self._items.append((key, entry))
        self._keys[key] = pos
        if entry.step > self._newest_step:
            self._newest_step = entry.step
            self._newest_positions = [pos]
            self._newest_start = 0
        elif entry.step == self._newest_step:
            self._newest_positions.append(pos)
        evicted = 0
        while len(self) > self.max_size:
            self._evict_oldest()
            evicted += 1
        return evicted

    def _evict_oldest(self) -> None:
        idx = self._head - self._base
        item = self._items[idx]
        assert item is not None
        del self._keys[item[0]]
        self._items[idx] = None
        newest = self._newest_positions
        if self._newest_start < len(newest) and newest[self._newest_start] == self._head:
            self._newest_start += 1
        self._head += 1
        # Trim the dead prefix once it is a large share of the list (amortised O(1)).
        if idx >= 4096 and idx * 2 >= len(self._items):
            del self._items[: idx + 1]
            self._base = self._head

    def at(self, index: int) -> BufferEntry:
        """The entry ``index`` places after the oldest live one."""
        item = self._items[self._head - self._base + index]
        assert item is not None
        return item[1]

    def entries(self) -> list[BufferEntry]:
        """All live entries, oldest first."""
        start = self._head - self._base
        return [item[1] for item in self._items[start:] if item is not None]

    def keyed_entries(self) -> list[tuple[str, BufferEntry]]:
        """(key, entry) of all live entries, oldest first."""
        start = self._head - self._base
        return [item for item in self._items[start:] if item is not None]

    def sample(self, k: int, rng: random.Random) -> list[BufferEntry]:
        """Up to ``k`` distinct entries, uniformly without replacement."""
        size = len(self)
        picks = rng.sample(range(size), min(k, size))
        return [self.at(i) for i in picks]

    def sample_batch(self, n: int, new_step: int | None, rng: random.Random) -> list[BufferEntry]:
        """``n`` entries: those produced at ``new_step`` first, then uniform fill from the buffer.

        ``new_step=None`` means no entry counts as new (plain uniform sampling). Of the step's
        entries, all are taken (in add order) when there are at most ``n``,
        otherwise ``n`` of them uniformly. The fill draws without replacement from the
        whole buffer minus what was taken; only when the buffer holds fewer than ``n``
        entries does the fill repeat entries (uniform with replacement), so a batch can
        always be filled, e.g. right after seeding.
        """
        size = len(self)
        if size == 0 or n <= 0:
            return []
        if new_step is None:
            new_abs: list[int] = []
        elif new_step == self._newest_step:
            first, end = self._newest_start, len(self._newest_positions)
            if end - first >= n:  # index into the positions: no O(#new) copy per call
                picks = rng.sample(range(first, end), n)
                return [self.at(self._newest_positions[j] - self._head) for j in picks]
            new_abs = self._newest_positions[first:]
        else:
            new_abs = self._positions_at(new_step)
        new = [p - self._head for p in new_abs]
        if len(new) >= n:
            return [self.at(i) for i in rng.sample(new, n)]
        taken = set(new)
        need = n - len(new)
        fill: list[int]
        if size - len(taken) >= need:
            if size <= 4 * n:  # small buffer: sample the complement directly
                pool = [i for i in range(size) if i not in taken]
                fill = rng.sample(pool, need)
            else:  # large buffer: rejection sampling touches O(n) indices, not O(size)
                fill = []
                seen = set(taken)
                while len(fill) < need:
                    i = rng.randrange(size)
                    if i not in seen:
                        seen.add(i)
                        fill.append(i)
        else:
            fill = [i for i in range(size) if i not in taken]
            fill += rng.choices(range(size), k=need - len(fill))
        return [self.at(i) for i in new + fill]

    def _positions_at(self, step: int) -> list[int]:
        """Live absolute positions of entries produced at ``step`` (not the newest step)."""
        if step > self._newest_step:
            return []
        # An older step (rare, e.g. the driver lags behind an async producer): scan.
        return [
            self._base + i
            for i in range(self._head - self._base, len(self._items))
            if (item := self._items[i]) is not None and item[1].step == step
        ]

    @property
    def newest_step(self) -> int:
        """Highest producing step among entries ever appended (-1 when none)."""
        return self._newest_step
