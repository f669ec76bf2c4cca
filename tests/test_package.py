"""clustercam as a user installs it: the wheel carries its configs, runs from any folder, and
a user's own model, data and configs compose with the packaged ones (the documented example)."""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from clustercam import outputs
from tests.helpers import REPO
from tests.helpers.run import OFFLINE, check_contract


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the files a source distribution holds."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "local")
    shutil.copytree(REPO / "src", src / "src", ignore=ignore)
    shutil.copytree(REPO / "conf", src / "conf", ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(src)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("clustercam-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed (no deps) into an empty target folder, as a user's site-packages."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, text=True)
    return target


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **OFFLINE, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(target)}
    env.pop("CLUSTERCAM_ROOT", None)
    return subprocess.run([str(target / "bin" / "clustercam-train"), *args, "print_config=false"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_wheel_carries_the_configs_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    conf = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")
            if "local" not in p.parts}
    assert {f"clustercam/conf/{c}" for c in conf} <= names
    assert {"clustercam/py.typed", "clustercam/conf/train.yaml", "clustercam/conf/debug/fdr.yaml"} <= names
    templates = {f"clustercam/reporting/templates/{p.name}"
                 for p in (REPO / "src" / "clustercam" / "reporting" / "templates").glob("*.html.j2")}
    assert len(templates) == 3 and templates <= names  # the report's pages


def test_the_wheel_has_the_one_version_number(wheel):
    import clustercam

    assert wheel.name.startswith(f"clustercam-{clustercam.__version__}-")


def test_the_installed_wheel_runs_from_an_empty_folder(installed, tmp_path):
    where = subprocess.run([sys.executable, "-c", "import clustercam.runtime.configs as c; print(c.__file__, c.config_path())"],
                           env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True)
    assert where.stdout.startswith(str(installed)) and "pkg://clustercam.conf" in where.stdout
    proc = run_installed(installed, tmp_path, "experiment=trace", "debug=fdr")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "debug" / "runs").iterdir()  # outputs where the user started
    check_contract(run, k=4, checkpoint=False)
    # report=true: the page, from the templates the wheel carries; and its console script
    assert (run / outputs.REPORT_INDEX).is_file() and (installed / "bin" / "clustercam-report").is_file()


def readme_example() -> dict[str, str]:
    """The files of the "Your own model and data" page (docs/guide/your-own.md), by their name line."""
    text = (REPO / "docs" / "guide" / "your-own.md").read_text()
    section = text[text.index("<!-- byo:start"):text.index("<!-- byo:end -->")]
    files = {}
    for body in re.findall(r"```(?:python|yaml)\n(.*?)```", section, flags=re.S):
        name = re.search(r"^# file: (\S+)$", body, flags=re.M).group(1)
        files[name] = body
    return files


def test_the_readme_bring_your_own_example_runs_from_its_folder(installed, tmp_path):
    files = readme_example()
    assert {"my_model.py", "my_data.py", "conf/experiment/my_experiment.yaml"} <= set(files)
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    proc = run_installed(installed, tmp_path, "--config-dir=./conf", "experiment=my_experiment",
                         "logger=none", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    metrics = check_contract(run, k=2)
    assert metrics["n_samples"] == 200 and "my_data.Bumps" in (run / "config.yaml").read_text()
