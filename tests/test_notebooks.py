"""The notebooks in notebooks/ run top to bottom, offline, in their small setting.

Each notebook is executed with nbclient in a fresh kernel. The kernel is *this* Python
(``sys.executable``, i.e. the project's .venv under ``make test``): the test writes its own
kernelspec into a temporary directory with ipykernel and points a KernelSpecManager at it,
so neither a user-level ``python3`` kernelspec nor ``python`` on PATH can pick another
interpreter, and nothing needs to be installed beforehand. The notebooks read
``CLUSTERCAM_NB_FAST=1`` in their first cell and shrink themselves (one epoch, a smaller
network, fewer samples); each prints one ``CLUSTERCAM_RESULT {json}`` line that is checked here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from ipykernel.kernelspec import write_kernel_spec  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

from tests.helpers import needs_imagenet11  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
KERNEL = "clustercam-test"
MARKER = "CLUSTERCAM_RESULT "
TIMEOUT = 600  # per cell, seconds (generous: the CI machine may be busy)


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec whose argv is [sys.executable, -m, ipykernel_launcher, ...]."""
    kernels = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(path=str(kernels / KERNEL))
    spec = json.loads((kernels / KERNEL / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    return kernels


@pytest.fixture
def fast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the kernel inherits: the small setting, no network, headless plotting."""
    monkeypatch.setenv("CLUSTERCAM_NB_FAST", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # the notebooks switch to inline themselves
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiet debugpy warning
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # robust on a shared, busy CPU


def execute(name: str, kernel_dir: Path) -> nbformat.NotebookNode:
    """Run notebooks/<name> in a fresh kernel with notebooks/ as its working directory."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    km = KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    )
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=TIMEOUT,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def result_of(nb: nbformat.NotebookNode) -> dict:
    lines = [
        line
        for out in outputs(nb)
        if out.get("output_type") == "stream" and out.get("name") == "stdout"
        for line in out["text"].splitlines()
        if line.startswith(MARKER)
    ]
    assert len(lines) == 1, f"expected one {MARKER.strip()} line, got {len(lines)}"
    return json.loads(lines[0][len(MARKER) :])


def n_images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for out in outputs(nb))


@pytest.mark.parametrize("name", ["01_gradceam_timeseries.ipynb", "02_concepts_imagenet.ipynb"])
def test_notebook_is_saved_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name} was saved with outputs: clear them (small diffs)"
            )
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_gradceam_timeseries_notebook(kernel_dir: Path, fast_env: None) -> None:
    nb = execute("01_gradceam_timeseries.ipynb", kernel_dir)
    res = result_of(nb)
    assert res["dataset"] == "Trace" and res["epochs"] == 1
    n, k, length = res["n_samples"], res["n_clusters"], res["length"]
    assert (n, k, length) == (40, 4, 275)
    for mode in ("reference", "assignment"):
        assert res["heatmap_shape"][mode] == [n, k, length]
    assert set(res["cardinality_median"]) == {"paper", "reference", "assignment"}
    assert 0 <= res["scores"]["nmi"] <= 1 and 0 <= res["scores"]["acc"] <= 1
    # K member figures per mode (2 modes) and one all-clusters figure per mode, inline
    assert n_images(nb) >= 2 * k + 2


@needs_imagenet11("the notebook explains one of the real photos")
def test_concepts_imagenet_notebook(kernel_dir: Path, fast_env: None) -> None:
    nb = execute("02_concepts_imagenet.ipynb", kernel_dir)
    res = result_of(nb)
    assert res["activations_shape"] == [1, 2048, 8, 8]
    assert res["input_size"] == [256, 256]
    n = res["n_concepts"]
    for method in ("cgap", "cpha"):
        r = res["methods"][method]
        assert len(r["counts"]) == n and sum(r["counts"]) == res["kept_channels"]
        assert len(r["importance"]) == n
        assert r["maps_shape"] == [1, n, 256, 256]
        assert 0 <= r["maps_min"] <= r["maps_max"] <= 1
        assert -1 <= r["metrics"]["silhouette"] <= 1
    assert len(res["sub_concepts_split"]) == n
    if res["random_weights"]:  # said loudly, in the output too
        assert "RANDOM" in res["weights"]
    assert n_images(nb) >= 3  # the image, one concept figure per method (+ sub-concepts)
