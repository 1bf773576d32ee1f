"""The token ids a generation stops at: the chat template's end-of-turn and the checkpoint's EOS.

A checkpoint's EOS and its chat template's end-of-turn token can differ (a base Qwen2.5 model:
EOS ``<|endoftext|>``, end-of-turn ``<|im_end|>``). vLLM stops on the tokenizer's EOS and the
``eos_token_id`` of ``generation_config.json`` only, so a model that ends its turn with the
template's token would run on past ``</answer>`` into text the parser rejects. The rollout
passes every id found here as explicit ``stop_token_ids``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_PROBE = "AZR-END-OF-TURN-PROBE"


def stop_token_ids(tokenizer: Any, model_dir: str | Path) -> list[int]:
    """Sorted ids of: the tokenizer's EOS, every ``eos_token_id`` of the checkpoint's
    ``generation_config.json``, and the chat template's end-of-turn token."""
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    ids.update(generation_config_eos_ids(Path(model_dir)))
    end_of_turn = end_of_turn_id(tokenizer)
    if end_of_turn is not None:
        ids.add(end_of_turn)
    return sorted(ids)


def generation_config_eos_ids(model_dir: Path) -> list[int]:
    """``eos_token_id`` of ``generation_config.json`` (an int or a list; none if absent)."""
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return []
    value = json.loads(path.read_text()).get("eos_token_id")
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the chat template writes right after an assistant message, or None
    (no template, or the template ends a turn with plain text, which no single id can stop)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "u"}, {"role": "assistant", "content": _PROBE}]
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as exc:  # a template with its own rules (system turn required ...)
        log.warning("the chat template's end-of-turn token is unknown: %s", exc)
        return None
    _, found, after = str(rendered).partition(_PROBE)
    if not found:
        return None
    ids = tokenizer.encode(after, add_special_tokens=False)
    if not ids or ids[0] not in special_token_ids(tokenizer):
        return None
    return int(ids[0])


def special_token_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens (named ones and added tokens marked special)."""
    ids = {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
    for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return ids
