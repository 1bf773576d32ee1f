"""Program families: the small world of programs the tiny model is warm-started on and probed in.

A family is a one-line Python predicate over a short list of digits with one constant in it
(``return 3 in xs``, ``return max(xs) > 6``). Drawing the constant gives distinct programs
(distinct program keys); drawing lists gives inputs. Every program and every input falls, by a
hash of its text, into one of two *splits*: ``warm`` (the warm start trains on it) or ``probe``
(the fixed probe asks it): so the probe's programs and inputs are disjoint from the warm start's
by construction, and tests/unit/test_probe.py checks it by the buffer's program key.

Why predicates: a model of a million parameters trained for minutes on a CPU does not learn to
copy a list or a number it has not seen into its answer (measured: 0% on unseen list-building
programs after 2,000 warm-start steps, docs/tiny.md), but it does learn a decision from a few
features of a list; each family's constants are chosen so both answers occur, and inputs are
drawn to alternate True and False, so always answering one way scores 50%.

Each family has a trusted twin (``apply``): the same function written here, used only to give
the warm start its answers (this is our own code, not model output); the probe's gold answers
come from the executor (`azr/tiny/probe.py`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Split = Literal["warm", "probe"]
PROBE_SHARE = 4
"""One text in this many (by hash) belongs to the probe split."""


def _rank(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def split_of(text: str) -> Split:
    """Which split an input text belongs to (a fixed hash rule; programs: `Family.split`)."""
    return "probe" if _rank(text)[0] % PROBE_SHARE == 0 else "warm"


def draw_digits(rng: random.Random, length: tuple[int, int] = (1, 4)) -> list[int]:
    return [rng.randint(0, 9) for _ in range(rng.randint(*length))]


@dataclass(frozen=True)
class Family:
    """Programs ``def f(xs): return <template with constants>`` over a list of digits."""

    name: str
    template: str
    """Body of ``f`` (after ``def f(<arg>):``), with ``{name}`` placeholders for constants."""
    grid: tuple[dict[str, object], ...] = field(repr=False)
    """Every setting of the constants (one program each)."""
    apply: Callable[..., object] = field(repr=False)
    """The trusted twin: ``apply(argument, **params)`` is what the program returns."""
    hint: str = field(repr=False)
    """Induction message: what the family does, without its constants."""

    def program(self, params: dict[str, object]) -> str:
        body = self.template.format(**{k: repr(v) for k, v in params.items()})
        return f"def f(xs):\n    return {body}"

    def split(self, split: Split) -> list[dict[str, object]]:
        """The constants of this family's programs in ``split``: ordered by a hash of the
        program text, every :data:`PROBE_SHARE`-th is the probe's (so every family has
        programs in both splits)."""
        ranked = sorted(self.grid, key=lambda params: _rank(self.program(params)))
        probe = ranked[::PROBE_SHARE]
        return probe if split == "probe" else [p for p in ranked if p not in probe]


def _grid(**values: object) -> tuple[dict[str, object], ...]:
    """Every combination of the named value lists (pairs of equal letters left out)."""
    names = list(values)
    combos = itertools.product(*values.values())
    return tuple(
        dict(zip(names, combo, strict=True))
        for combo in combos
        if not ("a" in names and "b" in names and combo[0] == combo[1])
    )


FAMILIES: tuple[Family, ...] = (
    Family("longer", "len(xs) > {k}", _grid(k=range(1, 4)),
           lambda xs, k: len(xs) > k, "It checks whether the list is longer than a limit."),
    Family("has", "{k} in xs", _grid(k=range(10)),
           lambda xs, k: k in xs, "It checks whether a number is in the list."),
    Family("max", "max(xs) > {k}", _grid(k=range(1, 9)),
           lambda xs, k: max(xs) > k, "It checks whether some item is above a limit."),
    Family("min", "min(xs) < {k}", _grid(k=range(1, 9)),
           lambda xs, k: min(xs) < k, "It checks whether some item is below a limit."),
    Family("head", "xs[0] > {k}", _grid(k=range(1, 9)),
           lambda xs, k: xs[0] > k, "It checks whether the first item is above a limit."),
    Family("tail", "xs[-1] < {k}", _grid(k=range(1, 9)),
           lambda xs, k: xs[-1] < k, "It checks whether the last item is below a limit."),
)  # fmt: skip
"""Every family; all programs of a family share its hint."""


@dataclass(frozen=True)
class FamilyTask:
    """One program of a family with its inputs (argument-list texts) and the twin's outputs."""

    family: Family
    program: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def draw_program(family: Family, rng: random.Random, split: Split) -> tuple[str, dict]:
    """A uniformly drawn program of ``family`` in ``split``, and its constants."""
    params = rng.choice(_split_grid(family.name, split))
    return family.program(params), params


@functools.cache
def _split_grid(name: str, split: Split) -> list[dict[str, object]]:
    return next(f for f in FAMILIES if f.name == name).split(split)


def draw_inputs(
    family: Family,
    params: dict,
    rng: random.Random,
    split: Split,
    count: int,
    first: bool | None = None,
) -> list[tuple[str, str]]:
    """``count`` distinct (input, output) texts in ``split``, the output by the twin; the
    outputs alternate True and False from ``first`` (None: a random one), so a task with one
    input is True or False with even odds and an induction task shows both answers and hides
    both."""
    first = rng.random() < 0.5 if first is None else first
    pairs: dict[str, str] = {}
    for _ in range(1000 * count):
        if len(pairs) == count:
            break
        argument = draw_digits(rng)
        text = repr(argument)
        result = family.apply(argument, **params)
        wanted = first if len(pairs) % 2 == 0 else not first
        if split_of(text) != split or text in pairs or result != wanted:
            continue
        pairs[text] = repr(result)
    if len(pairs) < count:
        raise ValueError(f"family {family.name} {params}: fewer than {count} {split} inputs")
    return list(pairs.items())


def draw_task(rng: random.Random, split: Split, n_inputs: int = 1) -> FamilyTask:
    """A uniformly drawn family, one of its programs in ``split``, ``n_inputs`` inputs."""
    family = rng.choice(FAMILIES)
    program, params = draw_program(family, rng, split)
    pairs = draw_inputs(family, params, rng, split, n_inputs)
    return FamilyTask(family, program, tuple(i for i, _ in pairs), tuple(o for _, o in pairs))
