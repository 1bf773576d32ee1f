"""Supervised warm start of the tiny model on well-formed AZR responses (stands in for pretraining).

A few hundred AdamW steps on responses rendered with `azr.prompts.format_response` for prompts
from the real prompt builders (`azr.tiny.data`), evaluated on the held-out half of CRUXEval and
cached by a hash of its inputs. Nothing here executes a program: the evaluation checks syntax
(``ast.parse``) and literal-ness only. Why a warm start: docs/tiny.md.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from azr import prompts
from azr.config import TinyModelConfig
from azr.parsing import FormatError, parse_response
from azr.tasks import Role, TaskType
from azr.tiny.build import build_lock, build_tiny_base, code_identity, is_complete, publish
from azr.tiny.data import (
    AST_LOCK,
    COMBOS,
    GROUPS,
    WarmExample,
    build_examples,
    literal,
)

log = logging.getLogger(__name__)

WARM_RECIPE_VERSION = 3
WARM_START_CODE = (
    "azr.tiny.warm_start",
    "azr.tiny.data",
    "azr.prompts",
    "azr.parsing",
    "azr.tasks",
    "azr.cruxeval",
)
"""Modules whose code determines the warm-started weights (the training loop, the examples,
their prompts and rendered responses): their source is part of the cache key."""
MAX_SEQ_TOKENS = 832
"""Examples longer than this (prompt + response) are dropped from training."""
EVAL_PER_COMBO = 6
"""Greedy evaluation prompts per (task, role) from the eval half."""
EVAL_SAMPLES = 12
"""Temperature-1 proposals sampled for the valid-program rate."""
EVAL_MAX_NEW_TOKENS = 160
"""Longest evaluated response (well-formed answers of the warm-start style are shorter)."""


def tiny_model(tiny: TinyModelConfig, cache_dir: Path) -> Path:
    """The embedded tiny model: its base (tokenizer + random init, `azr.tiny.build`), then
    the warm start unless ``warm_start_steps`` is 0. Both cached under ``cache_dir``."""
    base = build_tiny_base(tiny, cache_dir)
    if tiny.warm_start_steps == 0:
        return base
    return ensure_warm_started(base, tiny, cache_dir)


def ensure_warm_started(base: Path, tiny: TinyModelConfig, cache_dir: Path) -> Path:
    """The warm-started model for `base`, trained once and cached by a hash of its inputs."""
    examples = build_examples(seed=tiny.seed)
    key = warm_start_key(base.name, tiny, examples)
    final = cache_dir / key
    if is_complete(final):
        return final
    with build_lock(cache_dir, key):
        if is_complete(final):
            return final
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
        try:
            report = train_and_save(base, staging, examples, tiny)
            report["eval"] = evaluate(staging, seed=tiny.seed)
            (staging / "warm_start.json").write_text(json.dumps(report, indent=2))
            log.info("warm start: %s", json.dumps(report))
            return publish(staging, final, reusable=not report["capped"])
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def warm_start_key(base_name: str, tiny: TinyModelConfig, examples: list[WarmExample]) -> str:
    """Cache directory name of a warm start: a hash of the base, the settings, the examples
    and the code that trains on them (`WARM_START_CODE`, library versions)."""
    settings = tiny.model_dump(
        include={"warm_start_steps", "warm_start_lr", "warm_start_batch_size"}
    )
    recipe = [
        WARM_RECIPE_VERSION,
        base_name,
        settings,
        GROUPS,
        MAX_SEQ_TOKENS,
        code_identity(WARM_START_CODE),
    ]
    hasher = hashlib.sha256(json.dumps(recipe).encode())
    for ex in examples:
        hasher.update(f"{ex.group}\0{ex.prompt}\0{ex.response}\0".encode())
    return "tiny-warm-" + hasher.hexdigest()[:16]


def _encode(tokenizer, example: WarmExample) -> tuple[list[int], int]:
    """Token ids of chat(prompt) + response + <|im_end|>, and where the response starts."""
    prompt_ids = tokenizer(prompts.render_chat(tokenizer, example.prompt))["input_ids"]
    response_ids = tokenizer(example.response)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + response_ids, len(prompt_ids)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block.

    The model is too small for a second thread to buy much, and on shared cores (Ray actors,
    executors, other jobs) every small op waits at a barrier for a descheduled thread
    (measured: docs/tiny.md).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _batch_shares(batch_size: int) -> dict[str, int]:
    """Sequences per group in one step: proportional to :data:`GROUPS`, at least one proposal."""
    total = sum(GROUPS.values())
    shares = {g: batch_size * w // total for g, w in GROUPS.items()}
    shares["propose"] = max(1, shares["propose"])
    shares["solve"] += batch_size - sum(shares.values())
    return {g: max(0, n) for g, n in shares.items()}


def _response_loss(model, rows: list[tuple[list[int], int]], pad_id: int):
    """Summed cross-entropy of the response tokens of `rows` (right-padded into one tensor).

    The LM head runs on the response positions only: prompts are most of every sequence, and
    the vocabulary projection of their hidden states would cost compute for no loss
    (docs/tiny.md).
    """
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    row_index, positions, targets = [], [], []
    for row, (ids, start) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        # Position p predicts token p + 1: responses ids[start:] from positions start-1 .. end-2.
        row_index += [row] * (len(ids) - start)
        positions += range(start - 1, len(ids) - 1)
        targets += ids[start:]
    hidden = model.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    logits = model.lm_head(hidden[torch.tensor(row_index), torch.tensor(positions)])
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(targets), reduction="sum")
    return loss, len(targets)


def train_and_save(
    base: Path, out: Path, examples: list[WarmExample], tiny: TinyModelConfig
) -> dict:
    """AdamW on the response tokens (prompt tokens masked), then save model + tokenizer to `out`.

    Each step draws its sequences from the example groups by :data:`GROUPS`; proposals (long
    prompts) and solves (short ones) are padded separately, so solves do not pay for the width
    of proposer prompts. The loss is the token mean over the step's response tokens.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    encoded = [(ex.group, _encode(tokenizer, ex)) for ex in examples]
    kept = [(group, e) for group, e in encoded if len(e[0]) <= MAX_SEQ_TOKENS]
    by_group = {g: [e for group, e in kept if group == g] for g in GROUPS}
    shares = _batch_shares(tiny.warm_start_batch_size)
    torch.manual_seed(tiny.seed)
    rng = random.Random(tiny.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tiny.warm_start_lr, weight_decay=0.01)
    steps = tiny.warm_start_steps
    warmup = max(1, steps // 20)

    def lr_factor(step: int) -> float:  # linear warm-up, cosine decay to 10 %
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    started, losses, done = time.perf_counter(), [], 0
    with one_thread():
        for step in (bar := tqdm(range(steps), desc="warm start", unit="step")):
            # Each example group fills its own share of the batch (GROUPS).
            drawn = {
                g: rng.sample(by_group[g], min(n, len(by_group[g]))) for g, n in shares.items()
            }
            chunks = [drawn["propose"], drawn["induce"], drawn["solve"]]
            chunks = [rows for rows in chunks if rows]
            parts = [_response_loss(model, rows, tokenizer.pad_token_id) for rows in chunks]
            # One token mean over the whole step, not a mean of the chunks' means.
            tokens = sum(n for _, n in parts)
            loss = sum(part for part, _ in parts) / max(1, tokens)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            done = step + 1
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if time.perf_counter() - started > tiny.warm_start_max_seconds:
                log.warning("warm start stopped at step %d: time cap reached", done)
                break
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    seconds = time.perf_counter() - started
    return {
        "steps": done,
        "capped": done < steps,
        "seconds": round(seconds, 1),
        "steps_per_second": round(done / max(seconds, 1e-9), 2),
        "examples": {g: len(rows) for g, rows in by_group.items()},
        "loss_first": losses[0] if losses else None,
        "loss_last": sum(losses[-10:]) / max(1, len(losses[-10:])),
    }


def eval_prompts(per_combo: int, *, seed: int) -> list[WarmExample]:
    """`per_combo` fresh warm-split prompts per (task, role) (another seed than training's);
    responses are the references."""
    examples = build_examples(seed=seed + 1_000_003, per_combo=per_combo)
    return [ex for combo in COMBOS for ex in _by_combo(examples, combo)[:per_combo]]


def _by_combo(examples: list[WarmExample], combo: tuple[TaskType, Role]) -> list[WarmExample]:
    return [ex for ex in examples if (ex.task, ex.role) == combo]


def program_is_valid_syntax(program: str | None) -> bool:
    """Parses as Python and defines a top-level `f` (static check only, nothing runs)."""
    if not program:
        return False
    try:
        with AST_LOCK:
            tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(n, ast.FunctionDef) and n.name == "f" for n in tree.body)


