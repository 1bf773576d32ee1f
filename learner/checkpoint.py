"""Checkpoint files: HF-format weights (safetensors + config + tokenizer) and learner state.

Layout of a learner checkpoint directory::

    config.json, generation_config.json         copied/written from the model (HF reads them)
    model.safetensors | model-0000i-of-0000n.safetensors + model.safetensors.index.json
    tokenizer.json, tokenizer_config.json, ...  copied from the source model when present
    optimizer.pt                                full (unsharded) AdamW state, torch.save
    learner_state.json                          step count and world size
    rng_states.pt                               torch/python RNG state of every rank

Everything is written by rank 0 into a ``<dir>.tmp`` sibling and renamed at the end, so a
crash mid-save never leaves a directory that looks complete. Loading uses
``torch.load(weights_only=True)``: no pickle code runs from a checkpoint file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors.torch import load_file, save_file

WEIGHTS_INDEX = "model.safetensors.index.json"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "learner_state.json"
RNG_FILE = "rng_states.pt"
# Files a tokenizer may consist of; copied verbatim so eval harnesses load the checkpoint alone.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
)
MAX_SHARD_SIZE = "5GB"


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete or does not fit this model."""


def staging_dir(final: Path) -> Path:
    return final.with_name(final.name + ".tmp")


def weights_digest(model_dir: str | Path) -> str:
    """sha256 over every tensor of a directory's safetensors files, names sorted: equal digests
    = bit-identical weights (the frozen control's check, `benchmarks/learning.py`)."""
    hasher = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        tensors = load_file(path)
        for name in sorted(tensors):
            hasher.update(name.encode())
            hasher.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def save_hf_weights(state_dict: dict[str, torch.Tensor], out_dir: Path) -> None:
    """Write ``state_dict`` as (sharded) safetensors the way ``save_pretrained`` does."""
    split = split_torch_state_dict_into_shards(state_dict, max_shard_size=MAX_SHARD_SIZE)
    for filename, names in split.filename_to_tensors.items():
        shard = {name: state_dict[name].contiguous() for name in names}
        save_file(shard, str(out_dir / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (out_dir / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2))


def load_hf_weights(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """Read the safetensors weights of an HF checkpoint directory into CPU tensors."""
    index = ckpt_dir / WEIGHTS_INDEX
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = ckpt_dir / name
        if not path.exists():
            raise CheckpointError(f"{ckpt_dir}: weights file {name} is missing")
        state.update(load_file(str(path)))
    return state


def copy_model_files(source_dir: str, out_dir: Path, hf_config: Any) -> None:
    """Write the model config and copy generation config and tokenizer files from the source."""
    hf_config.save_pretrained(str(out_dir))
    src = Path(source_dir)
    for name in ("generation_config.json", *TOKENIZER_FILES):
        if (src / name).is_file():
            shutil.copy2(src / name, out_dir / name)


def save_learner_state(out_dir: Path, step: int, world_size: int, rng_states: list[dict]) -> None:
    (out_dir / STATE_FILE).write_text(json.dumps({"step": step, "world_size": world_size}))
    torch.save(rng_states, out_dir / RNG_FILE)


def load_learner_state(ckpt_dir: Path) -> tuple[int, list[dict]]:
    """(step, per-rank RNG states) of a checkpoint."""
    for name in (STATE_FILE, RNG_FILE, OPTIMIZER_FILE):
        if not (ckpt_dir / name).exists():
            raise CheckpointError(f"{ckpt_dir}: {name} is missing (not a learner checkpoint?)")
    step = int(json.loads((ckpt_dir / STATE_FILE).read_text())["step"])
    rng_states = torch.load(ckpt_dir / RNG_FILE, weights_only=True)
    return step, rng_states


def finalize(staging: Path, final: Path) -> None:
    """Atomically publish a fully written checkpoint (replacing an older one of that name)."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA when present, Python ``random``)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
