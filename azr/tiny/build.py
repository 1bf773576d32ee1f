"""The embedded `tiny` model, built on demand (`azr.models.ensure_model` is the entry point).

It is built into ``model.cache_dir``: a byte-level BPE tokenizer trained offline on CRUXEval programs plus
generated AZR-format text, a randomly initialised Qwen2-architecture model (fixed seed), a chat
template, then the supervised warm start of `azr.tiny.warm_start`. Every stage is cached under a
directory named by a hash of everything that determines it, so a change of settings, data or
prompt text builds a new model and an unchanged one is reused; a file lock makes concurrent
callers (several Ray actors, several test processes) build it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from azr.config import TinyModelConfig
from azr.cruxeval import load_cruxeval

log = logging.getLogger(__name__)

# Bump when the build recipe changes in a way the settings hash cannot see.
TINY_RECIPE_VERSION = 2
PRE_TOKENIZER_PATTERN = r" ?\p{L}+| ?\p{N}|\s+(?!\S)|\s+| ?[^\s\p{L}\p{N}]"
"""Pre-tokens: a letter run, one digit, or one punctuation character (each with at most one
leading space), and whitespace runs. Quotes and brackets stay tokens of their own and numbers
are spelled digit by digit (as Qwen2's tokenizer does), so the tokens of ``'ko' + s`` are
those of ``'ko'`` and of ``s`` side by side: what a small model can learn to copy."""

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]
# Qwen2.5's chat layout, so prompts look the same for the tiny model and a real checkpoint.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_COMPLETE_MARKER = ".azr-complete"


def tokenizer_corpus(tiny: TinyModelConfig) -> list[str]:
    """Texts the tokenizer is trained on: CRUXEval programs/IO plus generated AZR responses.

    The AZR part comes from `azr.tiny.data.corpus_texts` (prompt builders and response renderer),
    so prompt wording and response markup become short token sequences.
    """
    from azr.tiny.data import corpus_texts

    records = load_cruxeval(tiny.data_path)
    texts = [r.code for r in records] + [f"f({r.input}) == {r.output}" for r in records]
    return texts + corpus_texts(seed=tiny.seed)


BASE_CODE = ("azr.tiny.build", "azr.tiny.data", "azr.prompts", "azr.parsing", "azr.cruxeval")
"""Modules whose code determines the base model (tokenizer corpus, initialisation)."""
LIBRARIES = ("torch", "transformers", "tokenizers")
"""Packages whose versions can change what the same code builds or trains."""


def code_identity(modules: tuple[str, ...]) -> dict[str, str]:
    """A digest of each module's source and the versions of `LIBRARIES`: part of a cache key,
    so an edit of the code that builds or trains a model builds a new one instead of reusing
    a model the edited code would not make (a cache hit would hide a regression)."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    identity = {}
    for name in modules:
        spec = find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"cannot find the source of {name} for the model cache key")
        identity[name] = hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()
    for package in LIBRARIES:
        try:
            identity[package] = version(package)
        except PackageNotFoundError:
            identity[package] = "absent"
    return identity


def _digest(*parts: object) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(json.dumps(part, sort_keys=True, default=str).encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _shape_settings(tiny: TinyModelConfig) -> dict[str, object]:
    # Warm-start settings are not part of the base model's identity.
    return tiny.model_dump(exclude={"warm_start_steps", "warm_start_lr", "warm_start_batch_size"})


@contextmanager
def build_lock(cache_dir: Path, key: str) -> Iterator[None]:
    """An exclusive inter-process lock for building the artefact named `key`.

    Holding it, any staging directory of `key` is a leftover of a killed build: removed.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / f".{key}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            for leftover in cache_dir.glob(f".{key}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_complete(path: Path) -> bool:
    """Whether `path` is a finished build that later calls may reuse."""
    marker = path / _COMPLETE_MARKER
    return marker.is_file() and marker.read_text().strip() == "ok"


def publish(staging: Path, final: Path, *, reusable: bool = True) -> Path:
    """Move a staging directory into place atomically.

    ``reusable=False`` (a warm start cut short by its time cap) serves this caller but is
    rebuilt by the next one, so a loaded machine does not pin a half-trained model in the cache.
    """
    (staging / _COMPLETE_MARKER).write_text("ok\n" if reusable else "partial\n")
    if final.exists():  # an incomplete leftover of a crashed build
        shutil.rmtree(final)
    os.replace(staging, final)
    return final


def base_key(tiny: TinyModelConfig, corpus: list[str]) -> str:
    """Cache directory name of a base model: a hash of its settings, its tokenizer corpus and
    the code that builds it (`BASE_CODE`, library versions)."""
    return "tiny-base-" + _digest(
        TINY_RECIPE_VERSION, _shape_settings(tiny), corpus, code_identity(BASE_CODE)
    )


def build_tiny_base(tiny: TinyModelConfig, cache_dir: Path) -> Path:
    """Build (or reuse) the randomly initialised tiny model and its tokenizer."""
    corpus = tokenizer_corpus(tiny)
    key = base_key(tiny, corpus)
    final = cache_dir / key
    if is_complete(final):
        return final
    with build_lock(cache_dir, key):
        if is_complete(final):  # another process built it while we waited
            return final
        log.info("building tiny model %s", final)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
        try:
            tokenizer = train_tokenizer(corpus, tiny)
            tokenizer.save_pretrained(staging)
            init_tiny_model(tiny, tokenizer).save_pretrained(staging, safe_serialization=True)
            return publish(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def train_tokenizer(corpus: list[str], tiny: TinyModelConfig):
    """Train a byte-level BPE tokenizer (Qwen2-style chat tokens) and wrap it for transformers."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=tiny.vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=tiny.max_position_embeddings,
    )


def init_qwen2(
    shape: TinyModelConfig, vocab_size: int, *, eos_id: int | None = None, pad_id: int | None = None
):
    """A randomly initialised fp32 Qwen2ForCausalLM with tied embeddings, of ``shape``'s
    width, depth and heads, deterministic for ``shape.seed``.

    The one builder of small Qwen2 models: the tiny model, test fixtures and benchmarks.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if shape.hidden_size % shape.num_heads or shape.num_heads % shape.num_kv_heads:
        raise ValueError(
            "model.tiny: hidden_size must divide by num_heads and num_heads by num_kv_heads"
        )
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        dtype="float32",
    )
    torch.manual_seed(shape.seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    if eos_id is not None:  # vLLM and `generate` stop on it
        model.generation_config = GenerationConfig(
            bos_token_id=pad_id, eos_token_id=eos_id, pad_token_id=pad_id
        )
    return model


def init_tiny_model(tiny: TinyModelConfig, tokenizer):
    """The tiny model's random initialisation: stops on <|im_end|>, as Qwen2.5-Instruct does."""
    return init_qwen2(
        tiny,
        len(tokenizer),
        eos_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
    )
