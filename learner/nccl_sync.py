"""GPU weight sync: NCCL broadcast from learner rank 0 straight into the vLLM workers.

Built on vLLM's ``StatelessProcessGroup`` + ``PyNcclCommunicator``; the receiving side is
``actors/worker_extension.py`` (``azr_init_weight_group`` / ``azr_receive_weights``). Contract:

* group layout: learner rank 0 is NCCL rank 0; rollout actor ``i`` with tensor-parallel size
  ``t`` holds ranks ``1 + i·t .. i·t + t`` (``rank_offset = 1 + i·t``); world = 1 + M·t;
* per sync the learner group sends the metadata ``(name, dtype, shape)`` of every parameter
  (HF names, tied aliases dropped) to the rollout actors' ``receive_weights_nccl`` first,
  then every learner rank iterates the parameters in that order: ``full_tensor()`` is an
  FSDP all-gather (a collective of the learner ranks), and rank 0 broadcasts the result.
  vLLM loads each tensor with ``load_weights`` in place — no engine restart.

What is verified on a GPU (the sending side) and what is not (vLLM's side): docs/learner.md.
"""

from __future__ import annotations

from typing import Any

import torch

Meta = tuple[str, str, tuple[int, ...]]


def parameter_metas(model: torch.nn.Module, wire: str = "float32") -> list[Meta]:
    """``(name, dtype name, full shape)`` per parameter, in send order (no gather needed:
    a DTensor reports its global shape). Floating parameters travel in ``wire``."""
    return [
        (
            name,
            wire if p.is_floating_point() else str(p.dtype).removeprefix("torch."),
            tuple(p.shape),
        )
        for name, p in model.named_parameters()  # deduplicates tied parameters
    ]


class NCCLWeightSender:
    """Per-rank sender. Rank 0 owns the communicator; other ranks only join the gathers."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.comm: Any = None

    def connect(self, master_address: str, master_port: int, world_size: int) -> None:
        """Rank 0: open the NCCL group as its rank 0 (blocks until every vLLM worker joins)."""
        if self.rank != 0:
            return
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        group = StatelessProcessGroup.create(
            host=master_address, port=master_port, rank=0, world_size=world_size
        )
        self.comm = PyNcclCommunicator(group, device=torch.cuda.current_device())

    @torch.no_grad()
    def send(self, model: torch.nn.Module, wire: torch.dtype = torch.float32) -> int:
        """Gather and broadcast every parameter (in `parameter_metas` order, floating ones as
        ``wire``); bytes sent."""
        sent = 0
        for _name, param in model.named_parameters():
            full = param.full_tensor() if hasattr(param, "full_tensor") else param.data
            if self.rank == 0:
                if full.is_floating_point():
                    full = full.to(wire)
                full = full.contiguous()  # NCCL sends numel elements from data_ptr()
                self.comm.broadcast(full, src=0, stream=torch.cuda.current_stream())
                sent += full.numel() * full.element_size()
        torch.cuda.current_stream().synchronize()
        return sent
