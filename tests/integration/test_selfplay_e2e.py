"""End to end: `driver.loop.train` with real Ray, vLLM (CPU build), FSDP2 over gloo (two
learner workers), the process sandbox executor pool and the durable buffer actor: sync mode
and prompts that must fit a small context. Async mode and resume run through the CLI, as users
run them (test_resume.py; its async runs with two learner workers too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support import MODEL_CACHE

from azr.config import load_config
from azr.cruxeval import load_cruxeval
from azr.models import ensure_model
from azr.step_metrics import BUDGET_EVENTS
from azr.tasks import TaskType
from buffer_service.buffers import TaskBuffers
from driver.loop import claim_run_dir, train
from driver.runtime import BufferClient
from learner.checkpoint import load_hf_weights
from learner.weight_buckets import tensor_bytes

pytestmark = pytest.mark.slow

GROUPS = [f"{t}/{r}" for t in ("deduction", "abduction", "induction") for r in ("propose", "solve")]
SMALL = [
    f"model.cache_dir={MODEL_CACHE}",  # the checkout's own cache, never $HOME's
    "selfplay.batch_size=4",
    "selfplay.mc_samples=3",
    "selfplay.eval_every=2",
    "selfplay.eval_size=4",
    "learner.num_workers=2",
]


def _config(tmp: Path, name: str, *extra: str):
    return load_config(overrides=[f"output_dir={tmp}", f"run_name={name}", *SMALL, *extra])


def _records(config) -> list[dict]:
    path = config.run_dir / config.metrics.log_file
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def sync_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sync")
    config = _config(tmp, "sync", "selfplay.steps=2")
    summary = train(config)
    return config, summary, _records(config)


def test_sync_mode_runs_every_phase_for_all_six_groups(sync_run):
    config, summary, records = sync_run
    # First the untrained policy's evaluation (step 0, before any update), then one per step.
    baseline, records = records[0], records[1:]
    assert baseline["step"] == 0
    assert {"eval/probe/deduction", "eval/probe/induction", "eval/cruxeval_o"} <= set(baseline)
    assert all(k == "step" or k.startswith(("eval/", "time/eval")) for k in baseline), baseline
    assert [r["step"] for r in records] == [1, 2]
    assert summary["policy_version"] == 2 and summary["steps"] == 2
    batch = config.selfplay.batch_size
    weights = load_hf_weights(ensure_model(config.model))  # the cached model the run used
    weights.pop("lm_head.weight", None)  # tied to the embeddings: not sent
    for record in records:
        for phase in ("generate_propose", "generate_solve", "execute", "learner", "sync_seconds"):
            assert record[f"time/{phase}"] > 0, phase
        for group in GROUPS:
            # One sample per proposal and per solved task (rollout.solve.n = 1).
            assert record[f"trr/{group}/count"] == batch, group
            assert f"trr/{group}/mean" in record and f"trr/{group}/advantage_abs_mean" in record
        for task in ("deduction", "abduction", "induction"):
            outcomes = [v for k, v in record.items() if k.startswith(f"{task}/propose/outcome/")]
            assert sum(outcomes) == batch, task  # every proposal has exactly one outcome
            assert record[f"{task}/solve/count"] == batch, task
        # Every sample of the step trains: 3 task types x (proposals + solves).
        assert record["learner_result/admitted"] == record["learner_result/samples"] == 6 * batch
        assert record["learner_result/staleness_max"] == 0  # sync: trained on its own weights
        # tiny.yaml proposes at T = 0.6: the learner's logprobs are taken at each sample's
        # temperature, so on fp32 they equal the engine's (at T = 1 this was 0.02).
        assert record["learner_result/mismatch_kl"] < 1e-4
        assert record["sync/bytes"] == sum(tensor_bytes(t) for t in weights.values())
    # The warm-started tiny model writes well-formed answers the executor scores.
    assert any(r[f"{t}/solve/format_ok"] > 0 for r in records for t in ("deduction", "abduction"))
    assert {"eval/cruxeval_o", "eval/cruxeval_i", "eval/probe/abduction"} <= set(records[1])
    checkpoint = Path(summary["checkpoint"])
    assert (checkpoint / "driver.json").exists() and (checkpoint / "buffer").is_dir()
    assert (checkpoint / "learner").is_dir()
    assert yaml.safe_load((checkpoint / "config.yaml").read_text())["run_name"] == "sync"


def test_a_new_run_never_reuses_an_earlier_runs_directory(tmp_path):
    """Reusing it would reload the earlier run's durable buffers into the new one."""
    config = _config(tmp_path, "tiny")
    assert claim_run_dir(config).run_dir == tmp_path / "tiny"  # nothing there yet
    (tmp_path / "tiny").mkdir()
    assert claim_run_dir(config).run_dir == tmp_path / "tiny"  # empty: free to use
    (tmp_path / "tiny" / "buffer").mkdir()
    (tmp_path / "tiny-2").mkdir()
    (tmp_path / "tiny-2" / "metrics.jsonl").write_text("{}\n")
    claimed = claim_run_dir(config)
    assert claimed.run_name == "tiny-3" and claimed.run_dir == tmp_path / "tiny-3"
    assert claimed.selfplay == config.selfplay  # only the name changes


def test_prompts_fit_a_small_max_model_len_by_construction(tmp_path):
    """max_model_len 1024 with K = 6: proposer prompts with six CRUXEval references run past
    the 768-token proposer budget (1024 − 256), and the 344-token solver budget (1024 − 680)
    is too small for the longest CRUXEval tasks in the buffers. Three steps run without an
    exception; references are dropped, over-long buffer tasks kept out, and every step says
    how many. (`prompt_too_long` rejections of new proposals: tests/unit/test_selfplay_step.py,
    the tiny model's own proposals are all short.)"""
    rows = sorted(load_cruxeval(), key=lambda r: len(r.code) + len(r.input) + len(r.output))
    triplets = [row.triplet for row in rows[:30] + rows[-10:]]
    buffer_dir = tmp_path / "buffer"
    buffers = TaskBuffers(buffer_dir, seed=0)
    for task in (TaskType.DEDUCTION, TaskType.ABDUCTION):
        assert BufferClient.local(buffers).add(task, triplets) == 40
    buffers.close()
    config = _config(
        tmp_path,
        "budget",
        "selfplay.steps=3",
        "selfplay.eval_every=0",
        "learner.num_workers=1",  # prompts are the rollout's business: one learner is enough
        "selfplay.num_references=6",
        "rollout.max_model_len=1024",
        "rollout.solve.max_tokens=680",  # the identity induction solve prompt: 334 tokens
        f"buffer.dir={buffer_dir}",
    )
    summary = train(config)
    records = _records(config)
    assert summary["steps"] == 3 and [r["step"] for r in records] == [1, 2, 3]
    tasks = ("deduction", "abduction", "induction")
    for record in records:
        assert {f"{t}/budget/{e}" for t in tasks for e in BUDGET_EVENTS} <= record.keys()
        assert record["deduction/budget/references_dropped"] > 0
        assert record["abduction/budget/references_dropped"] > 0
    skipped = sum(r[f"{t}/budget/buffer_tasks_too_long"] for r in records for t in tasks)
    assert skipped > 0
