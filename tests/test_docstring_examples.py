"""Every ``Example:`` block in clustercam.explain runs and prints what it says; the main
entry points have one."""

import doctest
import importlib
import pkgutil

import pytest
import torch

import clustercam.explain as explain

MODULES = sorted(m.name for m in pkgutil.walk_packages(explain.__path__, "clustercam.explain."))
ENTRY_POINTS = ["grad_ceam", "cardinality", "extract_concepts", "concept_importance",
                "score_explanations", "run_concepts", "explain_clusters", "GradCeAMTarget", "clam",
                "target_distribution"]


def _examples(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    # names outside the module are what it imports (their own module runs them)
    return [t for t in finder.find(module, module_name) if t.examples
            and t.name.startswith(module_name)]


@pytest.mark.parametrize("module_name", MODULES)
def test_examples_run(module_name):
    torch.manual_seed(0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _examples(module_name):
        result = runner.run(test)
        assert result.failed == 0, f"{test.name}: {result.failed} of {result.attempted} examples failed"


def test_main_entry_points_have_an_example():
    for name in ENTRY_POINTS:
        doc = getattr(explain, name).__doc__ or ""
        assert "Example:" in doc and ">>>" in doc, f"{name} has no Example: block"
