"""The methods layer imports neither Lightning, Hydra nor W&B (a user calls it on any
nn.Module, in a notebook); code flows one way: configs -> callbacks/modules -> explain."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

FORBIDDEN = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb")


def test_explain_imports_no_lightning_hydra_or_wandb_in_a_fresh_interpreter():
    code = (
        "import importlib, pkgutil, sys, clustercam.explain as e\n"
        "for m in pkgutil.walk_packages(e.__path__, 'clustercam.explain.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"clustercam.explain pulled in: {out.stdout}"


def test_explain_never_imports_the_layers_above_it():
    above = ("clustercam.callbacks", "clustercam.models", "clustercam.data", "clustercam.train",
             "clustercam.runtime.configs", "clustercam.outputs")
    for path in (REPO / "src" / "clustercam" / "explain").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        bad = [n for n in names if n.startswith(above) or n.split(".")[0] in FORBIDDEN]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_no_file_is_over_its_size_limit():
    src = REPO / "src" / "clustercam"
    for path in src.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        limit = 200 if path.parent.name == "callbacks" else 450
        assert lines <= limit, f"{path.relative_to(REPO)}: {lines} lines (limit {limit})"
    assert Path(src / "py.typed").is_file()


# -- import cycles -------------------------------------------------------------------------------
def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never executed)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules its code imports, at module level or inside functions.

    ``import a.b.c`` / ``from a.b import c`` depend on ``a.b.c`` (when it is a module) and on
    every package ``__init__`` on the way that is not an ancestor of the importer (those run
    first; an ancestor is already being initialised, so it adds no edge).
    """
    files = {_module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        is_pkg = path.name == "__init__.py"
        targets: list[str] = []
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importer's package upwards
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets.append(base)
                targets += [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
        deps: set[str] = set()
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                mod = ".".join(parts[:i])
                if mod in files and mod != name and not name.startswith(mod + "."):
                    deps.add(mod)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_import_cycle_inside_clustercam():
    cycles = import_cycles(import_graph(REPO / "src", "clustercam"))
    assert not cycles, f"import cycles (module- or function-level): {cycles}"


def test_the_cycle_detector_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg import a\n")  # a parent importing its child: no cycle
    (pkg / "a.py").write_text("import pkg.b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.sub.c import g\n    return g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..a import pkg as _\nfrom typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from pkg import b\n")
    (pkg / "d.py").write_text("from pkg.sub import c\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}  # the function-level import counts
    assert graph["pkg.sub.c"] == {"pkg.a"}  # relative; TYPE_CHECKING imports do not count
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]
    (pkg / "b.py").write_text("X = 1\n")
    assert import_cycles(import_graph(tmp_path, "pkg")) == []
