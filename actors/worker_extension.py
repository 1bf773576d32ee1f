"""Methods added to vLLM's worker (``worker_extension_cls``) for in-place weight updates.

vLLM calls them through ``LLM.collective_rpc(name, args=...)``; ``self`` is the vLLM worker.
CPU build: the engine runs in-process, so the arguments arrive as live Python objects (an
iterator over CPU tensors) and go straight into the worker's ``reload_weights``, which loads
checkpoint-format (HF-named) tensors in place — fused layers (qkv, gate_up) are rebuilt layer by
layer, so one reload must see every shard of a fused layer: callers pass the whole state dict in
one call (a lazily resolved iterator over its buckets).
GPU: the learner's rank 0 broadcasts each tensor over a dedicated NCCL group (vLLM's
StatelessProcessGroup + PyNcclCommunicator); the worker receives and reloads them. This
receiving side is unverified on a GPU (it needs vLLM's GPU build and a second GPU; the learner's
sending side is verified by tests/integration/test_learner_gpu.py); its bookkeeping (group rank,
order, dtypes, shapes, the lazy reload) is tested on CPU with a stand-in communicator
(tests/integration/test_nccl_receiver.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"


class ExpectedReloadGaps(logging.Filter):
    """Drops vLLM's "<Layer>: Failed to load weights" for layers a checkpoint never holds:
    rotary embeddings (computed caches) and, in a tied model, the lm_head (it shares the
    embedding's weight; `_azr_retie_embeddings` refreshes it). Any other layer still warns."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.tied = tied

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "%s: Failed to load weights" or not record.args:
            return True
        layer = str(record.args[0])
        expected = layer.endswith("RotaryEmbedding") or (self.tied and layer == "ParallelLMHead")
        return not expected


class WeightSyncExtension:
    """Mixed into vLLM's worker class; names are prefixed to avoid clashing with vLLM's."""

    def azr_reload_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load HF-named tensors in place; returns how many tensors were loaded."""
        if not getattr(self, "_azr_reload_filter", None):
            config = getattr(self.model_runner.model, "config", None)  # type: ignore[attr-defined]
            self._azr_reload_filter = ExpectedReloadGaps(
                bool(getattr(config, "tie_word_embeddings", False))
            )
            logging.getLogger(RELOAD_LOGGER).addFilter(self._azr_reload_filter)
        counted: list[str] = []

        def counting() -> Iterable[tuple[str, torch.Tensor]]:
            for name, tensor in weights:
                counted.append(name)
                yield name, tensor

        self.reload_weights(weights_iterator=counting())  # type: ignore[attr-defined]
        self._azr_retie_embeddings()
        return len(counted)

    def _azr_retie_embeddings(self) -> None:
        """Refresh a tied lm_head after a reload.

        With ``tie_word_embeddings`` the checkpoint has no lm_head weight, so the layer-wise
        reload never visits lm_head: its weight is shared with the embedding (updated), but the
        CPU build's prepacked GEMM copy of it (made in ``process_weights_after_loading``) keeps
        the old values — measured here: logprobs off by up to ~2 nats after an update. Re-running
        that step repacks it; untied models are left alone.
        """
        model = self.model_runner.model  # type: ignore[attr-defined]
        if not getattr(getattr(model, "config", None), "tie_word_embeddings", False):
            return
        head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if head is None or embed is None:
            return
        if head.weight.data_ptr() != embed.weight.data_ptr():
            head.weight.data.copy_(embed.weight.data)
        method = getattr(head, "quant_method", None)
        if method is not None:
            method.process_weights_after_loading(head)

    def azr_init_weight_group(
        self, master_address: str, master_port: int, rank_offset: int, world_size: int
    ) -> None:
        """GPU: join the learner's NCCL group (learner rank 0 is the source)."""
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.parallel_state import get_world_group
        from vllm.distributed.utils import StatelessProcessGroup

        rank = get_world_group().rank + rank_offset
        group = StatelessProcessGroup.create(
            host=master_address, port=master_port, rank=rank, world_size=world_size
        )
        self.azr_weight_comm = PyNcclCommunicator(group, device=self.device)  # type: ignore[attr-defined]

    def azr_receive_weights(self, metas: list[tuple[str, str, tuple[int, ...]]]) -> int:
        """GPU: receive (name, dtype, shape) tensors broadcast by learner rank 0, load them."""

        def received() -> Iterable[tuple[str, torch.Tensor]]:
            for name, dtype, shape in metas:
                # The worker's own device (the one its communicator was made for), not the
                # process's current CUDA device.
                tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)  # type: ignore[attr-defined]
                self.azr_weight_comm.broadcast(tensor, src=0)  # type: ignore[attr-defined]
                yield name, tensor

        return self.azr_reload_weights(received())
