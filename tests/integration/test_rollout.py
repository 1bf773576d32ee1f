"""RolloutActor / RolloutGroup on the real vLLM CPU build inside a real local Ray cluster.

One module-scoped group of two actors (each one pinned thread, 64 MiB of KV cache) serves every
test, in any order: tests that change weights bump the version monotonically, and a test that
needs the checkpoint's weights on both actors asks for `pristine`, which puts them back (as a
new version) when an earlier test changed them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import ray
import torch
from support import MODEL_CACHE, REPO_ROOT

from actors.group import RolloutGroup, split_evenly
from actors.worker_extension import ExpectedReloadGaps
from azr.config import ModelConfig, RolloutConfig, SamplingConfig, TinyModelConfig
from azr.models import ensure_model
from azr.prompts import render_chat, solve_prompt
from azr.tasks import IDENTITY_TRIPLET, TaskType

pytestmark = pytest.mark.slow

REPO = REPO_ROOT
SCRATCH = REPO / ".scratch"
PROMPTS = [
    "def f(x):\n    return x",
    "def f(a, b):\n    return a + b * 2",
    "def f(s):\n    return s[::-1]",
    "def f(nums):\n    out = []\n    for n in nums:\n        out.append(n * n)\n    return out",
    "def f(text):\n    return text.upper()",
]
LONG_PROMPT = "\n".join(
    f"def g{i}(x, y):\n    z = [v * {i} for v in range(x)]\n    return sum(z) + y"
    for i in range(24)
)


@pytest.fixture(scope="module")
def model_path() -> Path:
    # Weights are replaced by the tests, so the un-warmed tiny model is enough (and cached).
    tiny = TinyModelConfig(warm_start_steps=0)
    return ensure_model(ModelConfig(cache_dir=str(MODEL_CACHE), tiny=tiny))


@pytest.fixture(scope="module")
def group(model_path: Path):
    for name in ("tmp", "ray", "vllm"):
        (SCRATCH / name).mkdir(parents=True, exist_ok=True)
    env = {
        "TMPDIR": str(SCRATCH / "tmp"),
        "VLLM_CACHE_ROOT": str(SCRATCH / "vllm"),
    }
    # address="local": a fresh cluster of our own, never another engineer's.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=str(SCRATCH / "ray"),
        runtime_env={"env_vars": env},
        log_to_driver=False,
    )
    config = RolloutConfig(
        num_actors=2,
        device="cpu",
        cpu_threads=1,
        kv_cache_memory_bytes=64 << 20,
        max_model_len=2048,
        dtype="float32",
    )
    rollout = RolloutGroup(str(model_path), config)
    yield rollout
    rollout.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def tokenizer(model_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="module")
def hf_model(model_path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def original_state(hf_model) -> dict[str, torch.Tensor]:
    """The checkpoint's parameters (HF names, tied weights once), before any test changes them."""
    return {n: p.detach().clone() for n, p in hf_model.named_parameters()}


@pytest.fixture
def pristine(group: RolloutGroup, original_state: dict[str, torch.Tensor]) -> int:
    """Both actors serve the checkpoint's weights at one version, which is returned."""
    versions = group.policy_versions()
    if versions == [0, 0]:
        return 0  # never updated
    version = max(versions) + 1
    group.update_weights(buckets(original_state, 2), version=version)
    return version


def hf_logprobs(model, state: dict[str, torch.Tensor], ids: list[int]) -> list[float]:
    """Reference: logprob of ids[1:] under `state`, computed by transformers in fp32."""
    model.load_state_dict(state, strict=False)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    picked = torch.log_softmax(logits.double(), dim=-1).gather(1, torch.tensor(ids[1:])[:, None])
    return picked[:, 0].tolist()