def evaluate(
    model_dir: Path,
    *,
    seed: int,
    per_combo: int | None = None,
    samples: int | None = None,
    max_new_tokens: int | None = None,
) -> dict:
    """Figures on fresh warm-split prompts: greedy format-valid rate per combination, deduction
    accuracy, and the valid-program rate of temperature-1 sampled deduction/abduction
    proposals (the probe, `azr eval --benchmarks probe`, is the held-out measure)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    per_combo = per_combo or EVAL_PER_COMBO
    samples = samples or EVAL_SAMPLES
    max_new_tokens = max_new_tokens or EVAL_MAX_NEW_TOKENS
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    examples = eval_prompts(per_combo, seed=seed)

    def generate(batch: list[WarmExample], *, sample: bool) -> list[str]:
        texts = [prompts.render_chat(tokenizer, ex.prompt) for ex in batch]
        enc = tokenizer(texts, return_tensors="pt", padding=True)
        torch.manual_seed(seed)
        with torch.no_grad(), one_thread():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=1.0 if sample else None,
                top_p=1.0 if sample else None,
                top_k=0 if sample else None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    # Greedy: format-valid rate per combination, and the accuracy of the deduction solves.
    report: dict[str, object] = {}
    correct_o = total_o = 0
    for task, role in COMBOS:
        batch = _by_combo(examples, (task, role))
        parsed = [parse_response(text, task, role) for text in generate(batch, sample=False)]
        ok = [p for p in parsed if not isinstance(p, FormatError)]
        report[f"format_valid/{task}/{role}"] = len(ok) / len(batch)
        if (task, role) == (TaskType.DEDUCTION, Role.SOLVE):
            for ex, p in zip(batch, parsed, strict=True):
                total_o += 1
                if isinstance(p, FormatError) or p.output is None:
                    continue
                want = literal(_block_of(ex.response, task, role))
                got = literal(p.output)
                correct_o += int(got[0] and want[0] and got[1] == want[1])
    report["deduction_accuracy"] = correct_o / max(1, total_o)
    # Sampled at temperature 1, as self-play proposes: how often a proposal is a valid program.
    proposals = [ex for ex in examples if ex.role == Role.PROPOSE and ex.task != TaskType.INDUCTION]
    batch = [proposals[i % len(proposals)] for i in range(samples)]
    valid = 0
    for ex, text in zip(batch, generate(batch, sample=True), strict=True):
        p = parse_response(text, ex.task, ex.role)
        if isinstance(p, FormatError) or len(p.inputs) != 1:
            continue
        valid += int(program_is_valid_syntax(p.program) and literal(f"({p.inputs[0]},)")[0])
    report["proposal_valid_program_rate"] = valid / len(batch)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _block_of(response: str, task: TaskType, role: Role) -> str:
    parsed = parse_response(response, task, role)
    assert not isinstance(parsed, FormatError) and parsed.output is not None
    return parsed.output


def main() -> None:
    """Build (or reuse) the tiny model of configs/tiny.yaml and print its warm-start report."""
    from azr.config import load_config

    logging.basicConfig(level=logging.INFO)
    model = load_config().model  # configs/tiny.yaml: the model `make run` uses
    path = tiny_model(model.tiny, Path(model.cache_dir).expanduser())
    print(path)
    print((path / "warm_start.json").read_text())


if __name__ == "__main__":
    main()
