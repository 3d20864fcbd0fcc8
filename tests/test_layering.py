"""The package's layers: every import (lazy ones included) points down, and nothing is cyclic."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "rgal"

# lower numbers are lower layers; a module may import its own package or lower layers only
LAYERS = {
    "_version": 0, "config": 0, "utils": 0, "distributed": 0,
    "amp": 1, "data": 1, "models": 1, "cliargs": 1, "compat": 1,
    "losses": 2, "export": 2,
    "engine": 3,
    "methods": 4,
    "train": 5, "quantization": 5, "incremental": 5,
    "api": 6, "extra_commands": 6,
    "cli": 7, "__main__": 8, "__init__": 9,
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, root: Path) -> set[str]:
    """Every module of the package `path` imports, at any depth (lazy imports included)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == root.name:
                modules = {f"{target}.{a.name}" for a in node.names
                           if (root.parent / f"{target}.{a.name}".replace(".", "/"))
                           .with_suffix(".py").exists()}
                found.update(modules)
                if len(modules) < len(node.names):  # names defined in the module itself
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == root.name)
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph(root: Path = SRC) -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    return {_module_name(p, root): _imports(p, root) for p in root.rglob("*.py")}


def upward_imports(root: Path = SRC) -> list[str]:
    """Imports from a module into a top-level part of the same or a higher layer."""
    bad = []
    for module, targets in graph(root).items():
        if module == root.name:  # the package's front door re-exports the API
            continue
        own = _top(module)
        for target in targets:
            other = _top(target)
            if other != own and LAYERS.get(other, 99) >= LAYERS.get(own, 99):
                bad.append(f"{module} -> {target}")
    return sorted(bad)


def import_cycle(root: Path = SRC) -> list[str]:
    """One cycle among the package's modules (imports of packages themselves ignored)."""
    g = graph(root)
    modules = {m for m in g if m != root.name}
    edges = {m: {t for t in g[m] if t in modules
                 and not (root.parent / t.replace(".", "/")).is_dir()} for m in modules}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str]:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if state.get(t) is None:
                found = visit(t, stack + [t])
                if found:
                    return found
        state[m] = 2
        return []

    for m in sorted(modules):
        if state.get(m) is None:
            found = visit(m, [m])
            if found:
                return found
    return []


def test_every_top_level_part_has_a_layer():
    tops = {_top(m) for m in graph()}
    assert tops <= set(LAYERS), tops - set(LAYERS)


def test_imports_point_down():
    assert upward_imports() == []


def test_no_import_cycles_between_modules():
    assert import_cycle() == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    pkg = tmp_path / "rgal"
    for sub in ("engine", "train"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("from .train import loop\n")
    (pkg / "engine" / "core.py").write_text("def f():\n    from ..cli import main\n")
    (pkg / "train" / "loop.py").write_text("from . import util\n")
    (pkg / "train" / "util.py").write_text("from .loop import x\n")
    assert upward_imports(pkg) == ["rgal.engine.core -> rgal.cli"]
    assert import_cycle(pkg) in (["rgal.train.loop", "rgal.train.util", "rgal.train.loop"],
                                 ["rgal.train.util", "rgal.train.loop", "rgal.train.util"])
