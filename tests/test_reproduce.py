"""The reproduction: records and the papers' model selection, Table I, and every figure
function on tiny fake run folders (no display); the --quick smoke run is slow."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure

from clustercam.studies import figures
from clustercam.studies.records import collect, high_low
from clustercam.studies.reproduce import main as reproduce
from clustercam.studies.tables import modes_table, table1, table1_selected


def _fake_run(root, name, seed, nmi, median, target=None, k=2, shape=(1, 20)):
    run = root / name / f"seed{seed}"
    (run / "figures").mkdir(parents=True)
    data = {"name": name} if target is None else {"_target_": target}
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "data": data}))
    (run / "metrics.json").write_text(json.dumps({"nmi": nmi}))
    (run / "cardinality_summary.json").write_text(
        json.dumps({"median": median, "mean": median, "min": 1.0, "max": 2.0}))
    (run / "cardinality_by_mode.csv").write_text(
        f"mode,median,mean,min,max,empty_clusters\nreference,{median},{median},1.0,2.0,0\n"
        "paper,0.5,0.5,0.0,1.0,0\nassignment,3.0,3.0,2.0,4.0,0\n")
    rng = np.random.default_rng(seed)
    n = 3 * k  # three members a cluster, cluster by cluster
    spatial = shape[1:]
    np.savez(run / "figures" / "heatmaps.npz", index=np.arange(n), cluster=np.repeat(np.arange(k), 3),
             inputs=rng.normal(size=(n, *shape)), label=np.repeat(np.arange(k), 3),
             heatmaps=rng.uniform(size=(n, k, *spatial)), raw=rng.normal(size=(n, k, *spatial)),
             channel_weights=rng.normal(size=(n, k, 4)), sizes=np.full(k, 10))
    return run


def test_high_low_is_the_best_and_worst_nmi_with_ties_split(tmp_path):
    for seed, nmi in [(1, 0.5), (2, 0.8), (3, 0.8), (4, float("nan")), (5, 0.1), (6, 0.1)]:
        _fake_run(tmp_path, "Coffee", seed, nmi, 1.0)
    high, low = high_low(collect(tmp_path))
    assert (high.seed, high.nmi) == (2, 0.8) and (low.seed, low.nmi) == (6, 0.1)
    one, two = _fake_run(tmp_path / "b", "CBF", 1, 0.3, 1.0), _fake_run(tmp_path / "b", "CBF", 2, 0.3, 1.0)
    high, low = high_low(collect(tmp_path / "b"))
    assert (high.run, low.run) == (one, two)  # all tied: still two models


def test_table1_mean_std_best_worst_and_the_selected_models(tmp_path):
    _fake_run(tmp_path, "Trace", 1, 0.6, 1.0)
    _fake_run(tmp_path, "Trace", 2, 0.8, 2.0)
    _fake_run(tmp_path, "mnist", 1, 0.3, 1.5, target="clustercam.data.mnist.MNISTDataModule")
    records = collect(tmp_path)
    assert sorted(r.dataset for r in records) == ["MNIST", "Trace", "Trace"]
    text = table1(records, {"Trace": 90.0})
    trace = next(line for line in text.splitlines() if line.startswith("| Trace"))
    # NMI (0.6, 0.8): mean 0.70, sample std 0.14; median (1, 2): 1.50 ± 0.71
    assert "| 2 | 0.70 ± 0.14 | 0.80 / 0.60 | 1.50 ± 0.71 |" in trace
    assert "1.5 / 1.7 / 1.0 / 2.8" in trace and "1.5 min" in trace
    selected = table1_selected(records)
    assert "| Trace | high | 2 | 0.80 | 2.00 | 2.00 | 1.00 | 2.00 |" in selected
    assert "| Trace | low | 1 | 0.60 | 1.00 |" in selected
    assert "| Trace | assignment | 0.70 ± 0.14 | 3.00 ± 0.00 |" in modes_table(records)


def _panels(fig: Figure) -> list:
    """The drawn panels (not the colour bar, not the empty ones)."""
    return [ax for ax in fig.axes if "Grad-CeAM" not in ax.get_ylabel() and (ax.images or ax.collections)]


def test_grad_ceam_figures_have_the_papers_layouts(tmp_path):
    runs = {"Trace": _fake_run(tmp_path, "Trace", 1, 0.7, 1.0, k=4),
            "CBF": _fake_run(tmp_path, "CBF", 1, 0.5, 1.0, k=3),
            "MNIST": _fake_run(tmp_path, "mnist", 1, 0.3, 1.0, k=3, shape=(1, 8, 8),
                               target="clustercam.data.mnist.MNISTDataModule")}
    _fake_run(tmp_path, "Coffee", 1, 0.8, 1.0)
    _fake_run(tmp_path, "Coffee", 2, 0.1, 1.0)
    rec = {r.dataset + str(r.seed): r for r in collect(tmp_path)}
    fig, caption = figures.smoothed_members(rec["Trace1"])
    assert len(_panels(fig)) == 4 * 2 and "seed 1" in caption  # two samples per cluster
    fig, _ = figures.sample_cluster_grid(rec["CBF1"])
    titles = [ax.get_title() for ax in _panels(fig)]
    assert len(titles) == 9 and all("raw max" in t for t in titles)  # 3 samples x 3 maps
    fig, _ = figures.cluster_members(rec["MNIST1"], n=3)
    assert len(_panels(fig)) == 2 * 3  # two clusters x their members
    fig, caption = figures.high_low_models(*high_low([rec["Coffee1"], rec["Coffee2"]]))
    titles = [ax.get_title() for ax in _panels(fig)]
    assert len(titles) == 2 * 2 and titles[0].startswith("high (NMI 0.80)") and titles[1].startswith("low (NMI 0.10)")
    for f in (fig,):
        assert any("Grad-CeAM" in ax.get_ylabel() for ax in f.axes)  # the colour bar
    assert runs


def test_boxplot_data_equal_the_per_image_metrics(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"image": f"i{i}", "class": i % 3, "class_name": f"c{i % 3}", "method": m, "algorithm": a,
             "n_concepts": 5, "silhouette": rng.uniform(), "calinski_harabasz": rng.uniform() * 100,
             "davies_bouldin": rng.uniform()}
            for i in range(12) for m in ("cgap", "cpha") for a in ("kmeans", "gmm")]
    df = pd.DataFrame(rows)
    data = figures.boxplot_data(df)
    for (method, metric), per_class in data.items():
        for cls, per_algo in per_class.items():
            for algo, values in per_algo.items():
                sel = df[(df.method == method) & (df.class_name == cls) & (df.algorithm == algo)][metric]
                assert len(values) == len(sel) == 4 and np.median(values) == pytest.approx(sel.median())
    (tmp_path / "concept_metrics.csv").write_text(df.to_csv(index=False))
    fig, _ = figures.concept_boxplots(tmp_path, "fixture")
    assert len(fig.axes) == 2 * 3 and fig.axes[0].get_title().startswith("CGAP")


def test_aggregate_only_writes_the_tables_figures_and_captions(tmp_path):
    runs = tmp_path / "runs"
    for ds, k in (("Trace", 4), ("Coffee", 2), ("CBF", 3)):
        for seed in (1, 2):
            _fake_run(runs, ds, seed, 0.3 * seed, 1.0, k=k)
    reproduce(["--aggregate-only", "--out", str(tmp_path)])
    assert "## Table I of the high and the low model" in (tmp_path / "table1.md").read_text()
    names = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert names == ["gradceam_fig09_trace.png", "gradceam_fig10_coffee_high_low.png", "gradceam_fig11_cbf_grid.png"]
    captions = (tmp_path / "figures" / "captions.md").read_text()
    assert all(n in captions for n in names) and "seed 2" in captions


@pytest.mark.slow
def test_quick_reproduction_makes_every_file(tmp_path):
    from tests.helpers.run import cli

    cli("--quick", "--out", str(tmp_path), "--datasets", "trace", "coffee", "cbf", "mnist",
        module="clustercam.reproduce", timeout=900, env={"OMP_NUM_THREADS": "1"})
    names = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert {"gradceam_fig07_mnist.png", "gradceam_fig09_trace.png", "gradceam_fig10_coffee_high_low.png",
            "gradceam_fig11_cbf_grid.png", "concepts_fig02_boxplots.png", "concepts_fig05_subconcepts.png",
            "concepts_fig06_cgap_vs_cpha.png"} <= names
    assert "Table I of the high and the low model" in (tmp_path / "table1.md").read_text()


def test_the_concept_run_gets_every_core_after_one_thread_sweeps(tmp_path, monkeypatch):
    """The sweeps' jobs run one thread each (OMP_NUM_THREADS=1); the concept run runs alone."""
    import os

    from clustercam.studies import reproduce as rep

    seen = {}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(rep.subprocess, "run", lambda cmd, check, env: seen.update(env))
    rep.run_concept_study(tmp_path, [])
    assert seen["OMP_NUM_THREADS"] == str(os.cpu_count()) and seen["WANDB_MODE"]


def test_the_concept_source_names_the_weights_without_the_absolute_path(tmp_path):
    from clustercam.studies.reproduce import concept_source

    run = tmp_path / "concepts"
    run.mkdir()
    cases = [({"model": "resnet18", "pretrained": True, "weights": f"trained:{run}/classifier.safetensors"},
              "resnet18, trained here (classifier.safetensors)"),
             ({"model": "nf_resnet50", "pretrained": False, "weights": "none"}, "nf_resnet50, random weights"),
             ({"model": "resnet50", "pretrained": True, "weights": "timm:resnet50.a1_in1k"},
              "resnet50, weights timm:resnet50.a1_in1k")]
    for info, expected in cases:
        (run / "metrics.json").write_text(json.dumps(info))
        assert concept_source(run) == expected
