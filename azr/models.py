"""Where the policy's weights come from: a local HF directory, a hub id, or the embedded tiny model.

`resolve_model` turns ``model.path`` into a local directory on *this* node. Every process that
loads weights (the driver for the tokenizer, each rollout actor, each learner worker) calls it
itself, so a hub id is fetched once per node into the normal Hugging Face cache (local files
first), and a directory that exists on the head but not on a GPU node fails there by name.
"""

from __future__ import annotations

import re
from pathlib import Path

from azr.config import ModelConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
# Hugging Face repo ids: "name" or "org/name" of letters, digits, "-", "_", "."
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# Weight files are what we need from a hub repo (not its READMEs, images or other formats).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


class ModelDirError(ValueError):
    """``model.path`` names no usable checkpoint here; the message says which and why."""


def resolve_model(path: str) -> Path:
    """The local checkpoint directory for ``path`` (a directory, or a hub id), validated."""
    local = Path(path).expanduser()
    if local.exists() or not HUB_ID.match(path) or path.startswith("."):
        return validate_model_dir(local)
    return validate_model_dir(_from_hub(path))


def _from_hub(repo_id: str) -> Path:
    """A snapshot of `repo_id` from the HF cache, downloaded first if the cache lacks it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except LocalEntryNotFoundError:
        pass  # not cached on this node yet: try the hub
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelDirError(
            f"model.path {repo_id!r} is not a local directory, and the hub id is neither in "
            f"this node's Hugging Face cache nor downloadable ({type(exc).__name__}: {exc}). "
            "Stage the model on every node (or on the shared filesystem) and give its path, "
            "or give a hub id this node can reach."
        ) from None


def validate_model_dir(path: Path) -> Path:
    """`path`, resolved, when it is a local HF checkpoint with config.json and a tokenizer."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise ModelDirError(f"model.path {str(path)!r} is not a directory on this node")
    if not (path / "config.json").is_file():
        raise ModelDirError(f"model.path {str(path)!r} has no config.json")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelDirError(
            f"model.path {str(path)!r} has no tokenizer (expected one of {TOKENIZER_FILES})"
        )
    return path


def ensure_model(config: ModelConfig) -> Path:
    """A local checkpoint for ``config``: ``model.path`` resolved, or the tiny model built.

    The tiny model (tokenizer + random Qwen2 + warm start) is cached under
    ``config.cache_dir``; built once per distinct set of inputs, concurrency-safe.
    """
    if config.path is not None:
        return resolve_model(config.path)
    # Imported here: building pulls in tokenizers, torch and the warm start's training loop.
    from azr.tiny.warm_start import tiny_model

    return tiny_model(config.tiny, Path(config.cache_dir).expanduser())
