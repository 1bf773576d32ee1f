"""Methods added to vLLM's worker (``worker_extension_cls``) for in-place weight updates.

vLLM calls them through ``LLM.collective_rpc(name, args=...)``; ``self`` is the vLLM worker.
CPU build: HF-named tensors arrive as one live iterator over the whole state dict (fused layers
are rebuilt layer by layer, so one reload must see every shard of a fused layer) and go into
``reload_weights``. GPU: tensors arrive over the learner's NCCL group (``learner/nccl_sync.py``).
The receiving bookkeeping (group rank, order, dtypes, shapes, the lazy reload) is tested on
CPU with a stand-in communicator (tests/integration/test_nccl_receiver.py); why, and what is
verified on a GPU: docs/rollout.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch

from actors.weight_check import WeightSyncError

RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"


def expected_gap(layer_class: str, tied: bool) -> bool:
    """Layers a checkpoint never holds weights for: rotary embeddings (computed caches) and, in
    a tied model, the lm_head (it shares the embedding's weight; `_azr_retie_embeddings`
    refreshes it). A reload that loads nothing into them is normal."""
    return layer_class.endswith("RotaryEmbedding") or (tied and layer_class == "ParallelLMHead")


def vocab_padding_elements(layer: torch.nn.Module) -> int:
    """Elements of a vocab-parallel layer's padding rows: vLLM rounds the vocabulary up (to a
    multiple of 64 per shard), no checkpoint holds those rows and a reload never fills them
    (no token id reaches them, and the logits are cut to the real vocabulary)."""
    indices = getattr(layer, "shard_indices", None)
    if indices is None:
        return 0
    rows = indices.num_org_vocab_padding + indices.num_added_vocab_padding
    return rows * int(getattr(layer, "embedding_dim", 0))


class ExpectedReloadGaps(logging.Filter):
    """Drops vLLM's "<Layer>: Failed to load weights" for the layers of `expected_gap`, and
    records every other such layer in ``unexpected`` (the reload then fails)."""

    def __init__(self, tied: bool) -> None:
        super().__init__()
        self.tied = tied
        self.unexpected: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "%s: Failed to load weights" or not record.args:
            return True
        layer = str(record.args[0])
        if expected_gap(layer, self.tied):
            return False
        self.unexpected.append(layer)
        return True


class ReloadAudit:
    """What vLLM's layer-wise reload actually loaded, read from its own bookkeeping.

    vLLM's reload (``vllm.model_executor.model_loader.reload``) buffers each layer's tensors
    and processes the layer once the elements its weight loaders took reach the layer's
    size; at the end, a layer that took nothing keeps its old tensors (logged "Failed to load
    weights") and one that took part is processed with the rest uninitialised. Wrapping the
    model's ``load_weights`` sees that state just before vLLM finalises it: every layer still
    waiting then is a gap, unless it is an `expected_gap`.
    """

    def __init__(self, model: torch.nn.Module, tied: bool) -> None:
        self.model = model
        self.tied = tied
        self.gaps: list[str] = []
        self.elements_loaded = 0
        self.parameters_loaded = 0
        self._original: Callable[..., Any] | None = None

    def __enter__(self) -> ReloadAudit:
        self._original = self.model.load_weights
        self.model.load_weights = self._audited  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        del self.model.load_weights  # the class's method again

    def _audited(self, weights: Iterable[tuple[str, torch.Tensor]]) -> Any:
        from vllm.model_executor.layers.attention import is_deferred_attention_layer
        from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO

        waiting = {}
        for name, layer in self.model.named_modules():
            info = LAYERWISE_INFO.get(layer)
            if info is not None and info.can_load():
                waiting[name] = (layer, info.load_numel_total or 0)
        assert self._original is not None
        loaded = self._original(weights)
        self.parameters_loaded = len(loaded) if loaded is not None else 0
        for name, (layer, size) in waiting.items():
            info = LAYERWISE_INFO.get(layer)
            if info is None or not info.can_load():  # processed: every element was loaded
                self.elements_loaded += size
                continue
            self.elements_loaded += info.load_numel
            total = info.load_numel_total or 0
            if total == 0 or is_deferred_attention_layer(layer):
                continue  # nothing to load / processed by vLLM's finalize in any case
            if info.load_numel == 0 and expected_gap(type(layer).__name__, self.tied):
                continue
            padding = vocab_padding_elements(layer)
            if padding and info.load_numel == total - padding:
                continue  # every real row loaded; the padding rows are never loaded
            self.gaps.append(
                f"{name} ({type(layer).__name__}): {info.load_numel} of {total} elements"
            )
        return loaded


class WeightSyncExtension:
    """Mixed into vLLM's worker class; names are prefixed to avoid clashing with vLLM's."""

    def azr_reload_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> dict[str, int]:
        """Load HF-named tensors in place and check that vLLM loaded every layer in full.

        Returns ``tensors`` (taken by the loader), ``parameters_loaded`` (vLLM parameters,
        fused ones counted once) and ``elements_loaded`` (what vLLM's weight loaders copied).
        Raises `WeightSyncError` naming the layers that were not (fully) loaded; the engine
        then mixes two versions and must not serve the run.
        """
        model = self.model_runner.model  # type: ignore[attr-defined]
        if not getattr(self, "_azr_reload_filter", None):
            config = getattr(model, "config", None)
            self._azr_tied = bool(getattr(config, "tie_word_embeddings", False))
            self._azr_reload_filter = ExpectedReloadGaps(self._azr_tied)
            logging.getLogger(RELOAD_LOGGER).addFilter(self._azr_reload_filter)
        self._azr_reload_filter.unexpected.clear()
        taken = 0

        def counting() -> Iterable[tuple[str, torch.Tensor]]:
            nonlocal taken
            for name, tensor in weights:
                taken += 1
                yield name, tensor

        try:
            with ReloadAudit(model, self._azr_tied) as audit:
                self.reload_weights(weights_iterator=counting())  # type: ignore[attr-defined]
        except Exception as exc:
            raise WeightSyncError(
                f"vLLM's reload failed after {taken} tensors ({type(exc).__name__}: {exc}); "
                "the engine is left partly loaded"
            ) from exc
        self._azr_retie_embeddings()
        gaps = audit.gaps + [
            f"{layer} (vLLM: Failed to load weights)"
            for layer in self._azr_reload_filter.unexpected
            if not any(f"({layer})" in gap for gap in audit.gaps)
        ]
        if gaps:
            raise WeightSyncError(
                f"vLLM did not load {len(gaps)} layer(s) of the update in full: "
                + "; ".join(gaps[:10])
                + ("; ..." if len(gaps) > 10 else "")
                + ". The engine now mixes old and new weights."
            )
        return {
            "tensors": taken,
            "parameters_loaded": audit.parameters_loaded,
            "elements_loaded": audit.elements_loaded,
        }

    def _azr_retie_embeddings(self) -> None:
        """Refresh a tied lm_head after a reload.

        With ``tie_word_embeddings`` the checkpoint has no lm_head weight, so the layer-wise
        reload never visits lm_head: its weight is shared with the embedding (updated), but the
        CPU build's prepacked GEMM copy of it (made in ``process_weights_after_loading``) keeps
        the old values (docs/rollout.md). Re-running that step repacks it; untied models are
        left alone.
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

    def azr_receive_weights(self, metas: list[tuple[str, str, tuple[int, ...]]]) -> dict[str, int]:
        """GPU: receive (name, dtype, shape) tensors broadcast by learner rank 0, load them."""

        def received() -> Iterable[tuple[str, torch.Tensor]]:
            for name, dtype, shape in metas:
                # The worker's own device (the one its communicator was made for), not the
                # process's current CUDA device.
                tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)  # type: ignore[attr-defined]
                self.azr_weight_comm.broadcast(tensor, src=0)  # type: ignore[attr-defined]
                yield name, tensor

        return self.azr_reload_weights(received())

    def azr_discard_weights(self, metas: list[tuple[str, str, tuple[int, ...]]]) -> None:
        """GPU: receive a broadcast and drop it (a refused update: learner rank 0 sends anyway,
        and would wait forever for receivers that left the collective)."""
        for _, dtype, shape in metas:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)  # type: ignore[attr-defined]
            self.azr_weight_comm.broadcast(tensor, src=0)  # type: ignore[attr-defined]
