"""The trackers keep one timeline across a resume: records past the checkpoint are set aside
(kept), TensorBoard purges them, W&B rewinds the same run. Real TensorBoard event files (read
back with TensorBoard's EventAccumulator) and a real offline W&B run (its .wandb file read back
record by record); no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.wandb_files import history, offline_runs, run_records

from azr.config import load_config
from driver.trackers import Trackers, set_aside_after, wandb_mode


def _record(step: int, attempt: int) -> dict[str, float]:
    return {
        "step": step,
        "deduction/propose/valid_rate": step / 10 + attempt,
        "learner_result/entropy": 1.0 / step,
        "eval/cruxeval_o": 0.5,
    }


def _log(trackers: Trackers, steps: range, attempt: int) -> None:
    for step in steps:
        trackers.log(_record(step, attempt))


def _config(tmp_path: Path, *loggers: str):
    return load_config(
        overrides=[
            f"output_dir={tmp_path}",
            "run_name=run",
            f"metrics.loggers=[{','.join(loggers)}]",
        ]
    )


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_past_the_checkpoint_are_set_aside_in_a_side_file(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "x": s}) for s in range(1, 7)]
    log.write_text("\n".join(lines) + "\n" + '{"step": 7, "x"')  # a line cut short by a kill
    side = set_aside_after(log, 4)
    assert side is not None and side.parent == tmp_path
    assert side.name.startswith("metrics.abandoned-") and side.suffix == ".jsonl"
    assert [r["step"] for r in _jsonl(log)] == [1, 2, 3, 4]
    kept = side.read_text().splitlines()
    assert [json.loads(line)["step"] for line in kept[:2]] == [5, 6]
    assert kept[2] == '{"step": 7, "x"'  # kept as it was, not dropped
    # Nothing past the step: nothing moves, no side file.
    assert set_aside_after(log, 4) is None
    assert len(list(tmp_path.glob("metrics.abandoned-*"))) == 1


def test_a_second_resume_in_the_same_second_keeps_both_side_files(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 7)))
    first = set_aside_after(log, 5)
    second = set_aside_after(log, 4)
    assert first != second
    assert [r["step"] for r in _jsonl(first)] == [6]
    assert [r["step"] for r in _jsonl(second)] == [5]


def test_jsonl_and_tensorboard_hold_one_timeline_after_a_resume(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _config(tmp_path, "jsonl", "tensorboard")
    with Trackers.open(config, resumed_at=None) as trackers:
        _log(trackers, range(1, 7), attempt=0)  # killed after step 6 ...
    with Trackers.open(config, resumed_at=4) as trackers:  # ... resumed from step 4
        _log(trackers, range(5, 9), attempt=1)
    records = _jsonl(config.run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    (side,) = config.run_dir.glob("metrics.abandoned-*.jsonl")
    assert [r["step"] for r in _jsonl(side)] == [5, 6]
    events = EventAccumulator(str(config.run_dir / "tensorboard"))
    events.Reload()
    assert "deduction/propose/valid_rate" in events.Tags()["scalars"]
    for key in ("deduction/propose/valid_rate", "learner_result/entropy", "eval/cruxeval_o"):
        scalars = events.Scalars(key)
        assert [e.step for e in scalars] == list(range(1, 9)), key
        for event, record in zip(scalars, records, strict=True):
            assert event.value == pytest.approx(record[key]), (key, event.step)


def test_offline_wandb_resumes_the_same_run_rewound_to_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = _config(tmp_path, "wandb")
    with Trackers.open(config, resumed_at=None) as trackers:
        _log(trackers, range(1, 7), attempt=0)
    with Trackers.open(config, resumed_at=4) as trackers:
        _log(trackers, range(5, 9), attempt=1)
    state = json.loads((config.run_dir / "wandb-run.json").read_text())
    first, resumed = offline_runs(config.run_dir / "wandb")
    assert first.name == resumed.name == f"run-{state['id']}.wandb"  # one W&B run
    assert state["last_step"] == 8
    original = history(first)
    assert sorted(original) == list(range(1, 7))
    (run,) = run_records(resumed)
    # The resumed attempt tells W&B to rewind to step 4 (the abandoned 5, 6 stay archived)
    # and logs from step 5 on with the new values.
    assert run.branch_point.run == state["id"]
    assert run.branch_point.metric == "_step" and run.branch_point.value == 4
    again = history(resumed)
    assert sorted(again) == [5, 6, 7, 8]
    for step, row in again.items():
        assert row["deduction/propose/valid_rate"] == pytest.approx(step / 10 + 1)
        assert row["step"] == step


def test_a_resume_with_nothing_logged_past_the_checkpoint_continues_without_a_rewind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = _config(tmp_path, "wandb")
    with Trackers.open(config, resumed_at=None) as trackers:
        _log(trackers, range(1, 5), attempt=0)
    with Trackers.open(config, resumed_at=4) as trackers:
        _log(trackers, range(5, 7), attempt=0)
    _, resumed = offline_runs(config.run_dir / "wandb")
    (run,) = run_records(resumed)
    assert not run.HasField("branch_point")
    assert sorted(history(resumed)) == [5, 6]


def test_wandb_mode_respects_the_environment_and_defaults_to_offline_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_mode("auto") == "offline"  # no key anywhere
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password k3y\n")
    (tmp_path / "netrc").chmod(0o600)
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode("auto") == "offline"  # the user's WANDB_MODE wins
    assert wandb_mode("online") == "online"  # an explicit config wins over both
