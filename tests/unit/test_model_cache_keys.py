"""The tiny model's cache keys cover the code that builds and trains it.

A cached warm start is reused whenever its key matches; if an edit of the training code (or of
the prompts and responses it trains on) left the key unchanged, every test and run would keep
using the model the old code made, and a warm-start regression would go unseen.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from azr.config import TinyModelConfig
from azr.tasks import Role, TaskType
from azr.tiny import build, warm_start
from azr.tiny.data import WarmExample
from azr.tiny.warm_start import WARM_START_CODE, warm_start_key

TINY = TinyModelConfig(warm_start_steps=10)
EXAMPLES = [WarmExample(TaskType.DEDUCTION, Role.PROPOSE, "p", "r", group="propose")]


def edited_copy(module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `module`'s source, as the cache key reads it, one comment line longer."""
    real = importlib.util.find_spec
    spec = real(module)
    assert spec is not None and spec.origin is not None
    copy = tmp_path / Path(spec.origin).name
    copy.write_text(Path(spec.origin).read_text() + "\n# an edit\n")

    def find_spec(name: str, *args, **kwargs):
        found = real(name, *args, **kwargs)
        if name == module:
            found = importlib.util.spec_from_file_location(name, copy)
        return found

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_the_warm_start_key_is_stable_for_the_same_inputs():
    first = warm_start_key("tiny-base-x", TINY, EXAMPLES)
    assert first.startswith("tiny-warm-") and len(first) == len("tiny-warm-") + 16
    assert warm_start_key("tiny-base-x", TINY, EXAMPLES) == first
    assert warm_start_key("tiny-base-y", TINY, EXAMPLES) != first
    more_steps = TINY.model_copy(update={"warm_start_steps": 11})
    assert warm_start_key("tiny-base-x", more_steps, EXAMPLES) != first
    other = [WarmExample(TaskType.DEDUCTION, Role.PROPOSE, "p", "r2", group="propose")]
    assert warm_start_key("tiny-base-x", TINY, other) != first


@pytest.mark.parametrize("module", WARM_START_CODE)
def test_an_edit_of_the_training_code_changes_the_warm_start_key(module, tmp_path, monkeypatch):
    before = warm_start_key("tiny-base-x", TINY, EXAMPLES)
    edited_copy(module, tmp_path, monkeypatch)
    assert warm_start_key("tiny-base-x", TINY, EXAMPLES) != before


def test_the_training_code_includes_the_loop_its_data_and_the_prompts():
    assert {"azr.tiny.warm_start", "azr.tiny.data", "azr.prompts"} <= set(WARM_START_CODE)
    assert warm_start.__name__ in WARM_START_CODE


@pytest.mark.parametrize("module", build.BASE_CODE)
def test_an_edit_of_the_build_code_changes_the_base_key(module, tmp_path, monkeypatch):
    corpus = ["def f(x):\n    return x"]
    before = build.base_key(TINY, corpus)
    assert build.base_key(TINY, corpus) == before
    edited_copy(module, tmp_path, monkeypatch)
    assert build.base_key(TINY, corpus) != before


def test_library_versions_are_part_of_the_code_identity():
    identity = build.code_identity(("azr.tiny.build",))
    assert set(identity) == {"azr.tiny.build", "torch", "transformers", "tokenizers"}
    assert identity["torch"].startswith("2.")
