"""TaskBuffers in process, on real files: seeding, dedup, sampling, eviction, checkpoints."""

from collections import Counter

import pytest

from azr.tasks import IDENTITY_INDUCTION, IDENTITY_TRIPLET, TaskType, Triplet
from buffer_service.buffers import COMPACT_MIN_DEAD, TaskBuffers

D, A, IND = TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION


def trip(i: int, step: int = 1, version: int = 0) -> Triplet:
    return Triplet(
        program=f"def f(x):\n    return x + {i}",
        input="1",
        output=str(1 + i),
        step=step,
        policy_version=version,
    )


def test_new_store_is_seeded_with_the_identity_tasks_at_step_zero(tmp_path):
    buffers = TaskBuffers(tmp_path, seed=0)
    assert buffers.entries(D) == [IDENTITY_TRIPLET] and buffers.entries(A) == [IDENTITY_TRIPLET]
    assert buffers.entries(IND) == [IDENTITY_INDUCTION]
    assert IDENTITY_TRIPLET.step == 0 and IDENTITY_INDUCTION.step == 0
    buffers.close()
    # Reopening does not seed again.
    assert TaskBuffers(tmp_path, seed=0).size(D) == 1


def test_dedup_and_provenance(tmp_path):
    buffers = TaskBuffers(tmp_path, seed=0)
    first = Triplet(
        program="def f(x):\n    return x * 2", input="3", output="6", step=4, policy_version=3
    )
    respaced = Triplet(
        program="def f(x) :  # double\n\n    return x*2",
        input=" 3 ",
        output="6",
        step=5,
        policy_version=4,
    )
    other_input = first.model_copy(update={"input": "4", "output": "8"})
    result = buffers.add_many(D, [first, respaced, other_input, trip(0, step=-3)])
    assert (result.added, result.duplicates) == (2, (1,))
    assert result.rejected == ((3, "negative_step_or_version"),)
    assert buffers.add_many(D, [respaced]).duplicates == (0,)
    stored = buffers.entries(D)[1:]
    assert stored == [first, other_input]
    assert (stored[0].step, stored[0].policy_version) == (4, 3)
    assert buffers.size(D) == 3 and buffers.size(A) == 1  # buffers are separate


def test_request_id_makes_a_retried_batch_report_the_same_result(tmp_path):
    buffers = TaskBuffers(tmp_path, seed=0)
    first = buffers.add_many(D, [trip(1), trip(2)], request_id="step1-d")
    retry = buffers.add_many(D, [trip(1), trip(2)], request_id="step1-d")
    assert first.added == 2 and not first.replayed
    assert retry == first.model_copy(update={"replayed": True})
    buffers.close()
    # The ledger is durable: a retry after a restart answers the same.
    assert TaskBuffers(tmp_path, seed=0).add_many(D, [trip(1)], request_id="step1-d") == retry


def test_references_are_distinct_and_uniform(tmp_path):
    buffers = TaskBuffers(tmp_path, seed=7)
    buffers.add_many(D, [trip(i) for i in range(19)])  # 20 entries with the seed
    counts: Counter[str] = Counter()
    draws = 3000
    for _ in range(draws):
        refs = buffers.sample_references(D, 6)
        assert len({r.program for r in refs}) == 6
        counts.update(r.program for r in refs)
    expected = draws * 6 / 20
    assert len(counts) == 20
    assert all(abs(c - expected) < 0.12 * expected for c in counts.values()), counts
    assert len(buffers.sample_references(D, 50)) == 20  # never more than the buffer holds


