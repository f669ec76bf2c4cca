"""The run's page in a real headless browser (Debian's Chromium): every image loads, the
page's script runs without a console message, and a screenshot is saved in the test's
folder. ``make browser`` installs Chromium (``make test-all`` does it first); without it the
test is skipped and says so."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from clustercam import outputs
from tests.tracking.helpers import run_main

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        pytest.skip("no headless Chromium on this machine: `make browser` installs Debian's "
                    "(apt-get install chromium)")
    return exe


def browse(exe: str, page: Path, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    """Chromium headless on ``page`` (file://, no network), its console on stderr."""
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
            f"--user-data-dir={cwd / 'chromium-profile'}", *flags, page.resolve().as_uri()]
    env = {**os.environ, "HOME": str(cwd)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def check_in_browser(exe: str, index: Path, shot: Path, cwd: Path) -> str:
    proc = browse(exe, index, "--dump-dom", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    # the page's own load handler counts the images that did not load
    match = re.search(r'<html[^>]*data-broken-images="(\d+)"', proc.stdout)
    assert match is not None, "the page's script did not run"
    assert match.group(1) == "0"
    proc = browse(exe, index, "--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}", cwd=cwd)
    assert proc.returncode == 0 and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_the_run_page_loads_every_image_without_console_errors(tmp_path, monkeypatch):
    exe = chromium()
    out = tmp_path / "run"
    run_main(monkeypatch, out, "experiment=trace", "debug=fdr", "print_config=false")  # report=true
    index = out / outputs.REPORT_INDEX
    assert index.is_file()
    check_in_browser(exe, index, tmp_path / "report.png", tmp_path)
    print(f"screenshot: {tmp_path / 'report.png'}")


@pytest.mark.slow
def test_a_multirun_page_is_written_after_its_last_job_and_loads_in_the_browser(tmp_path):
    from tests.helpers.run import cli

    sweep = tmp_path / "sweep"
    cli("-m", "experiment=trace", "debug=fdr", "seed=1,2", f"hydra.sweep.dir={sweep}",
        "paths.output_dir=${hydra:runtime.output_dir}")
    index = sweep / outputs.REPORT_INDEX  # written by the Hydra callback after the last job
    assert index.is_file()
    text = index.read_text()
    assert 'href="../0/report/index.html"' in text and 'href="../1/report/index.html"' in text
    assert "seed=1" in text and "seed=2" in text
    exe = chromium()  # the files above are checked with or without a browser
    check_in_browser(exe, index, tmp_path / "multirun.png", tmp_path)
    check_in_browser(exe, sweep / "0" / outputs.REPORT_INDEX, tmp_path / "job0.png", tmp_path)
