"""Fixed-size buckets of a state dict: the unit of a weight sync.

A bucket is a plain ``dict[str, torch.Tensor]`` (HF parameter names, CPU tensors) — the
contract of ``RolloutActor.update_weights``. Buckets keep the state dict's order and hold at
most ``bucket_bytes`` bytes; a single tensor larger than that travels alone (tensors are
never split, since ``load_weights`` takes whole parameters).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def split_into_buckets(
    state: dict[str, torch.Tensor], bucket_bytes: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield consecutive groups of ``state`` whose sizes stay within ``bucket_bytes``."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    bucket: dict[str, torch.Tensor] = {}
    size = 0
    for name, tensor in state.items():
        n = tensor_bytes(tensor)
        if bucket and size + n > bucket_bytes:
            yield bucket
            bucket, size = {}, 0
        # Contiguous so the zero-copy pickler sends the bytes as they are (no hidden copy).
        bucket[name] = tensor.detach().contiguous()
        size += n
    if bucket:
        yield bucket