def test_sample_tasks_takes_this_steps_additions_first(tmp_path):
    buffers = TaskBuffers(tmp_path, seed=1)
    buffers.add_many(D, [trip(i, step=1) for i in range(40)])
    new = [trip(100 + i, step=2) for i in range(5)]
    buffers.add_many(D, new)
    batch = buffers.sample_tasks(D, 16)
    assert batch[:5] == new
    assert len({e.program for e in batch}) == 16  # the fill does not repeat entries
    assert all(e.step < 2 for e in batch[5:])
    # More new entries than the batch: a uniform subset of them.
    assert all(e.step == 2 for e in buffers.sample_tasks(D, 3))
    # A step with no additions yet has nothing new; new_first=False is plain uniform.
    assert not any(e.step == 3 for e in buffers.sample_tasks(D, 8, step=3))
    old = buffers.sample_tasks(D, 45, step=1)
    assert {e.program for e in old[:40]} == {trip(i).program for i in range(40)}
    assert len(buffers.sample_tasks(D, 45, new_first=False)) == 45
    # A buffer smaller than the batch fills by repeating (right after seeding).
    assert buffers.sample_tasks(A, 4) == [IDENTITY_TRIPLET] * 4


def test_fill_is_uniform_over_the_buffer(tmp_path):
    buffers = TaskBuffers(tmp_path, seed=3)
    buffers.add_many(D, [trip(i, step=1) for i in range(29)])
    counts = Counter(e.program for _ in range(2000) for e in buffers.sample_tasks(D, 3, step=9))
    expected = 2000 * 3 / 30
    assert len(counts) == 30
    assert all(abs(c - expected) < 0.2 * expected for c in counts.values()), counts


def test_size_cap_evicts_the_oldest_and_survives_reopening(tmp_path):
    buffers = TaskBuffers(tmp_path, seed=0, max_size=5)
    result = buffers.add_many(D, [trip(i, step=i + 1) for i in range(7)])
    assert (result.added, result.evicted) == (7, 3)  # the seed and trip(0), trip(1)
    assert buffers.entries(D) == [trip(i, step=i + 1) for i in range(2, 7)]
    # An evicted entry is no longer a duplicate: it may come back, as the newest.
    assert buffers.add_many(D, [trip(0, step=1)]).added == 1
    assert buffers.entries(D)[-1] == trip(0, step=1) and buffers.entries(D)[0] == trip(3, step=4)
    expected = buffers.entries(D)
    buffers.close()
    assert TaskBuffers(tmp_path, seed=0, max_size=5).entries(D) == expected


