"""Weight sync: learner (FSDP2, 2 ranks) → real vLLM CPU rollout engine through Ray's object store."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import ray
import torch
from support import MODEL_CACHE
from support.learner import fixed_batch

from actors.group import RolloutGroup
from azr.config import LearnerConfig, ModelConfig, RolloutConfig, SamplingConfig, TinyModelConfig
from azr.models import ensure_model
from azr.tasks import TrainSample
from driver.runtime import GuardedLearner, RunFailed
from driver.sync_check import SyncVerifier, probe_token_ids
from learner.checkpoint import load_hf_weights
from learner.group import LearnerDiedError, LearnerGroup, WeightSyncError
from learner.weight_buckets import split_into_buckets, tensor_bytes

BUCKET_MB = 1


def test_buckets_keep_order_and_respect_the_size():
    state = {f"p{i}": torch.zeros(n) for i, n in enumerate([10, 200, 30, 30, 5, 400, 1, 1])}
    limit = 100 * 4  # bytes: 100 fp32 values
    buckets = list(split_into_buckets(state, limit))
    assert [name for b in buckets for name in b] == list(state)
    for bucket in buckets:
        size = sum(tensor_bytes(t) for t in bucket.values())
        assert size <= limit or len(bucket) == 1  # an over-size tensor travels alone
    assert [list(b) for b in buckets] == [["p0"], ["p1"], ["p2", "p3", "p4"], ["p5"], ["p6", "p7"]]


@pytest.fixture(scope="module")
def tiny_model() -> str:
    # The shared tiny base (no warm start): a real byte-level BPE tokenizer that vLLM loads.
    config = ModelConfig(cache_dir=str(MODEL_CACHE), tiny=TinyModelConfig(warm_start_steps=0))
    return str(ensure_model(config))


@pytest.fixture(scope="module")
def rollout(ray_cluster, tiny_model):
    config = RolloutConfig(
        device="cpu", dtype="float32", kv_cache_memory_bytes=64 << 20, max_model_len=512
    )
    group = RolloutGroup(tiny_model, config)
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def learner(ray_cluster, tiny_model):
    config = LearnerConfig(num_workers=2, lr=1e-3, sync_bucket_mb=BUCKET_MB, init_timeout_s=120)
    group = LearnerGroup(tiny_model, config, seed=0)
    yield group
    group.shutdown()


def rollout_logprobs(group: RolloutGroup, token_ids: list[list[int]]) -> list[list[float]]:
    return ray.get(group.actors[0].prompt_logprobs.remote(token_ids))


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


@pytest.mark.slow
def test_sync_makes_rollout_logprobs_equal_the_learner(rollout, learner, tiny_model):
    rng = random.Random(0)
    probe = [[rng.randrange(learner.vocab_size) for _ in range(n)] for n in (24, 9)]
    # Whatever the module's other tests did to the (shared) learner: start from agreement.
    start = max(rollout.policy_versions()) + 1
    learner.sync_weights(rollout, version=start)
    start_learner, start_rollout = learner.logprobs(probe), rollout_logprobs(rollout, probe)
    assert max_diff(start_learner, start_rollout) < 1e-4  # same weights, fp32 both sides

    for _ in range(2):
        learner.train_step(fixed_batch(vocab=learner.vocab_size))
    trained = learner.logprobs(probe)
    assert max_diff(trained, start_learner) > 1e-3
    assert rollout_logprobs(rollout, probe) == start_rollout  # not synced yet: stale

    result = learner.sync_weights(rollout, version=start + 1)
    synced = rollout_logprobs(rollout, probe)
    assert max_diff(synced, trained) < 1e-4
    assert max_diff(synced, start_rollout) > 1e-3
    assert rollout.policy_versions() == [start + 1] and result["version"] == start + 1
    assert result["rollout"][0]["version"] == start + 1

    # Every parameter went, in buckets of at most BUCKET_MB (a bigger tensor travels alone).
    state = load_hf_weights(Path(tiny_model))
    state.pop("lm_head.weight", None)  # tied to the embeddings: not sent twice
    expected = list(split_into_buckets(state, BUCKET_MB << 20))
    assert result["buckets"] == len(expected) > 1
    assert result["bytes"] == sum(tensor_bytes(t) for t in state.values())
    assert result["rollout"][0]["tensors"] == len(state)
    assert result["rollout"][0]["elements_loaded"] == sum(t.numel() for t in state.values())
    assert result["seconds"] > 0
    assert result["gbps"] == pytest.approx(result["bytes"] / result["seconds"] / 1e9, rel=1e-9)

    with pytest.raises(ValueError, match=f"weight version {start + 1} is not newer than"):
        learner.sync_weights(rollout, version=start + 1)


@pytest.mark.slow
def test_mismatch_kl_sees_synced_and_stale_weights(rollout, learner):
    """Train on the rollout's own samples: KL ≈ 0 right after a sync, clearly > 0 when stale."""
    version = int(learner.version) + 1
    learner.sync_weights(rollout, version=version)
    sampling = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_tokens=12, seed=3)
    generations = rollout.generate(["def f(x):\n    return", "assert f(3) =="], sampling)
    samples = [
        TrainSample(g.prompt_token_ids, c.token_ids, c.logprobs, advantage=1.0 - 2.0 * (i % 2))
        for g in generations
        for i, c in enumerate(g.completions)
        if c.token_ids
    ]
    assert samples and all(c.policy_version == version for g in generations for c in g.completions)
    fresh = learner.train_step(samples)
    stale = learner.train_step(samples)  # the learner moved on; the samples did not
    assert fresh["mismatch_kl"] < 1e-6
    assert stale["mismatch_kl"] > 100 * max(fresh["mismatch_kl"], 1e-9)


