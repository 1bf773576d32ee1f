"""Make the shipped probe file: ``python -m driver.probe_data [--out FILE]``.

Draws the probe's programs and inputs (`azr.tiny.probe.draft_probe`, probe split of the tiny
model's program families), runs every program in the executor's sandbox (the process backend,
in this process's own fork-server) for its outputs, and writes one JSON row per task. A program
the executor refuses stops the build naming it: the probe ships only tasks with gold answers.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from azr.config import ExecutorConfig
from azr.tiny.probe import (
    PER_TYPE,
    PROBE_FILE,
    PROBE_SEED,
    complete,
    draft_probe,
    validate_requests,
)
from executor_pool.executor import SandboxExecutor

CHUNK = 64


def build(out: Path, seed: int, per_type: int) -> Counter[str]:
    drafts = draft_probe(seed, per_type)
    requests = validate_requests(drafts)
    rows = []
    with (
        SandboxExecutor(ExecutorConfig()) as executor,
        tqdm(total=len(drafts), desc="probe") as bar,
    ):
        for start in range(0, len(drafts), CHUNK):
            chunk = slice(start, start + CHUNK)
            for draft, result in zip(
                drafts[chunk], executor.validate_many(requests[chunk]), strict=True
            ):
                if not result.valid or result.outputs is None:
                    raise SystemExit(f"{draft.id}: the executor refused {draft.program!r}: "
                                     f"{result.reason}")  # fmt: skip
                rows.append(complete(draft, result.outputs))
            bar.update(len(drafts[chunk]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(row.to_json() + "\n" for row in rows))
    return Counter(str(row.task) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROBE_FILE)
    parser.add_argument("--seed", type=int, default=PROBE_SEED)
    parser.add_argument("--per-type", type=int, default=PER_TYPE)
    args = parser.parse_args()
    counts = build(args.out, args.seed, args.per_type)
    print(f"{args.out}: {dict(counts)}")


if __name__ == "__main__":
    main()
