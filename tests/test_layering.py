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
