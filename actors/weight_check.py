"""What a weight update must hold: every tensor of the engine's checkpoint, by name and shape.

A rollout engine refuses an update whose tensor names or shapes differ from the checkpoint it
was started from (read from the safetensors headers, no data) *before* touching its weights:
vLLM would raise half way through a misnamed tensor and leave layers unloaded, and would
silently keep the old weights of a missing one. What vLLM then actually loads is checked by
`actors.worker_extension.ReloadAudit`.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
"""Checkpoint tensors no learner sends (computed buffers some old exports saved)."""
_SHOWN = 5


class WeightSyncError(RuntimeError):
    """A weight update does not match the engine's model, or vLLM did not load all of it."""


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from one ``.safetensors`` file's header (8-byte length + JSON)."""
    with path.open("rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    return {
        name: tuple(int(d) for d in entry["shape"])
        for name, entry in header.items()
        if name != "__metadata__"
    }


@dataclass(frozen=True)
class CheckpointLayout:
    """The tensors a full update must carry: name → shape."""

    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def read(cls, model_dir: str | Path) -> CheckpointLayout:
        """The layout of a HF checkpoint directory; a tied ``lm_head.weight`` is left out (it
        is the embedding, sent once)."""
        model_dir = Path(model_dir)
        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{model_dir}: no .safetensors files")
        shapes: dict[str, tuple[int, ...]] = {}
        for path in files:
            shapes.update(safetensors_shapes(path))
        config = json.loads((model_dir / "config.json").read_text())
        if config.get("tie_word_embeddings"):
            shapes.pop("lm_head.weight", None)
        kept = {n: s for n, s in shapes.items() if not n.endswith(IGNORED_SUFFIXES)}
        return cls(kept)

    def check(self, sent: Iterable[tuple[str, tuple[int, ...]]]) -> None:
        """Raise `WeightSyncError` naming missing, unexpected and mis-shaped tensors."""
        sent = list(sent)
        names = [name for name, _ in sent]
        problems = []
        missing = sorted(set(self.shapes) - set(names))
        if missing:
            problems.append(f"missing {len(missing)}: {_few(missing)}")
        unexpected = sorted(set(names) - set(self.shapes))
        if unexpected:
            problems.append(f"not in the model {len(unexpected)}: {_few(unexpected)}")
        duplicated = sorted(n for n, count in Counter(names).items() if count > 1)
        if duplicated:
            problems.append(f"sent twice {len(duplicated)}: {_few(duplicated)}")
        wrong = [
            f"{name} {tuple(shape)} (model {self.shapes[name]})"
            for name, shape in sent
            if name in self.shapes and tuple(shape) != self.shapes[name]
        ]
        if wrong:
            problems.append(f"wrong shape {len(wrong)}: {_few(wrong)}")
        if problems:
            raise WeightSyncError(
                f"weight update refused ({len(sent)} tensors sent, the model has "
                f"{len(self.shapes)}): " + "; ".join(problems)
            )


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (", ..." if len(items) > _SHOWN else "")
