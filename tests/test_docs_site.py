"""The documentation site builds with ``mkdocs build --strict`` (no broken link, anchor,
snippet or API reference), and the docs keep to what the repository holds: every config file
is on the configuration page, the README is a landing page whose links resolve, and no text
cites a document outside the repository."""

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCS = REPO / "docs"
# the packages of the `docs` extra (pyproject.toml), by import name
DOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_jupyter")


def _missing_docs_packages() -> list[str]:
    missing = []
    for name in DOCS_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = _missing_docs_packages()
    if missing:
        pytest.skip(f"the docs extra is not installed (missing {', '.join(missing)}): "
                    "pip install -e '.[docs]' to build the site")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO / "src")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    print(f"mkdocs build --strict: {time.perf_counter() - t0:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out


def test_the_strict_build_renders_every_page_api_and_notebook(site: Path):
    api = (site / "api" / "explain" / "index.html").read_text()
    for name in ("grad_ceam", "cardinality", "extract_concepts", "concept_importance", "concept_maps",
                 "run_concepts", "score_explanations", "neon"):
        assert re.search(rf'id="clustercam\.explain\.(\w+\.)?{name}"', api), f"{name} is not in the API reference"
    for nb in ("01_gradceam_timeseries", "02_concepts_imagenet"):
        assert (site / "notebooks" / nb / "index.html").is_file(), f"{nb} was not rendered"
    config = (site / "guide" / "configuration" / "index.html").read_text()
    assert "class_random" in config  # the yaml files are included, comments and all
    assert (site / "changelog" / "index.html").is_file()


def test_every_config_file_is_on_the_configuration_page():
    page = (DOCS / "guide" / "configuration.md").read_text()
    included = set(re.findall(r'^--8<-- "(conf/[^"]+\.yaml)"$', page, flags=re.M))
    files = {p.relative_to(REPO).as_posix() for p in (REPO / "conf").rglob("*.yaml")
             if "local" not in p.parts}
    assert files - included == set(), "config files missing from docs/guide/configuration.md"
    assert included - files == set(), "the configuration page includes files that do not exist"


def test_the_readme_is_a_landing_page_whose_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for needed in ("make run", "make test", ".whl", "```python"):
        assert needed in text, needed
    links = [link for link in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in link]
    assert links, "the README links into the docs"
    for link in links:
        assert (REPO / link).exists(), f"README links to a missing file: {link}"


def test_no_text_cites_a_document_outside_the_repository():
    word = re.compile(r"\b" + "SP" + r"EC\b")  # spelled apart so this file does not match
    tracked = subprocess.run(["git", "ls-files", "src", "conf", "tests", "benchmarks", "notebooks",
                              "docs", "README.md", "CHANGELOG.md"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout: no list of tracked files")
    texts = {name: (REPO / name).read_text(errors="ignore") for name in tracked
             if (REPO / name).is_file() and Path(name).suffix in {".py", ".md", ".yaml", ".ipynb", ".txt"}}
    assert [n for n, t in texts.items() if word.search(t)] == []
    assert [n for n in texts if n.startswith("docs/notes/")] == [], "work logs belong outside docs/"
    # the shared photos are named once, in tests/helpers; every other test imports that name
    quoted = '"sh' + 'ared"'  # spelled apart so this file does not match
    shared = [n for n, t in texts.items() if n.startswith("tests/") and quoted in t]
    assert shared == ["tests/helpers/__init__.py"]
