"""The embedded tiny model: deterministic cached build, HF-loadable, chat template, tokenizer.

Builds go to per-test temporary cache dirs (a base build is ~5 s: tokenizer training plus a
random init); the warm-start test trains a handful of steps only.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from support import REPO_ROOT

from azr.config import ModelConfig, TinyModelConfig, load_config
from azr.cruxeval import load_cruxeval
from azr.models import ModelDirError, ensure_model
from azr.parsing import FormatError, normalize_block, parse_response
from azr.prompts import (
    propose_abduction_prompt,
    propose_deduction_prompt,
    propose_induction_prompt,
    render_chat,
)
from azr.tasks import IDENTITY_PROGRAM, IDENTITY_TRIPLET, Role, TaskType
from azr.tiny import data as warm_start_data
from azr.tiny import warm_start
from azr.tiny.build import (
    IM_END,
    IM_START,
    build_tiny_base,
)
from azr.tiny.families import FAMILIES

REPO = REPO_ROOT
SMALL = TinyModelConfig(
    vocab_size=1024,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=128,
    warm_start_steps=0,
)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return build_tiny_base(SMALL, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tokenizer(base_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_dir)


def test_build_is_deterministic_and_keyed_by_settings(base_dir: Path, tmp_path: Path):
    again = build_tiny_base(SMALL, tmp_path / "other")
    assert again.name == base_dir.name
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert digest(again / name) == digest(base_dir / name), name
    reseeded = build_tiny_base(SMALL.model_copy(update={"seed": 1}), tmp_path / "other")
    assert reseeded.name != base_dir.name
    assert digest(reseeded / "model.safetensors") != digest(base_dir / "model.safetensors")


def test_concurrent_callers_build_once(tmp_path: Path):
    config = ModelConfig(cache_dir=str(tmp_path), tiny=SMALL)
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: ensure_model(config), range(2)))
    assert paths[0] == paths[1]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [paths[0].name]
    mtime = (paths[0] / "model.safetensors").stat().st_mtime_ns
    assert ensure_model(config) == paths[0]  # cached: not rebuilt
    assert (paths[0] / "model.safetensors").stat().st_mtime_ns == mtime


def test_loadable_by_transformers_as_qwen2(base_dir: Path, tokenizer):
    from transformers import AutoModelForCausalLM

    config = json.loads((base_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["hidden_size"] == SMALL.hidden_size
    assert config["num_hidden_layers"] == SMALL.num_layers
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    assert model.config.vocab_size == len(tokenizer)
    ids = torch.tensor([tokenizer("def f(x):\n    return x")["input_ids"]])
    logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids(IM_END)


def test_chat_template_present(tokenizer):
    assert tokenizer.chat_template
    text = render_chat(tokenizer, "What does f return?")
    assert text == f"{IM_START}user\nWhat does f return?{IM_END}\n{IM_START}assistant\n"
    assert tokenizer.eos_token == IM_END
    for special in (IM_START, IM_END):
        assert len(tokenizer(special, add_special_tokens=False)["input_ids"]) == 1


def test_tokenizer_round_trips_code(tokenizer):
    records = load_cruxeval(SMALL.data_path)
    texts = [r.code for r in records[:200]] + [
        "s = 'naïve café — ∑ 🙂'\n\tx = {1: [2, (3,)]}\r\n",
        "    \n\n  trailing spaces   ",
    ]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    # Trained on code: a typical program is far shorter in tokens than in bytes.
    code = records[0].code
    assert len(tokenizer(code)["input_ids"]) < len(code.encode()) / 2


def test_model_path_is_validated(tmp_path: Path, base_dir: Path):
    assert ensure_model(ModelConfig(path=str(base_dir))) == base_dir.resolve()
    with pytest.raises(ModelDirError, match="not a directory"):
        ensure_model(ModelConfig(path=str(tmp_path / "missing")))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelDirError, match="no tokenizer"):
        ensure_model(ModelConfig(path=str(tmp_path)))


def test_warm_start_data_is_well_formed_and_from_the_warm_split():
    examples = warm_start_data.build_examples(seed=0)
    combos = {(ex.task, ex.role) for ex in examples}
    assert combos == set(warm_start_data.COMBOS)
    assert {ex.group for ex in examples} == set(warm_start_data.GROUPS)
    # Programs the model learns to write all come from the warm split (or are the AZR seed).
    warm = {f.program(p) for f in FAMILIES for p in f.split("warm")}
    known_programs = {normalize_block("python", p) for p in warm} | {IDENTITY_PROGRAM}
    written = set()
    for ex in examples:
        parsed = parse_response(ex.response, ex.task, ex.role)
        assert not isinstance(parsed, FormatError)
        assert parsed.program is None or parsed.program in known_programs
        written.add(parsed.program)
    assert len(written & known_programs) > len(warm) // 2
    assert warm_start_data.build_examples(seed=0) == examples


def test_warm_start_prompts_read_like_self_play_of_the_tiny_config():
    """The tiny model is prompt-sensitive: the proposer prompts of configs/tiny.yaml's self-play
    carry the same rules text (banned modules and builtins, timeout) as the warm start's, and the
    first induction prompt (the identity seed's) is a warm-start prompt verbatim."""
    config = load_config(REPO / "configs" / "tiny.yaml")
    ex = config.executor
    examples = warm_start_data.build_examples(seed=0)

    def rules(prompt: str) -> str:
        return prompt[prompt.index("## Rules for the program") :]

    for task, builder in (
        (TaskType.DEDUCTION, propose_deduction_prompt),
        (TaskType.ABDUCTION, propose_abduction_prompt),
    ):
        self_play = builder(
            [IDENTITY_TRIPLET],
            banned_modules=ex.banned_modules,
            banned_builtins=ex.banned_builtins,
            timeout_s=ex.timeout_s,
        )
        trained = {rules(e.prompt) for e in examples if (e.task, e.role) == (task, Role.PROPOSE)}
        assert trained == {rules(self_play)}, task
    induction = propose_induction_prompt(
        IDENTITY_PROGRAM, n_inputs=config.selfplay.induction_inputs, timeout_s=ex.timeout_s
    )
    assert induction in {e.prompt for e in examples}


@pytest.mark.slow
def test_warm_start_trains_caches_and_reports(tmp_path: Path, monkeypatch):
    # A short evaluation: this checks the plumbing, not the figures (see warm_start.main).
    monkeypatch.setattr(warm_start, "EVAL_PER_COMBO", 2)
    monkeypatch.setattr(warm_start, "EVAL_SAMPLES", 2)
    monkeypatch.setattr(warm_start, "EVAL_MAX_NEW_TOKENS", 24)
    tiny = SMALL.model_copy(update={"warm_start_steps": 12, "warm_start_batch_size": 2})
    config = ModelConfig(cache_dir=str(tmp_path), tiny=tiny)
    path = ensure_model(config)
    assert path.name.startswith("tiny-warm-")
    report = json.loads((path / "warm_start.json").read_text())
    assert report["steps"] == 12 and not report["capped"]
    assert report["loss_last"] < report["loss_first"]
    rates = [f"format_valid/{task}/{role}" for task, role in warm_start_data.COMBOS]
    assert set(report["eval"]) == {
        *rates, "deduction_accuracy", "proposal_valid_program_rate", "seconds",
    }  # fmt: skip
    # Rates over 2 prompts (EVAL_PER_COMBO) and 2 samples (EVAL_SAMPLES): 0, 1/2 or 1.
    for key in [*rates, "proposal_valid_program_rate"]:
        assert report["eval"][key] in (0.0, 0.5, 1.0), key
    # The figures are the model's: evaluated again they are the same, and the untrained base
    # (which never writes a well-formed response) scores exactly 0 on every one.
    again = warm_start.evaluate(path, seed=tiny.seed)
    assert {k: v for k, v in again.items() if k != "seconds"} == {
        k: v for k, v in report["eval"].items() if k != "seconds"
    }
    base = build_tiny_base(SMALL, tmp_path)
    untrained = warm_start.evaluate(base, seed=tiny.seed)
    assert {k: v for k, v in untrained.items() if k != "seconds"} == dict.fromkeys(
        [*rates, "deduction_accuracy", "proposal_valid_program_rate"], 0.0
    )
    assert digest(path / "model.safetensors") != digest(base / "model.safetensors")
    assert ensure_model(config) == path  # cached by its inputs: no second training run
