"""Every ``Example:`` block in clustercam runs and prints what it says; the main entry points
have one.

The modules are found by scanning the sources for ``>>>``, so the test covers exactly the
modules that have examples (a new example is picked up, and a module without one is not
listed to pass vacuously); a listed module whose ``>>>`` lines doctest cannot find (outside
a docstring, or in one doctest does not reach) fails.
"""

import doctest
import importlib
from pathlib import Path

import pytest
import torch

import clustercam
import clustercam.explain as explain

SRC = Path(clustercam.__file__).resolve().parent
ENTRY_POINTS = ["grad_ceam", "cardinality", "extract_concepts", "concept_importance",
                "score_explanations", "run_concepts", "explain_clusters", "GradCeAMTarget", "clam",
                "target_distribution"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(_module_name(p) for p in SRC.rglob("*.py") if ">>>" in p.read_text())


def _examples(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    # names outside the module are what it imports (their own module runs them)
    return [t for t in finder.find(module, module_name) if t.examples
            and t.name.startswith(module_name)]


def test_the_scan_finds_the_modules_with_examples():
    assert "clustercam.explain.gradceam.gradceam" in MODULES
    assert "clustercam" not in MODULES  # the package top holds the version only: not listed
    assert len(MODULES) < len(list(SRC.rglob("*.py")))


@pytest.mark.parametrize("module_name", MODULES)
def test_examples_run(module_name):
    tests = _examples(module_name)
    assert tests, f"{module_name} has '>>>' in its source but no example doctest can run"
    torch.manual_seed(0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        result = runner.run(test)
        assert result.failed == 0, f"{test.name}: {result.failed} of {result.attempted} examples failed"


def test_main_entry_points_have_an_example():
    for name in ENTRY_POINTS:
        doc = getattr(explain, name).__doc__ or ""
        assert "Example:" in doc and ">>>" in doc, f"{name} has no Example: block"
