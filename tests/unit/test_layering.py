"""The import layering of docs/design.md, checked on the source's ASTs (nothing is imported).

- `azr/` (the method and the contracts) imports no other top-level package of the repo and
  no Ray: components and the driver stand on it, never the other way round.
- Components (`actors/`, `learner/`, `executor_pool/`, `buffer_service/`) never import the
  driver or each other.
- No module imports itself back through others: the module import graph has no cycle
  (TYPE_CHECKING-only imports count too: they are the same coupling, postponed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support import REPO_ROOT

REPO = REPO_ROOT
PACKAGES = ("azr", "driver", "actors", "learner", "executor_pool", "buffer_service")
COMPONENTS = ("actors", "learner", "executor_pool", "buffer_service")
FORBIDDEN_IN_AZR = (*[p for p in PACKAGES if p != "azr"], "ray", "vllm")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path, modules: set[str] | None = None) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute names).

    ``from pkg import name`` names ``pkg.name`` when that is one of ``modules`` (a submodule),
    else ``pkg`` itself.
    """
    package = module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if modules is not None and submodule in modules else base)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the repo modules it imports (only modules that exist in the tree)."""
    files = [p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))]
    modules = {module_name(p, root): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = imports_of(path, root, set(modules))
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def layering_violations(root: Path) -> list[str]:
    bad = []
    for path in sorted((root / "azr").rglob("*.py")):
        for name in sorted(imports_of(path, root)):
            if name.split(".")[0] in FORBIDDEN_IN_AZR:
                bad.append(f"{path.relative_to(root)} imports {name}: azr/ stands on nothing")
    for component in COMPONENTS:
        for path in sorted((root / component).rglob("*.py")):
            for name in sorted(imports_of(path, root)):
                top = name.split(".")[0]
                if top == "driver" or (top in COMPONENTS and top != component):
                    bad.append(f"{path.relative_to(root)} imports {name}: components stand apart")
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_azr_and_components_import_nothing_above_them():
    assert layering_violations(REPO) == []


def test_no_import_cycles():
    assert import_cycles(import_graph(REPO)) == []


def _scratch_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"azr/config/run.py": "import ray\n"}, "azr/config/run.py imports ray"),
        (
            {"azr/config/run.py": "from driver.loop import train\n"},
            "azr/config/run.py imports driver",
        ),
        ({"azr/x.py": "def f():\n    from learner import group\n"}, "azr/x.py imports learner"),
        ({"learner/a.py": "from actors.rollout import X\n"}, "learner/a.py imports actors"),
        ({"actors/a.py": "import driver.runtime\n"}, "actors/a.py imports driver.runtime"),
    ],
)
def test_a_back_import_is_caught(tmp_path: Path, files: dict[str, str], expected: str):
    root = _scratch_tree(tmp_path, files)
    assert any(v.startswith(expected) for v in layering_violations(root)), expected


def test_a_cycle_is_caught_even_through_type_checking_imports(tmp_path: Path):
    root = _scratch_tree(
        tmp_path,
        {
            "azr/a.py": "from azr.b import B\n",
            "azr/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from azr.c import C\n",
            "azr/c.py": "from . import a\n",
        },
    )
    assert import_cycles(import_graph(root)) == [["azr.a", "azr.b", "azr.c"]]


def test_test_files_have_unique_basenames():
    """tests/unit and tests/integration are not packages: pytest imports test files by their
    basename, so two files of one name would make collection fail."""
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
