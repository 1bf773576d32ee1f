"""Methods added to vLLM's worker (``worker_extension_cls``) for in-place weight updates.

vLLM calls them through ``LLM.collective_rpc(name, args=...)``; ``self`` is the vLLM worker.
CPU build: the engine runs in-process, so the arguments arrive as live Python objects (an
iterator over CPU tensors) and go straight into the worker's ``reload_weights``, which loads
checkpoint-format (HF-named) tensors in place — fused layers (qkv, gate_up) are rebuilt layer by
layer, so one reload must see every shard of a fused layer: callers pass the whole state dict in
one call (a lazily resolved iterator over its buckets).
GPU: the learner's rank 0 broadcasts each tensor over a dedicated NCCL group (vLLM's
StatelessProcessGroup + PyNcclCommunicator); the worker receives and reloads them. The GPU path
cannot run on this CPU-only machine and is unverified.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class WeightSyncExtension:
    """Mixed into vLLM's worker class; names are prefixed to avoid clashing with vLLM's."""

    def azr_reload_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Load HF-named tensors in place; returns how many tensors were loaded."""
        counted: list[str] = []

        def counting() -> Iterable[tuple[str, torch.Tensor]]:
            for name, tensor in weights:
                counted.append(name)
                yield name, tensor

        self.reload_weights(weights_iterator=counting())  # type: ignore[attr-defined]
        return len(counted)

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
                tensor = torch.empty(shape, dtype=getattr(torch, dtype), device="cuda")
                self.azr_weight_comm.broadcast(tensor, src=0)  # type: ignore[attr-defined]
                yield name, tensor

        return self.azr_reload_weights(received())
