"""The checkout is self-contained: no tracked file names a place outside the repository.

A user's clone has no sibling folders and lives at a path of its own, so code, tests,
benchmarks, configs, the Makefile and docs must not name the development folder beside the
checkout, the checkout's own absolute location or its parent, or climb out of the repo with
``Path(__file__).parents[k]``.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
from support import REPO_ROOT

from azr.cruxeval import CRUXEVAL_FILE, load_cruxeval

REPO = REPO_ROOT
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".json", ".cfg", ".txt", ""}
# Spelled in two parts so that this file does not name the folder it looks for.
BESIDE = "shared"
SIBLING = re.compile(rf"\.\./{BESIDE}|(?<![\w.-]){BESIDE}/data\b")


def tracked_files(repo: Path) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True
    ).stdout.decode()
    return [repo / name for name in out.split("\0") if name]


def outside_references(repo: Path, files: list[Path]) -> list[str]:
    """`path:line: what` for every reference to a place outside `repo`."""
    # The checkout's own location and its parent (skipped when it is "/": every path has it).
    places = [str(repo)] + ([str(repo.parent)] if repo.parent != repo.parent.parent else [])
    own = [(place, re.compile(rf"(?<![\w/.]){re.escape(place)}(?![\w.-])")) for place in places]
    found = []
    for path in files:
        if path.suffix not in TEXT_SUFFIXES or not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        rel = path.relative_to(repo)
        for number, line in enumerate(text.splitlines(), start=1):
            if SIBLING.search(line):
                found.append(f"{rel}:{number}: names a folder beside the repo: {line.strip()}")
                continue
            for place, pattern in own:
                if pattern.search(line):
                    found.append(f"{rel}:{number}: names {place}: {line.strip()}")
                    break
        if path.suffix == ".py":
            found += [f"{rel}:{n}: {why}" for n, why in _climbs_out(path, repo, text)]
    return found


def _climbs_out(path: Path, repo: Path, source: str) -> list[tuple[int, str]]:
    """``Path(__file__)...parents[k]`` / ``.parent`` chains that leave the repository."""
    depth = len(path.relative_to(repo).parts)  # parents[depth - 1] is the repo root
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    hits = []
    for node in ast.walk(tree):
        ups = _levels_above_file(node)
        if ups is not None and ups > depth:
            hits.append((node.lineno, f"climbs {ups} levels above {path.name} (repo is {depth})"))
    return hits


def _levels_above_file(node: ast.AST) -> int | None:
    """How many directories above ``__file__`` an expression points (None: not such a chain)."""
    ups = 0
    while True:
        if isinstance(node, ast.Subscript) and _attr(node.value) == "parents":
            index = node.slice
            if not (isinstance(index, ast.Constant) and isinstance(index.value, int)):
                return None
            ups += index.value + 1
            node = node.value.value  # type: ignore[attr-defined]
        elif _attr(node) == "parent":
            ups += 1
            node = node.value  # type: ignore[attr-defined]
        elif isinstance(node, ast.Call) and _attr(node.func) == "resolve":
            node = node.func.value  # type: ignore[attr-defined]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            if node.func.id != "Path":
                return None
            arg = node.args[0]
            is_file = isinstance(arg, ast.Name) and arg.id == "__file__"
            return ups if is_file and ups else None
        else:
            return None


def _attr(node: ast.AST) -> str | None:
    return node.attr if isinstance(node, ast.Attribute) else None


def test_no_tracked_file_names_a_place_outside_the_repo():
    found = outside_references(REPO, tracked_files(REPO))
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("relative", "text", "why"),
    [
        ("azr/x.py", f'DATA = "../{BESIDE}/data/cruxeval.jsonl"\n', "beside the repo"),
        ("tests/x.py", 'P = Path(__file__).resolve().parents[2] / "shared"\n', "climbs 3"),
        ("x.py", "P = Path(__file__).parent.parent / 'data'\n", "climbs 2"),
        ("configs/x.yaml", "data: {REPO}/data/x.jsonl\n", "names "),
        ("Makefile", "DATA := {PARENT}/shared-things\n", "names "),
    ],
)
def test_the_check_catches_each_kind_of_outside_reference(tmp_path, relative, text, why):
    """Shown on a scratch repo: each kind of outside reference is reported with its line."""
    repo = tmp_path / "clone"
    target = repo / relative
    target.parent.mkdir(parents=True)
    target.write_text(text.replace("{REPO}", str(repo)).replace("{PARENT}", str(tmp_path)))
    (repo / "fine.py").write_text("ROOT = Path(__file__).resolve().parent\n")
    found = outside_references(repo, [target, repo / "fine.py"])
    assert len(found) == 1 and found[0].startswith(f"{relative}:1: ") and why in found[0], found


def test_the_bundled_cruxeval_is_whole():
    rows = load_cruxeval()
    assert CRUXEVAL_FILE.is_relative_to(REPO)
    assert len(rows) == 800 and len({r.id for r in rows}) == 800
    assert sum(r.held_out for r in rows) == 400
    assert (CRUXEVAL_FILE.parent / "LICENSE").read_text().startswith("MIT License")
