"""The NCCL receiver in the vLLM workers (actors/worker_extension.py), on CPU.

The GPU path needs vLLM's GPU build and two devices; what can go wrong without them is the
bookkeeping, and that is checked here with a stand-in communicator (it hands over the tensors a
learner's rank 0 would broadcast, in order): the rank each worker takes in the learner's group,
one receive buffer per meta with the meta's dtype and shape on the worker's device, tensors
loaded in meta order as they arrive (one in flight, not the whole model), the tied head
re-tied, and every parameter of the learner's model landing in the receiver.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from support.learner import LEARNER_SHAPE, TINY_VOCAB

from actors.weight_check import WeightSyncError
from actors.worker_extension import WeightSyncExtension
from azr.tiny.build import init_qwen2
from learner.nccl_sync import parameter_metas


class StandInCommunicator:
    """Plays NCCL's broadcast on the receiving side: each call receives the next sent tensor."""

    def __init__(self, sent: list[torch.Tensor]) -> None:
        self.sent = list(sent)
        self.calls: list[tuple[torch.Size, torch.dtype, torch.device, int]] = []

    def broadcast(self, tensor: torch.Tensor, src: int, stream: object = None) -> None:
        source = self.sent.pop(0)
        self.calls.append((tensor.shape, tensor.dtype, tensor.device, src))
        # NCCL copies numel elements of the sender's dtype: a wrong meta would be garbage.
        assert (tensor.shape, tensor.dtype) == (source.shape, source.dtype)
        tensor.copy_(source)


class VLLMStyleModel(torch.nn.Module):
    """An HF model behind the interface of a vLLM model: ``load_weights`` takes (HF name,
    tensor) pairs and returns the names it loaded (vLLM's loaders do the same for their own,
    possibly fused, layers)."""

    def __init__(self, hf: torch.nn.Module, on_load) -> None:
        super().__init__()
        self.hf = hf
        self.config = getattr(hf, "config", None)
        self.on_load = on_load

    def load_weights(self, weights) -> set[str]:
        params = dict(self.hf.named_parameters())
        names = set()
        with torch.no_grad():
            for name, tensor in weights:
                self.on_load(name)
                params[name].copy_(tensor)
                names.add(name)
        return names


class ReceivingWorker(WeightSyncExtension):
    """The parts of a vLLM worker the extension uses: its device, its model runner, and
    ``reload_weights``, which hands the tensors to the model's ``load_weights`` as vLLM's
    layer-wise reload does."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.device = torch.device("cpu")
        self.model_runner = SimpleNamespace(model=VLLMStyleModel(model, self._loaded))
        self.loads: list[tuple[str, int]] = []  # (name, broadcasts done when it was loaded)

    def _loaded(self, name: str) -> None:
        self.loads.append((name, len(self.azr_weight_comm.calls)))

    def reload_weights(self, weights_iterator) -> None:
        self.model_runner.model.load_weights(weights_iterator)


def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    learner = init_qwen2(LEARNER_SHAPE.model_copy(update={"seed": 1}), TINY_VOCAB)
    rollout = init_qwen2(LEARNER_SHAPE.model_copy(update={"seed": 2}), TINY_VOCAB)
    return learner, rollout


def test_receive_loads_every_broadcast_tensor_in_meta_order():
    learner, rollout = models()
    metas = parameter_metas(learner)
    sent = [p.detach().clone() for _, p in learner.named_parameters()]
    worker = ReceivingWorker(rollout)
    worker.azr_weight_comm = StandInCommunicator(sent)

    report = worker.azr_receive_weights(metas)
    assert report["tensors"] == report["parameters_loaded"] == len(metas)

    assert worker.azr_weight_comm.sent == []  # every broadcast was received
    assert [
        (shape, dtype, device, src) for shape, dtype, device, src in worker.azr_weight_comm.calls
    ] == [
        (torch.Size(shape), getattr(torch, dtype), torch.device("cpu"), 0)
        for _, dtype, shape in metas
    ]
    # Loaded in meta order, each right after its own broadcast: one tensor in flight.
    assert worker.loads == [(name, i + 1) for i, (name, _, _) in enumerate(metas)]
    for name, param in learner.named_parameters():
        torch.testing.assert_close(dict(rollout.named_parameters())[name], param, rtol=0, atol=0)
    # Tied: the head never travels (named_parameters drops the alias) and still matches.
    assert "lm_head.weight" not in {name for name, _, _ in metas}
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    with torch.no_grad():
        torch.testing.assert_close(rollout(ids).logits, learner(ids).logits, rtol=0, atol=0)


def test_a_meta_that_disagrees_with_the_sent_tensor_is_caught():
    learner, rollout = models()
    metas = parameter_metas(learner)
    name, _, shape = metas[0]
    wrong = [(name, "bfloat16", shape), *metas[1:]]
    worker = ReceivingWorker(rollout)
    worker.azr_weight_comm = StandInCommunicator(
        [p.detach() for _, p in learner.named_parameters()]
    )
    # The communicator's check fails mid-reload; the receiver reports it as a failed sync.
    with pytest.raises(WeightSyncError, match="reload failed after 0 tensors.*AssertionError"):
        worker.azr_receive_weights(wrong)


@pytest.mark.parametrize(
    ("actor", "tp", "local_rank"), [(0, 1, 0), (1, 1, 0), (1, 2, 1), (2, 4, 3)]
)
def test_init_joins_the_learner_group_at_its_layout_rank(monkeypatch, actor, tp, local_rank):
    """Learner rank 0 is NCCL rank 0; actor i with tensor parallelism t holds ranks
    1 + i·t .. i·t + t (learner/nccl_sync.py), so worker `local_rank` of actor i is
    1 + i·t + local_rank, and world = 1 + actors·t."""
    from vllm.distributed import parallel_state, utils
    from vllm.distributed.device_communicators import pynccl

    created: dict[str, object] = {}

    def create(host: str, port: int, rank: int, world_size: int) -> object:
        created.update(host=host, port=port, rank=rank, world_size=world_size)
        return "group"

    class RecordingCommunicator:
        def __init__(self, group: object, device: object) -> None:
            created.update(group=group, device=device)

    monkeypatch.setattr(utils.StatelessProcessGroup, "create", staticmethod(create))
    monkeypatch.setattr(pynccl, "PyNcclCommunicator", RecordingCommunicator)
    monkeypatch.setattr(parallel_state, "get_world_group", lambda: SimpleNamespace(rank=local_rank))
    worker = ReceivingWorker(torch.nn.Linear(1, 1))
    actors = 3
    worker.azr_init_weight_group("10.0.0.7", 29511, 1 + actor * tp, 1 + actors * tp)
    assert created == {
        "host": "10.0.0.7",
        "port": 29511,
        "rank": 1 + actor * tp + local_rank,
        "world_size": 1 + actors * tp,
        "group": "group",
        "device": worker.device,
    }
    assert isinstance(worker.azr_weight_comm, RecordingCommunicator)
