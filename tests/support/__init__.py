"""Shared helpers of the unit and integration tests (importable as `support`: pytest's
``pythonpath`` holds tests/)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout the tests run from."""
MODEL_CACHE = REPO_ROOT / ".scratch" / "models"
"""Where every test that builds the tiny model caches it: inside the checkout, never $HOME, so
a run is hermetic (it cannot pass on a model some other checkout's code built)."""


def cuda_skip_reason() -> str | None:
    """Why CUDA tests cannot run here (None when they can): a CPU-only torch build and a
    machine without a visible GPU are different problems with different fixes."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return f"no CUDA device visible to torch {torch.__version__} (CUDA {torch.version.cuda})"
    return None
