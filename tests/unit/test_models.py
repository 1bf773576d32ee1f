"""`model.path` as users write it: a local HF directory or a hub id (resolved per node).

No hub is reachable here: the hub-id case uses a real Hugging Face cache layout in a temporary
directory (what `huggingface_hub` leaves after a download), and the missing case runs with the
hub offline so it fails at once instead of waiting on the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import constants

from azr.config import ModelConfig
from azr.models import ModelDirError, ensure_model, resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_checkpoint(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (directory / "tokenizer.json").write_text("{}")
    return directory


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def cache_snapshot(cache: Path, repo_id: str) -> Path:
    """The folders huggingface_hub writes for a downloaded model repo."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return write_checkpoint(repo / "snapshots" / COMMIT)


def test_local_directory_is_used_as_is(tmp_path: Path):
    checkpoint = write_checkpoint(tmp_path / "Qwen2.5-7B-Coder")
    assert resolve_model(str(checkpoint)) == checkpoint.resolve()
    assert ensure_model(ModelConfig(path=str(checkpoint))) == checkpoint.resolve()


def test_a_local_directory_wins_over_a_hub_id_of_the_same_name(
    tmp_path: Path, hub_cache: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    write_checkpoint(tmp_path / "org" / "model")
    cache_snapshot(hub_cache, "org/model")
    assert resolve_model("org/model") == (tmp_path / "org" / "model").resolve()


def test_hub_id_resolves_from_the_local_cache(hub_cache: Path):
    snapshot = cache_snapshot(hub_cache, "Qwen/Qwen2.5-7B-Coder")
    assert resolve_model("Qwen/Qwen2.5-7B-Coder") == snapshot.resolve()


def test_missing_hub_id_names_the_id(hub_cache: Path):
    with pytest.raises(ModelDirError, match="'Qwen/Qwen2.5-14B-Coder' is not a local directory"):
        resolve_model("Qwen/Qwen2.5-14B-Coder")


@pytest.mark.parametrize("path", ["./missing/model", "/nowhere/at/all", "a/b/c"])
def test_missing_local_paths_are_not_taken_for_hub_ids(path: str, hub_cache: Path):
    with pytest.raises(ModelDirError, match="is not a directory on this node"):
        resolve_model(path)


def test_a_directory_without_weights_config_or_tokenizer_is_refused(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelDirError, match="no tokenizer"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(ModelDirError, match="no config.json"):
        resolve_model(str(tmp_path))
