"""Append-only log of checksummed records: the buffers' durable store.

One add batch is one record written with one ``write`` + ``fsync``: a batch is all-or-nothing
and is acknowledged only after the fsync returns. Opening recovers every intact record and
reports the damage. Why a log and not SQLite: docs/buffer.md.

Frame (little endian)::

    MAGIC (4 bytes) | length (u32) | crc32(length bytes + payload) (u32) | payload

The payload is JSON with ``ensure_ascii=True``, so its bytes are all printable ASCII; MAGIC
starts with NUL and therefore never occurs inside a payload, which makes resynchronising on
MAGIC after a damaged region exact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = b"\x00AZB"
_HEADER = struct.Struct("<4sII")
MAX_RECORD_BYTES = 1 << 30
"""Larger length fields are treated as damage (a flipped high bit, not a real record)."""


@dataclass
class DamageReport:
    """What opening a log found wrong. Empty lists mean the file was intact."""

    path: str
    bytes_total: int = 0
    records_recovered: int = 0
    damaged_regions: list[tuple[int, int, str]] = field(default_factory=list)
    """(offset, length, reason) of every byte range that held no intact record."""
    torn_tail_bytes: int = 0
    """Bytes of an incomplete last record: a write cut short by a crash (never acknowledged)."""
    invalid_records: list[str] = field(default_factory=list)
    """Intact frames whose content could not be used (why, per record); skipped, not applied."""
    quarantined_copy: str | None = None
    """Where the damaged original was kept when mid-file damage forced a rewrite."""

    @property
    def damaged(self) -> bool:
        """Whether anything was lost or cut off."""
        return bool(self.damaged_regions or self.invalid_records) or self.torn_tail_bytes > 0

    def as_dict(self) -> dict:
        """Plain-data form for stats() and logs."""
        return {
            "path": self.path,
            "bytes_total": self.bytes_total,
            "records_recovered": self.records_recovered,
            "damaged_regions": [list(r) for r in self.damaged_regions],
            "damaged_bytes": sum(r[1] for r in self.damaged_regions),
            "torn_tail_bytes": self.torn_tail_bytes,
            "invalid_records": list(self.invalid_records),
            "quarantined_copy": self.quarantined_copy,
        }


def encode_record(payload: dict) -> bytes:
    """Frame one JSON payload."""
    body = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(body) > MAX_RECORD_BYTES:
        raise ValueError(f"record of {len(body)} bytes exceeds {MAX_RECORD_BYTES}")
    length = struct.pack("<I", len(body))
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(length + body)) + body


def scan_records(data: bytes, path: str = "") -> tuple[list[dict], DamageReport, int]:
    """Decode every intact record of a log image.

    Returns (payloads in file order, damage report, end offset of the last intact record).
    A damaged region is skipped by searching for the next MAGIC; an incomplete record that
    runs to the end of the file with no MAGIC after it is a torn tail.
    """
    report = DamageReport(path=path, bytes_total=len(data))
    payloads: list[dict] = []
    pos = 0
    good_end = 0
    size = len(data)
    while pos < size:
        reason = _frame_problem(data, pos)
        if reason is None:
            (_, length, _) = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size : pos + _HEADER.size + length]
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError):
                payload = None
            if isinstance(payload, dict):
                payloads.append(payload)
                pos += _HEADER.size + length
                good_end = pos
                continue
            reason = "undecodable_payload"
        nxt = data.find(MAGIC, pos + 1)
        if reason == "incomplete" and nxt < 0:
            report.torn_tail_bytes = size - pos
            break
        end = size if nxt < 0 else nxt
        report.damaged_regions.append((pos, end - pos, reason))
        pos = end
    report.records_recovered = len(payloads)
    return payloads, report, good_end


def _frame_problem(data: bytes, pos: int) -> str | None:
    """Why the frame at ``pos`` is not intact, or None when it is."""
    if len(data) - pos < _HEADER.size:
        return "incomplete" if MAGIC.startswith(data[pos : pos + 4]) else "bad_magic"
    magic, length, crc = _HEADER.unpack_from(data, pos)
    if magic != MAGIC:
        return "bad_magic"
    if length > MAX_RECORD_BYTES:
        return "bad_length"
    end = pos + _HEADER.size + length
    if end > len(data):
        return "incomplete"
    if zlib.crc32(data[pos + 4 : pos + 8] + data[pos + _HEADER.size : end]) != crc:
        return "bad_checksum"
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_log_atomically(path: Path, payloads: Iterator[dict] | list[dict]) -> None:
    """Write a complete log to ``path`` via a temp file, fsync and rename (crash safe)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        for payload in payloads:
            fh.write(encode_record(payload))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_log(path: Path) -> tuple[list[dict], DamageReport]:
    """Read a log without changing it (checkpoint snapshots are read this way)."""
    data = path.read_bytes()
    payloads, report, _ = scan_records(data, str(path))
    return payloads, report


class RecordLog:
    """An open, append-only log file. ``append`` returns only once the record is on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "ab")  # noqa: SIM115 - held open for the log's lifetime

    @classmethod
    def open(cls, path: Path) -> tuple[RecordLog, list[dict], DamageReport]:
        """Open (or create) a log, recovering every intact record.

        A torn tail is cut off (it was never acknowledged). Mid-file damage is reported, the
        damaged original is kept beside the log as ``<name>.damaged-<n>`` for forensics and
        the log is rewritten from the intact records, so later appends follow clean data.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes() if path.exists() else b""
        payloads, report, good_end = scan_records(data, str(path))
        if report.damaged_regions:
            copy = _free_name(path, "damaged")
            os.replace(path, copy)
            report.quarantined_copy = str(copy)
            write_log_atomically(path, payloads)
        elif report.torn_tail_bytes:
            with open(path, "r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        if report.damaged_regions:
            log.error(
                "buffer store %s is damaged; recovered every intact record: %s",
                path,
                report.as_dict(),
            )
        elif report.torn_tail_bytes:
            log.warning(
                "buffer store %s ended in a torn (unacknowledged) write; cut %d bytes",
                path,
                report.torn_tail_bytes,
            )
        return cls(path), payloads, report

    def append(self, payloads: list[dict]) -> int:
        """Append records with one write and one fsync; returns the bytes written."""
        blob = b"".join(encode_record(p) for p in payloads)
        start = self._fh.tell()
        try:
            self._fh.write(blob)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError:
            # Disk full or I/O error: cut the partial record so later appends follow clean
            # data, then report the failure (nothing was acknowledged).
            with contextlib.suppress(OSError):  # closes even when the final flush fails
                self._fh.close()
            with open(self.path, "r+b") as fh:
                fh.truncate(start)
            self._fh = open(self.path, "ab")  # noqa: SIM115
            raise
        return len(blob)

    def size(self) -> int:
        """Current file size in bytes."""
        return self._fh.tell()

    def replace_with(self, payloads: list[dict]) -> None:
        """Atomically replace the whole log (compaction, restore) and reopen it for appends."""
        self._fh.close()
        write_log_atomically(self.path, payloads)
        self._fh = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        """Close the file (appends are already durable)."""
        self._fh.close()


def _free_name(path: Path, tag: str) -> Path:
    n = 0
    while True:
        candidate = path.with_name(f"{path.name}.{tag}-{n}")
        if not candidate.exists():
            return candidate
        n += 1