def sampled_at(rollout, learner, temperature: float, seed: int) -> list[TrainSample]:
    """Fresh weights on the rollout, then its own samples at ``temperature`` (labelled so)."""
    learner.sync_weights(rollout, version=int(learner.version) + 1)
    sampling = SamplingConfig(n=3, temperature=temperature, top_p=1.0, max_tokens=24, seed=seed)
    prompts = ["def f(x):\n    return", "assert f(3) ==", "# propose a program\n"]
    return [
        TrainSample(
            g.prompt_token_ids,
            c.token_ids,
            c.logprobs,
            1.0 - 2.0 * (i % 2),
            temperature=temperature,
        )
        for g in rollout.generate(prompts, sampling)
        for i, c in enumerate(g.completions)
        if c.token_ids
    ]


@pytest.mark.slow
def test_mismatch_kl_is_near_zero_at_a_sampling_temperature_below_one(rollout, learner):
    """configs/tiny.yaml proposes at T = 0.6. The rollout's logprobs are of softmax(logits / T);
    the learner takes its own at the sample's T, so on fp32 they agree (was 0.02 at T = 1)."""
    samples = sampled_at(rollout, learner, 0.6, seed=7)
    assert sum(len(s.response_token_ids) for s in samples) > 40
    assert learner.train_step(samples)["mismatch_kl"] < 1e-4
    # The check can fail: the same kind of samples labelled T = 1 (the former learner) do not.
    samples = sampled_at(rollout, learner, 0.6, seed=8)
    at_one = [replace(s, temperature=1.0) for s in samples]
    assert learner.train_step(at_one)["mismatch_kl"] > 1e-3


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # zero-copy views
def test_sync_buckets_hold_exactly_the_checkpoint_weights(learner, tmp_path):
    """What rank 0 buckets for the rollout == the checkpoint, bit for bit, on both paths:
    shards through the object store (chosen for this model) and the collective gather."""
    learner.train_step(fixed_batch(seed=5, vocab=learner.vocab_size))
    learner.save_checkpoint(str(tmp_path / "ckpt"))
    saved = load_hf_weights(tmp_path / "ckpt")
    saved.pop("lm_head.weight", None)
    shard_path = learner._cpu_buckets(BUCKET_MB << 20)
    assert learner._shard_sync is True
    collective_path = learner._all("weight_buckets", BUCKET_MB << 20)[0]
    for refs, total, _ in (shard_path, collective_path):
        sent = {name: t for bucket in ray.get(refs) for name, t in bucket.items()}
        assert sent.keys() == saved.keys()
        for name, tensor in saved.items():
            assert torch.equal(sent[name], tensor), name
        assert total == sum(tensor_bytes(t) for t in saved.values())
    # For a bf16 engine the weights travel in bf16: half the bytes, each value rounded once.
    refs, half, _ = learner._cpu_buckets(BUCKET_MB << 20, "bfloat16")
    sent = {name: t for bucket in ray.get(refs) for name, t in bucket.items()}
    assert half * 2 == shard_path[1]
    for name, tensor in saved.items():
        assert sent[name].dtype == torch.bfloat16
        assert torch.equal(sent[name], tensor.to(torch.bfloat16)), name


