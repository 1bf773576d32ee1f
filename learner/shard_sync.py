"""CPU weight sync without a collective: FSDP2 shards travel through the Ray object store.

Each rank ``ray.put``s its local dim-0 shards and rank 0 concatenates them in rank order into
the full tensors (FSDP2's ``Shard(0)`` layout), instead of a gloo all-gather of the state dict
(docs/learner.md). Invariant: used only where `supports` says this reproduces
``get_model_state_dict(full_state_dict=True)`` exactly; otherwise the collective path is used.
"""

from __future__ import annotations

import ray
import torch
from torch.distributed.tensor import DTensor, Shard


def supports(model: torch.nn.Module, aliases: set[str]) -> bool:
    """True when every state-dict entry is a parameter sharded ``Shard(0)`` over one mesh dim."""
    params = dict(model.named_parameters())
    if set(model.state_dict()) - aliases != set(params):
        return False  # persistent buffers or renamed entries: leave it to the state-dict API
    return all(
        isinstance(p, DTensor) and tuple(p.placements) == (Shard(0),) for p in params.values()
    )


def local_shards(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """This rank's shard of every parameter (HF names, tied aliases once), as CPU tensors."""
    return {
        name: p.to_local().detach().contiguous()  # type: ignore[union-attr]
        for name, p in model.named_parameters()
    }


def assemble(
    own: dict[str, torch.Tensor], others: list[ray.ObjectRef], rank: int
) -> dict[str, torch.Tensor]:
    """Full tensors from every rank's shards (``others`` in rank order, ``None`` at ``rank``)."""
    remote = [None if ref is None else ray.get(ref) for ref in others]
    shards = [own if r == rank else remote[r] for r in range(len(others))]
    if len(shards) == 1:
        return dict(own)  # W=1: the local shard is the full tensor (ray.put copies it)
    return {name: torch.cat([s[name] for s in shards], dim=0) for name in own}