def perturbed_state(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """`state` plus seeded noise (a fixed function of the seed, whatever ran before)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        name: (p + 0.05 * torch.randn(p.shape, generator=gen)).contiguous()
        for name, p in state.items()
    }


def buckets(state: dict[str, torch.Tensor], count: int) -> list[ray.ObjectRef]:
    names = sorted(state)
    return [
        ray.put({n: state[n] for n in names[start:stop]})
        for start, stop in split_evenly(len(names), count)
    ]


def test_split_evenly_covers_in_order():
    assert split_evenly(5, 2) == [(0, 3), (3, 5)]
    assert split_evenly(1, 3) == [(0, 1), (1, 1), (1, 1)]


@pytest.mark.parametrize(
    ("layer", "tied", "shown"),
    [
        ("RotaryEmbedding", False, False),  # computed, never in a checkpoint
        ("ParallelLMHead", True, False),  # tied: shares the embedding, re-tied after reload
        ("ParallelLMHead", False, True),  # untied: its weight should have come
        ("QKVParallelLinear", True, True),
    ],
)
def test_reload_log_hides_only_layers_no_checkpoint_holds(layer, tied, shown):
    record = logging.LogRecord(
        "vllm", logging.WARNING, __file__, 1, "%s: Failed to load weights", (layer,), None
    )
    assert ExpectedReloadGaps(tied).filter(record) is shown


def test_engine_runs_pinned_in_process(group: RolloutGroup):
    infos = ray.get([actor.info.remote() for actor in group.actors])
    assert [i["device"] for i in infos] == ["cpu", "cpu"]
    assert all(len(i["cores"]) == 1 for i in infos)
    if len(os.sched_getaffinity(0)) >= 2:
        assert infos[0]["cores"] != infos[1]["cores"]
    assert all(i["engine_stats"] for i in infos)


def test_generate_honours_explicit_sampling(group: RolloutGroup, tokenizer, pristine: int):
    sampling = SamplingConfig(n=3, temperature=1.0, top_p=0.9, max_tokens=7, seed=11)
    first = group.generate(PROMPTS, sampling)
    assert len(first) == len(PROMPTS)
    for prompt, generation in zip(PROMPTS, first, strict=True):
        # Results come back in prompt order although they were spread over two actors.
        assert generation.prompt_token_ids == tokenizer(prompt)["input_ids"]
        assert len(generation.completions) == 3
        for completion in generation.completions:
            assert 1 <= len(completion.token_ids) <= 7
            assert len(completion.logprobs) == len(completion.token_ids)
            assert all(lp <= 0.0 for lp in completion.logprobs)
            assert completion.finish_reason in {"stop", "length"}
            assert completion.policy_version == pristine
        # n samples of one prompt are distinct draws, not copies.
        assert len({tuple(c.token_ids) for c in generation.completions}) > 1
    again = group.generate(PROMPTS, sampling)
    assert [[c.token_ids for c in g.completions] for g in again] == [
        [c.token_ids for c in g.completions] for g in first
    ]
    # Seeds follow the prompt's place in the batch, not the actor it landed on.
    single = ray.get(group.actors[0].generate.remote(PROMPTS, sampling))
    assert [[c.token_ids for c in g.completions] for g in single] == [
        [c.token_ids for c in g.completions] for g in first
    ]
    twice = group.generate([PROMPTS[0], PROMPTS[0]], sampling.model_copy(update={"n": 1}))
    assert twice[0].completions[0].token_ids != twice[1].completions[0].token_ids
    other_seed = group.generate(PROMPTS, sampling.model_copy(update={"seed": 12}))
    assert [[c.token_ids for c in g.completions] for g in other_seed] != [
        [c.token_ids for c in g.completions] for g in first
    ]


def test_sampled_logprobs_equal_prompt_logprobs_at_temperature_one(group: RolloutGroup):
    actor = group.actors[0]
    sampling = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_tokens=12, seed=3)
    generations = ray.get(actor.generate.remote(PROMPTS[:2], sampling))
    sequences, expected = [], []
    for generation in generations:
        for completion in generation.completions:
            sequences.append(generation.prompt_token_ids + completion.token_ids)
            expected.append(completion.logprobs)
    scored = ray.get(actor.prompt_logprobs.remote(sequences))
    for seq, want, got in zip(sequences, expected, scored, strict=True):
        assert len(got) == len(seq) - 1
        assert got[-len(want) :] == pytest.approx(want, abs=1e-4)


def test_bad_inputs_get_clear_errors_and_change_nothing(group: RolloutGroup):
    actor = group.actors[0]
    version = ray.get(actor.policy_version.remote())
    with pytest.raises(ray.exceptions.RayTaskError, match="not a dict"):
        ray.get(actor.update_weights.remote([ray.put(["not", "a", "bucket"])], version + 1))
    assert ray.get(actor.policy_version.remote()) == version
    # The engine still serves after the rejected call.
    generated = ray.get(actor.generate.remote([PROMPTS[0]], SamplingConfig(max_tokens=2, seed=0)))
    assert len(generated[0].completions[0].token_ids) >= 1


def test_a_prompt_the_engine_cannot_take_gets_empty_completions_not_an_error(group: RolloutGroup):
    """Generation never raises for length: the too-long prompt is skipped, the rest served."""
    too_long = "x = 1\n" * 3000
    sampling = SamplingConfig(n=2, max_tokens=2, seed=0)
    short, skipped = ray.get(group.actors[0].generate.remote([PROMPTS[0], too_long], sampling))
    assert len(skipped.prompt_token_ids) >= 2048
    assert [c.finish_reason for c in skipped.completions] == ["prompt_too_long"] * 2
    assert all(c.token_ids == [] and c.logprobs == [] for c in skipped.completions)
    assert all(len(c.token_ids) >= 1 for c in short.completions)
    # Seeds stay those of the prompt's place in the batch.
    alone = ray.get(group.actors[0].generate.remote([PROMPTS[0]], sampling))[0]
    assert [c.token_ids for c in alone.completions] == [c.token_ids for c in short.completions]


def test_engines_stop_at_eos_and_the_chat_templates_end_of_turn(group: RolloutGroup, tokenizer):
    infos = group.infos()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(i["stop_token_ids"] == [im_end] for i in infos)  # tiny: EOS is the end-of-turn
    assert all(i["max_model_len"] == 2048 and i["dtype"] == "float32" for i in infos)


def test_an_update_that_does_not_match_the_model_is_refused_before_loading(
    group: RolloutGroup, tokenizer, original_state, pristine: int
):
    actor = group.actors[0]
    ids = tokenizer(PROMPTS[3])["input_ids"]
    before = ray.get(actor.prompt_logprobs.remote([ids]))[0]
    state = perturbed_state(original_state, seed=3)
    missing = {n: t for n, t in state.items() if n != "model.layers.1.mlp.down_proj.weight"}
    misnamed = {(n + "s" if n == "model.norm.weight" else n): t for n, t in state.items()}
    cases = [
        (missing, r"missing 1: model.layers.1.mlp.down_proj.weight"),
        (misnamed, r"missing 1: model.norm.weight; not in the model 1: model.norm.weights"),
    ]
    for update, message in cases:
        with pytest.raises(ray.exceptions.RayTaskError, match=message):
            ray.get(actor.update_weights.remote(buckets(update, 2), pristine + 1))
    assert ray.get(actor.policy_version.remote()) == pristine
    assert ray.get(actor.prompt_logprobs.remote([ids]))[0] == before  # nothing was loaded


def test_update_weights_in_place_and_versioned(
    group: RolloutGroup, hf_model, tokenizer, original_state, pristine: int
):
    ids = tokenizer(PROMPTS[3])["input_ids"]
    before = ray.get(group.actors[0].prompt_logprobs.remote([ids]))[0]
    assert before == pytest.approx(hf_logprobs(hf_model, original_state, ids), abs=1e-4)

    state = perturbed_state(original_state, seed=1)
    version = pristine + 1
    reports = group.update_weights(buckets(state, 3), version=version)
    assert [r["version"] for r in reports] == [version, version]
    # What vLLM's weight loaders took: every tensor, every element (qkv and gate_up fused).
    assert all(r["tensors"] == len(state) for r in reports)
    assert all(r["elements_loaded"] == sum(t.numel() for t in state.values()) for r in reports)
    assert all(0 < r["parameters_loaded"] < len(state) for r in reports)
    assert group.policy_versions() == [version, version]

    want = hf_logprobs(hf_model, state, ids)
    for actor in group.actors:
        after = ray.get(actor.prompt_logprobs.remote([ids]))[0]
        assert after == pytest.approx(want, abs=1e-4)
        assert max(abs(a - b) for a, b in zip(after, before, strict=True)) > 1e-2
    generated = group.generate(PROMPTS[:2], SamplingConfig(n=1, max_tokens=4, seed=0))
    assert all(c.policy_version == version for g in generated for c in g.completions)
    with pytest.raises(ray.exceptions.RayTaskError, match="not newer"):
        ray.get(group.actors[0].update_weights.remote(buckets(state, 1), version))


def test_long_prompt_after_update_does_not_reuse_stale_kv(
    group: RolloutGroup, hf_model, original_state
):
    actor = group.actors[1]
    sampling = SamplingConfig(n=1, temperature=1.0, top_p=1.0, max_tokens=6, seed=5)
    # Fill the prefix cache with KV of the long prompt under the current weights.
    ray.get(actor.generate.remote([LONG_PROMPT], sampling))
    version = ray.get(actor.policy_version.remote()) + 1
    state = perturbed_state(original_state, seed=2)
    ray.get(actor.update_weights.remote(buckets(state, 2), version))

    generation = ray.get(actor.generate.remote([LONG_PROMPT], sampling))[0]
    assert len(generation.prompt_token_ids) > 300
    completion = generation.completions[0]
    assert completion.policy_version == version
    sequence = generation.prompt_token_ids + completion.token_ids
    want = hf_logprobs(hf_model, state, sequence)[-len(completion.token_ids) :]
    assert completion.logprobs == pytest.approx(want, abs=1e-4)


def test_layers_vllm_did_not_load_fail_the_reload(
    group: RolloutGroup, hf_model, tokenizer, original_state
):
    """Past the name check (as on a path without it): vLLM keeps a layer it got nothing for and
    half-builds a fused layer missing a shard; the reload names both and fails. A full update
    afterwards repairs the engine."""
    actor = group.actors[1]
    state = perturbed_state(original_state, seed=4)
    dropped = ("model.norm.weight", "model.layers.0.self_attn.v_proj.weight")
    partial = [(n, t) for n, t in state.items() if n not in dropped]

    def reload_directly(engine, tensors):
        return engine.llm.collective_rpc("azr_reload_weights", args=(iter(tensors),))[0]

    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(actor.__ray_call__.remote(reload_directly, partial))
    message = str(info.value)
    assert "did not load 2 layer(s)" in message
    assert "model.norm (RMSNorm): 0 of" in message
    assert "model.layers.0.self_attn.qkv_proj (QKVParallelLinear)" in message

    version = ray.get(actor.policy_version.remote()) + 1
    ray.get(actor.update_weights.remote(buckets(state, 2), version))
    ids = tokenizer(PROMPTS[3])["input_ids"]
    after = ray.get(actor.prompt_logprobs.remote([ids]))[0]
    assert after == pytest.approx(hf_logprobs(hf_model, state, ids), abs=1e-4)


@pytest.fixture(scope="module")
def base_layout_model(tmp_path_factory) -> Path:
    """The warm-started tiny model (it ends its turns with <|im_end|>) re-labelled as a base
    checkpoint: EOS <|endoftext|> in the tokenizer, config and generation config, while the
    chat template still ends a turn with <|im_end|> (Qwen2.5 base models look like this)."""
    source = ensure_model(ModelConfig(cache_dir=str(MODEL_CACHE)))
    target = tmp_path_factory.mktemp("base-layout") / "model"
    shutil.copytree(source, target)
    tokenizer_config = json.loads((target / "tokenizer_config.json").read_text())
    tokenizer_config["eos_token"] = "<|endoftext|>"
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(target).convert_tokens_to_ids("<|endoftext|>")
    for name in ("config.json", "generation_config.json"):
        data = json.loads((target / name).read_text())
        data["eos_token_id"] = eos
        (target / name).write_text(json.dumps(data))
    return target


def test_generation_stops_at_the_chat_templates_end_of_turn(group, base_layout_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_layout_model)
    eos, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    assert tokenizer.eos_token_id == eos != im_end
    config = RolloutConfig(
        device="cpu",
        dtype="float32",
        kv_cache_memory_bytes=32 << 20,
        max_model_len=1024,
        num_cpus=0,
    )
    engine = RolloutGroup(str(base_layout_model), config)
    try:
        assert engine.infos()[0]["stop_token_ids"] == sorted([eos, im_end])
        prompts = [
            render_chat(tokenizer, solve_prompt(task, IDENTITY_TRIPLET))
            for task in (TaskType.DEDUCTION, TaskType.ABDUCTION)
        ]
        sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=300, seed=0)
        completions = [c for g in engine.generate(prompts, sampling) for c in g.completions]
    finally:
        engine.shutdown()
    # The warm-started model ends its answers with <|im_end|>: each completion stops there.
    for completion in completions:
        assert completion.finish_reason == "stop"
        assert completion.token_ids[-1] == im_end
        assert im_end not in completion.token_ids[:-1] and eos not in completion.token_ids
        assert completion.text.rstrip().endswith("</answer>")