# ---------------------------------------------------------------- a bad sync stops the run


class AlteredTransport:
    """The real rollout group, reached through a transport that changes the update on its way:
    the stand-in for a learner-side bug (a renamed or dropped parameter, tensors swapped).
    Learner, engines, loading and checks are all real."""

    def __init__(self, group: RolloutGroup, change):
        self.group = group
        self.change = change

    @property
    def actors(self):
        return self.group.actors

    @property
    def weight_dtype(self) -> str:
        return self.group.weight_dtype

    def start_update(self, bucket_refs, version):
        state = {name: t for bucket in ray.get(list(bucket_refs)) for name, t in bucket.items()}
        return self.group.start_update([ray.put(self.change(state))], version)

    def prompt_logprobs(self, token_ids):
        return self.group.prompt_logprobs(token_ids)


def run_sync(rollout, learner, tiny_model, change) -> dict:
    """One sync through the driver's guarded path (`GuardedLearner.sync`, checked at once)."""
    from transformers import AutoTokenizer

    transport = AlteredTransport(rollout, change)
    probe = probe_token_ids(AutoTokenizer.from_pretrained(tiny_model), max_model_len=512)
    verifier = SyncVerifier(probe, 1, 1e-3, learner.logprobs, transport.prompt_logprobs)
    guarded = GuardedLearner(learner, transport, (LearnerDiedError, WeightSyncError), verifier)
    learner.train_step(fixed_batch(seed=9, vocab=learner.vocab_size))  # weights worth sending
    return guarded.sync(max(rollout.policy_versions()) + 1)


def renamed(state: dict) -> dict:
    return {(n + "s" if n == "model.norm.weight" else n): t for n, t in state.items()}


def dropped(state: dict) -> dict:
    return {n: t for n, t in state.items() if n != "model.layers.0.mlp.down_proj.weight"}


def swapped(state: dict) -> dict:
    a, b = "model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"
    return {**state, a: state[b], b: state[a]}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (renamed, r"missing 1: model.norm.weight; not in the model 1: model.norm.weights"),
        (dropped, r"missing 1: model.layers.0.mlp.down_proj.weight"),
    ],
    ids=["misnamed", "missing"],
)
def test_a_misnamed_or_missing_parameter_stops_the_run(
    rollout, learner, tiny_model, change, message
):
    served = rollout.policy_versions()
    with pytest.raises(
        RunFailed,
        match=r"weight sync failed: rollout actor 0 failed: WeightSyncError: .*" + message,
    ):
        run_sync(rollout, learner, tiny_model, change)
    assert rollout.policy_versions() == served  # refused before loading: nothing changed


@pytest.mark.slow
def test_weights_loaded_into_the_wrong_layers_fail_the_probe_check(rollout, learner, tiny_model):
    """Names and shapes right, every layer loaded: only the probe comparison sees it."""
    with pytest.raises(RunFailed, match=r"is wrong: rollout engine 0's logprobs differ") as info:
        run_sync(rollout, learner, tiny_model, swapped)
    assert "tolerance 0.001" in str(info.value)
    report = run_sync(rollout, learner, tiny_model, lambda state: state)  # a correct sync
    assert report["verify_mean_abs"] < 1e-4 and report["verify_max_abs"] < 1e-3
