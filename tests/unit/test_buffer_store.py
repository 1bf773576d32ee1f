"""The buffer log on real files: framing, torn tails, corruption recovery, damage reports."""

import logging
import os

import pytest

from azr.tasks import TaskType, Triplet
from buffer_service.buffers import LOG_NAME, CheckpointError, TaskBuffers, checkpoint_file
from buffer_service.record_log import MAGIC, RecordLog, encode_record, scan_records

D = TaskType.DEDUCTION


def test_records_round_trip_and_append_is_durable(tmp_path):
    path = tmp_path / "x.log"
    log, payloads, report = RecordLog.open(path)
    assert payloads == [] and not report.damaged
    log.append([{"i": 1}, {"i": 2, "s": "é\x00\ud800"}])
    log.append([{"i": 3}])
    log.close()
    # Read back from a fresh file handle: what append acknowledged is in the file.
    _, payloads, report = RecordLog.open(path)
    assert payloads == [{"i": 1}, {"i": 2, "s": "é\x00\ud800"}, {"i": 3}]
    assert not report.damaged and report.records_recovered == 3


def test_magic_never_occurs_inside_a_payload():
    frame = encode_record({"s": MAGIC.decode("latin-1") * 3, "b": "\x00AZB"})
    assert frame.count(MAGIC) == 1


def test_scan_resynchronises_after_flipped_bytes_and_reports_a_torn_tail():
    frames = [encode_record({"i": i, "pad": "x" * 50}) for i in range(6)]
    data = bytearray(b"".join(frames))
    offsets = [sum(map(len, frames[:i])) for i in range(6)]
    data[offsets[1] + 20] ^= 0xFF  # payload byte of record 1: checksum mismatch
    data[offsets[3] + 5] ^= 0x40  # length field of record 3
    data = bytes(data[: offsets[5] + 15])  # record 5 cut short: a torn write
    payloads, report, good_end = scan_records(data)
    assert [p["i"] for p in payloads] == [0, 2, 4]
    assert [(off, reason) for off, _, reason in report.damaged_regions] == [
        (offsets[1], "bad_checksum"),
        (offsets[3], "incomplete"),
    ]
    assert report.torn_tail_bytes == 15 and good_end == offsets[5]


def _fill(store, batches: int, per_batch: int) -> list[list[Triplet]]:
    buffers = TaskBuffers(store, seed=0)
    written = []
    for b in range(batches):
        batch = [
            Triplet(
                program=f"def f(x):\n    return x * {b}", input=str(i), output=str(i * b), step=1
            )
            for i in range(per_batch)
        ]
        assert buffers.add_many(D, batch, request_id=f"b{b}").added == per_batch
        written.append(batch)
    buffers.close()
    return written


def test_truncated_and_flipped_store_recovers_every_intact_batch(tmp_path, caplog):
    written = _fill(tmp_path, batches=8, per_batch=5)
    path = tmp_path / LOG_NAME
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data)) if data.startswith(MAGIC, i)]
    # starts: 3 seed records, then batches 0..7. Flip a byte inside batch 2, cut batch 7.
    data[starts[3 + 2] + 40] ^= 0x01
    path.write_bytes(bytes(data[: starts[3 + 7] + 30]))
    with caplog.at_level(logging.ERROR, logger="buffer_service.record_log"):
        reopened = TaskBuffers(tmp_path, seed=0)
    expected = [written[b] for b in (0, 1, 3, 4, 5, 6)]
    assert reopened.entries(D)[1:] == [e for batch in expected for e in batch]
    recovery = reopened.stats()["recovery"]
    assert len(recovery["damaged_regions"]) == 1 and recovery["damaged_regions"][0][2] == (
        "bad_checksum"
    )
    assert recovery["torn_tail_bytes"] == 30
    assert "damaged" in caplog.text
    # The damaged original is kept for forensics; the live log was rewritten clean.
    assert os.path.exists(recovery["quarantined_copy"])
    reopened.add_many(D, written[2], request_id="again")  # batch 2 was lost: it can be re-added
    reopened.close()
    again = TaskBuffers(tmp_path, seed=0)
    assert not again.stats()["recovery"]["damaged_regions"]
    assert again.size(D) == 1 + 7 * 5


def test_a_store_with_nothing_intact_is_reported_not_silently_empty(tmp_path):
    _fill(tmp_path, batches=2, per_batch=3)
    path = tmp_path / LOG_NAME
    path.write_bytes(bytes(b ^ 0x5A for b in path.read_bytes()))
    reopened = TaskBuffers(tmp_path, seed=0)
    recovery = reopened.stats()["recovery"]
    assert recovery["damaged_bytes"] == recovery["bytes_total"] > 0
    assert reopened.size(D) == 1  # re-seeded with the identity triplet, and the damage reported


def test_intact_frame_with_unusable_content_is_skipped_and_reported(tmp_path):
    _fill(tmp_path, batches=1, per_batch=3)
    with open(tmp_path / LOG_NAME, "ab") as fh:
        fh.write(encode_record({"t": "add", "task": "nonsense"}))
    reopened = TaskBuffers(tmp_path, seed=0)
    assert reopened.size(D) == 4
    assert len(reopened.stats()["recovery"]["invalid_records"]) == 1


def test_damaged_checkpoint_is_refused_and_changes_nothing(tmp_path):
    _fill(tmp_path / "store", batches=2, per_batch=3)
    buffers = TaskBuffers(tmp_path / "store", seed=0)
    buffers.checkpoint(tmp_path / "ckpt", step=1)
    before = buffers.entries(D)
    later = Triplet(program="def f(x):\n    return 0", input="9", output="0", step=2)
    buffers.add_many(D, [later])
    ck = checkpoint_file(tmp_path / "ckpt", 1)
    data = bytearray(ck.read_bytes())
    data[-10] ^= 0x10
    ck.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        buffers.restore(tmp_path / "ckpt", 1)
    with pytest.raises(CheckpointError):
        buffers.restore(tmp_path / "ckpt", 2)
    assert buffers.entries(D) == [*before, later]


def test_a_failed_write_is_not_acknowledged_and_leaves_no_partial_record(tmp_path):
    import resource
    import signal

    buffers = TaskBuffers(tmp_path, seed=0)
    path = tmp_path / LOG_NAME
    size = path.stat().st_size
    big = [
        Triplet(program=f"def f(x):\n    return x + {i}", input="1", output=str(i + 1), step=1)
        for i in range(200)
    ]
    # A real "file too large" from the kernel, as on a full disk: the limit sits mid-record.
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, hard))
    try:
        with pytest.raises(OSError):
            buffers.add_many(D, big, request_id="too-big")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.stat().st_size == size and buffers.size(D) == 1
    assert buffers.add_many(D, big, request_id="too-big").added == 200  # not in the ledger
    buffers.close()
    reopened = TaskBuffers(tmp_path, seed=0)
    assert reopened.size(D) == 201 and not reopened.stats()["recovery"]["damaged_regions"]
