"""The run's web page (``clustercam-report``): every image and link resolves to a file in
the folder, every table of the run is on it, no network is needed; a multirun's page lists
every job; a folder that is not a run is one clear line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from clustercam import outputs
from clustercam.exceptions import UserError
from clustercam.reporting import main, write_report
from clustercam.reporting.folder import run_files
from clustercam.runtime.status import write_status
from tests.helpers.run import train
from tests.reporting.site_check import read, unresolved


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real debug run, plus a Markdown table and a figure in a sub-folder (what concept runs
    write) so every kind of file is on the page."""
    out = tmp_path_factory.mktemp("report") / "run"
    train(["experiment=trace", "debug=fdr", "logger=none"], out)
    (out / "summary.md").write_text("# Summary\n\n| method | score |\n| --- | --- |\n| a <b> | 0.5 |\n")
    (out / "figures" / "concepts").mkdir()
    shutil.copy(out / "figures" / "cluster_0.png", out / "figures" / "concepts" / "img_0_cgap.png")
    return out


def test_every_image_and_link_resolves_in_the_folder_and_every_figure_in_the_report(run_dir):
    index = write_report(run_dir)
    assert index == run_dir / outputs.REPORT_INDEX
    refs = read(index)
    assert unresolved(index, run_dir) == []
    tables = {f"../{p.as_posix()}" for p in run_files(run_dir) if p.suffix in (".csv", ".md")}
    inside = [r for r in refs.images + refs.links if r not in tables]
    assert inside and unresolved(index, index.parent) == [r for r in refs.links if r in tables]
    assert not list((run_dir / outputs.REPORT_FILES).rglob("*.csv"))  # a study's rglob finds each table once
    assert refs.external == []  # styles and script inline: no CDN, no network
    figures = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*.png") if outputs.REPORT not in p.parts)
    assert sorted(src.removeprefix("files/") for src in refs.images) == figures
    for src in refs.images:  # the copies are the run's files
        assert (index.parent / src).read_bytes() == (run_dir / src.removeprefix("files/")).read_bytes()


def test_every_table_of_the_run_folder_is_on_the_page(run_dir):
    index = write_report(run_dir)
    refs, text = read(index), index.read_text()
    tables = [p for p in run_files(run_dir) if p.suffix in (".csv", ".md")]
    assert {p.as_posix() for p in tables} == {"assignments.csv", "cardinality.csv", "summary.md"}
    assert {p.as_posix() for p in tables} <= set(refs.summaries)
    with open(run_dir / "cardinality.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert ["cluster", "before", "after", "ratio"] <= refs.headers
    assert [r["before"] for r in rows] == refs.cells[refs.cells.index(rows[0]["cluster"]) + 1::4][:len(rows)]
    assert "<td>a &lt;b&gt;</td>" in text  # the Markdown table rendered, its text escaped
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{metrics['nmi']:.4g}" in text and "gradceam_mode" in text
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["task_name"] == "debug"
    assert "task <code>debug</code>" in text


def test_the_galleries_group_clusters_and_sub_folders_with_captions(run_dir):
    text = write_report(run_dir).read_text()
    assert "Per cluster <span" in text and "Concepts <span" in text
    for c in range(4):
        assert f"<figcaption>cluster {c}</figcaption>" in text
    assert text.index("cluster 2</figcaption>") < text.index("cluster 3</figcaption>")


def test_a_new_page_replaces_the_old_one_and_its_files(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns(outputs.REPORT))
    write_report(run)
    (run / "figures" / "cluster_3.png").unlink()
    index = write_report(run)
    assert not (run / outputs.REPORT_FILES / "figures" / "cluster_3.png").exists()
    assert unresolved(index, run) == [] and "cluster 3" not in index.read_text()
    assert not [p for p in run.iterdir() if p.name.startswith(".report")]  # no temporary folders left


def test_a_multirun_page_lists_every_job_with_its_metrics_and_links(run_dir, tmp_path):
    sweep = tmp_path / "multirun"
    for job, nmi in enumerate((0.25, 0.75, 0.5)):
        folder = sweep / str(job)
        shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns(outputs.REPORT))
        metrics = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**metrics, "nmi": nmi}))
        (folder / ".hydra").mkdir(exist_ok=True)
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={job}"]))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    write_status(sweep / "1", "diverged", "training diverged at epoch 0")  # as the job's run left it
    index = write_report(sweep)
    assert index == sweep / outputs.REPORT_INDEX
    refs = read(index)
    assert refs.links == ["../0/report/index.html", "../1/report/index.html", "../2/report/index.html"]
    assert unresolved(index, sweep) == []  # every job's own page exists
    for job in range(3):
        assert unresolved(sweep / str(job) / outputs.REPORT_INDEX, sweep / str(job)) == []
    rows = [refs.cells[i:i + len(refs.headers)] for i in range(0, len(refs.cells), len(refs.headers))]
    nmi, status = refs.headers.index("nmi"), refs.headers.index("status")
    assert [(r[0], r[1], r[nmi], r[status]) for r in rows] == [
        ("0", "seed=0", "0.25", "finished"), ("1", "seed=1", "0.75", "diverged"), ("2", "seed=2", "0.5", "finished")]
    assert "1 of 3 jobs did not finish (1 diverged)" in " ".join(index.read_text().split())


def test_the_loggers_stores_checkpoints_and_resume_shards_are_no_results(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    (tmp_path / "cardinality.csv").write_text("cluster\n0\n")
    for name in outputs.NOT_RESULTS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.csv").write_text("a\n1\n")
    (tmp_path / outputs.SHARDS / outputs.SHARD_MANIFEST.format(rank=0)).write_text("{}")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "model.ckpt").write_bytes(b"weights")  # weights anywhere
    assert [p.as_posix() for p in run_files(tmp_path)] == ["cardinality.csv", "config.yaml"]


def test_a_folder_that_is_not_a_run_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(UserError, match="is neither a clustercam run folder"):
        write_report(tmp_path / "notes")
    for folder, message in ((tmp_path / "notes", "is neither a clustercam run folder"),
                            (tmp_path / "missing", "does not exist")):
        with pytest.raises(SystemExit) as exc:
            main([str(folder)])
        first, *rest = str(exc.value).splitlines()
        assert first.startswith(f"error: {folder} ") and message in first
        assert rest == ["(HYDRA_FULL_ERROR=1 shows the traceback)"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match="metrics.json is not valid JSON"):
        write_report(bad)
    assert not (bad / outputs.REPORT).exists() and not (tmp_path / "notes" / outputs.REPORT).exists()


def test_the_command_line_prints_where_the_page_is(run_dir, capsys):
    main([str(run_dir)])
    assert capsys.readouterr().out.strip() == f"Report: {run_dir / outputs.REPORT_INDEX}"
