"""The layering docs/ARCHITECTURE.md ("Boundaries") promises, read from the source with `ast`:
every import statement counts, wherever it sits (module level, inside a function, under
`if TYPE_CHECKING`), and so does `importlib.import_module("...")` with a literal name.

- components/ imports nothing from trainyard/ (the CLI uses components, never the reverse);
- components/ has no import cycles (pure modules such as netmath stay leaves).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "components"
FILES = sorted(p for p in ROOT.rglob("*.py") if "data" not in p.relative_to(ROOT).parts)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; `from pkg import mod` gives `pkg.mod` too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" \
        else module_name(path)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if a.name != "*"}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", None)) == "import_module" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            out.add(node.args[0].value)
    return out


def test_the_scan_sees_every_kind_of_import(tmp_path):
    """The checker itself: lazy, TYPE_CHECKING, relative and importlib imports all count."""
    pkg = tmp_path / "components"
    pkg.mkdir()
    (pkg / "probe.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from trainyard.plan import x\n"
        "def f():\n    import trainyard.cli\n    from . import netmath\n"
        "    importlib.import_module('trainyard.job')\n")
    global ROOT
    saved, ROOT = ROOT, pkg
    try:
        names = imported(pkg / "probe.py")
    finally:
        ROOT = saved
    assert {"trainyard.plan", "trainyard.cli", "components.netmath", "trainyard.job"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_components_never_import_trainyard(path):
    bad = sorted(n for n in imported(path) if n == "trainyard" or n.startswith("trainyard."))
    assert not bad, f"{path.relative_to(ROOT.parent)} imports {', '.join(bad)}: components/ " \
                    "must not depend on the CLI (move what it needs into components/)"


def test_components_have_no_import_cycles():
    mods = {module_name(p): p for p in FILES}
    graph = {m: sorted({n for n in imported(p) if n in mods and n != m}) for m, p in mods.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles in components/: " + "; ".join(" -> ".join(c)
                                                                       for c in cycles)


def test_netmath_is_a_leaf():
    """Subnet math is pure: it imports nothing of components/ (config imports it)."""
    assert not {n for n in imported(ROOT / "network" / "netmath.py") if n.startswith("components")}