def test_compaction_keeps_contents_order_and_ledger(tmp_path):
    buffers = TaskBuffers(tmp_path, seed=0, max_size=100)
    for b in range(COMPACT_MIN_DEAD // 500 + 2):
        buffers.add_many(D, [trip(b * 1000 + i) for i in range(500)], request_id=f"r{b}")
    assert buffers.stats()["store"]["bytes"] < 200_000  # rewritten, not 10k dead entries
    expected = buffers.entries(D)
    buffers.close()
    reopened = TaskBuffers(tmp_path, seed=0, max_size=100)
    assert reopened.entries(D) == expected
    assert reopened.add_many(D, [], request_id="r3").replayed


@pytest.mark.parametrize("later_steps", [1, 3])
def test_restore_at_step_k_gives_the_same_contents_and_samples(tmp_path, later_steps):
    buffers = TaskBuffers(tmp_path / "store", seed=5, max_size=50)
    for step in range(1, 4):
        buffers.add_many(D, [trip(step * 100 + i, step=step) for i in range(20)], f"s{step}")
        buffers.add_many(
            IND,
            [
                IDENTITY_INDUCTION.model_copy(
                    update={"step": step, "program": f"def f(x):\n    return x  # {step}\n    pass"}
                )
            ],
        )
        buffers.sample_tasks(D, 8)  # sampling advances the RNG before the checkpoint
    buffers.checkpoint(tmp_path / "ckpt", step=3)
    contents = {t: buffers.entries(t) for t in TaskType}
    original = [buffers.sample_tasks(D, 16, step=4) for _ in range(3)]
    original_refs = buffers.sample_references(A, 6)
    for step in range(4, 4 + later_steps):  # the run goes on, then is rolled back
        buffers.add_many(D, [trip(step * 100 + i, step=step) for i in range(30)], f"s{step}")
    buffers.restore(tmp_path / "ckpt", step=3)
    assert {t: buffers.entries(t) for t in TaskType} == contents
    assert [buffers.sample_tasks(D, 16, step=4) for _ in range(3)] == original
    assert buffers.sample_references(A, 6) == original_refs
    # A rolled-back request id is applied again, not answered from the ledger.
    assert buffers.add_many(D, [trip(400, step=4)], "s4").added == 1
    buffers.close()
    # The restored state is what the store holds: a restart sees it too.
    reopened = TaskBuffers(tmp_path / "store", seed=5, max_size=50)
    assert reopened.entries(D) == (contents[D] + [trip(400, step=4)])[-50:]


def test_checkpoint_leaves_out_entries_of_later_steps(tmp_path):
    buffers = TaskBuffers(tmp_path / "store", seed=0)
    buffers.add_many(D, [trip(1, step=1), trip(2, step=2)])
    buffers.checkpoint(tmp_path / "ckpt", step=1)
    buffers.restore(tmp_path / "ckpt", step=1)
    assert buffers.entries(D)[1:] == [trip(1, step=1)]
    assert buffers.current_step == 1


def test_new_first_after_evictions_only_returns_live_entries(tmp_path):
    buffers = TaskBuffers(tmp_path, seed=2, max_size=6)
    buffers.add_many(D, [trip(i, step=1) for i in range(4)])
    buffers.add_many(D, [trip(10 + i, step=2) for i in range(8)])  # evicts 2 of its own
    live = buffers.entries(D)
    assert live == [trip(10 + i, step=2) for i in range(2, 8)]
    for _ in range(20):
        batch = buffers.sample_tasks(D, 4, step=2)
        assert len({e.program for e in batch}) == 4 and all(e in live for e in batch)
    batch = buffers.sample_tasks(D, 6, step=2)  # exactly the live new entries
    assert sorted(e.program for e in batch) == sorted(e.program for e in live)


def test_reference_sets_are_independent_draws(tmp_path):
    buffers = TaskBuffers(tmp_path, seed=4)
    buffers.add_many(A, [trip(i) for i in range(30)])
    sets = buffers.sample_reference_sets(A, 6, 64)
    assert len(sets) == 64 and all(len({e.program for e in s}) == 6 for s in sets)
    assert len({tuple(e.program for e in s) for s in sets}) > 60


def test_keys_from_another_key_scheme_are_recomputed_at_open(tmp_path):
    import json

    from buffer_service.buffers import LOG_NAME
    from buffer_service.record_log import encode_record

    # A record written by another interpreter: its stored keys mean nothing here.
    old = {
        "t": "add",
        "ks": "code-v1-cpython-399",
        "task": "deduction",
        "rid": None,
        "step": 1,
        "keys": ["stale"],
        "entries": [json.loads(trip(5).model_dump_json())],
        "result": None,
    }
    TaskBuffers(tmp_path, seed=0).close()
    with open(tmp_path / LOG_NAME, "ab") as fh:
        fh.write(encode_record(old))
    buffers = TaskBuffers(tmp_path, seed=0)
    assert buffers.size(D) == 2
    respaced = trip(5).model_copy(update={"program": "def f(x):  # same\n    return x+5"})
    assert buffers.add_many(D, [respaced]).duplicates == (0,)
    buffers.close()
    # The recomputed keys were written back (atomically, as a compaction): once is enough.
    from buffer_service.entries import KEY_SCHEME
    from buffer_service.record_log import read_log

    payloads, report = read_log(tmp_path / LOG_NAME)
    assert not report.damaged
    assert {p["ks"] for p in payloads if p["t"] == "add"} == {KEY_SCHEME}
    reopened = TaskBuffers(tmp_path, seed=0)
    assert reopened.entries(D) == buffers.entries(D)
    assert reopened.add_many(D, [respaced]).duplicates == (0,)
    reopened.close()
    # An unusable record is kept for forensics: no rewrite then (keys recomputed each open).
    with open(tmp_path / LOG_NAME, "ab") as fh:
        fh.write(encode_record({**old, "entries": [json.loads(trip(6).model_dump_json())]}))
        fh.write(encode_record({"t": "add", "task": "nonsense"}))
    for _ in range(2):
        again = TaskBuffers(tmp_path, seed=0)
        assert again.size(D) == 3 and len(again.stats()["recovery"]["invalid_records"]) == 1
        again.close()
