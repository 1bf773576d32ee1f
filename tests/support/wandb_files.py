"""Read an offline W&B run's ``run-<id>.wandb`` file back (tests only).

wandb (0.31) ships no Python reader for its transaction log; the format is LevelDB's log
format (32 KiB blocks of CRC-checked chunks) after a 7-byte ``:W&B`` header, each whole record a
``wandb_internal.Record`` protobuf. This reader checks every chunk's CRC, so a file it reads
is one wandb wrote whole.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32768
CHUNK_HEADER = 7  # crc32 (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
MAGIC = struct.pack("<4sH", b":W&B", 0xBEE1)
FILE_HEADER_LEN = 7  # magic, then a version byte


def records(path: Path) -> Iterator[object]:
    """Every ``wandb_internal.Record`` of a .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[: len(MAGIC)] == MAGIC, f"{path}: not a W&B transaction log"
    offset, pending = FILE_HEADER_LEN, b""
    while offset + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < CHUNK_HEADER:  # the block's tail is padding
            offset += left_in_block
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, offset)
        if crc == 0 and length == 0 and kind == 0:  # zero padding at the end of a block
            offset += left_in_block
            continue
        body = data[offset + CHUNK_HEADER : offset + CHUNK_HEADER + length]
        assert zlib.crc32(bytes([kind]) + body) & 0xFFFFFFFF == crc, f"{path}@{offset}: bad CRC"
        offset += CHUNK_HEADER + length
        if kind == FULL:
            pending = body
        elif kind == FIRST:
            pending = body
            continue
        elif kind == MIDDLE:
            pending += body
            continue
        else:
            pending += body
        record = pb.Record()
        record.ParseFromString(pending)
        yield record


def history(path: Path) -> dict[int, dict[str, object]]:
    """The logged history of a .wandb file: step -> {key: value}."""
    out: dict[int, dict[str, object]] = {}
    for record in records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row: dict[str, object] = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        out[int(row.get("_step", record.history.step.num))] = row
    return out


def run_records(path: Path) -> list[object]:
    """The ``run`` records of a .wandb file (id, resume point, starting step)."""
    return [r.run for r in records(path) if r.WhichOneof("record_type") == "run"]


def offline_runs(wandb_dir: Path) -> list[Path]:
    """The .wandb files of every offline attempt under ``<dir>/wandb``, oldest first (by the
    run record's start time: directory names collide within a second and gain a suffix)."""
    files = [
        f for f in Path(wandb_dir).glob("offline-run-*/run-*.wandb") if not f.parent.is_symlink()
    ]
    return sorted(files, key=lambda f: run_records(f)[0].start_time.ToNanoseconds())
