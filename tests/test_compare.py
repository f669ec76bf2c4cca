"""The comparison: the report is a pure function of run folders (tested on fake ones); one
tiny real comparison end to end (slow)."""

import csv
import json
import statistics

import pytest
import yaml

from clustercam.studies import compare
from clustercam.studies.records import collect
from tests.helpers.run import cli

AUC = ("deletion_auc", "insertion_auc", "deletion_hard_auc", "insertion_hard_auc")


def fake_run(folder, dataset, seed, scores, nmi=0.5, masks=True, modes=None):
    """A finished run as the scores callback leaves it: metrics.json, config.yaml, the
    cardinality summary and (optionally) the per-target cardinality table."""
    folder.mkdir(parents=True)
    metrics = {"nmi": nmi, "scores/n_samples": 30, "scores/n_clusters": 3, "scores/all_clusters": 1.0}
    for method, v in scores.items():
        for i, key in enumerate(AUC):
            metrics[f"scores/{method}/{key}"] = v + 0.01 * i
            metrics[f"scores/{method}/{key}_excl_baseline"] = v / 2 + 0.01 * i
        if masks:
            for key in ("pointing_game", "relevance_mass", "auroc"):
                metrics[f"scores/{method}/{key}"] = 1 - v
        metrics[f"scores/{method}/map_seconds"] = 10 * v
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "data": {"name": dataset}}))
    (folder / "cardinality_summary.json").write_text(json.dumps({"median": 1, "mean": 1, "min": 0, "max": 2}))
    if modes:
        with open(folder / "cardinality_by_mode.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, ["mode", "median", "mean", "min", "max"])
            w.writeheader()
            for mode, med in modes.items():
                w.writerow({"mode": mode, "median": med, "mean": med + 1, "min": 0, "max": 3})


def _row(md: str, section: str, method: str, nth: int = 0) -> list[str]:
    part = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in part.splitlines() if ln.startswith(f"| {method} |")]
    return [c.strip() for c in rows[nth].strip("|").split("|")]


def test_aggregation_on_fake_runs(tmp_path):
    runs = tmp_path / "runs"
    # Trace: gradceam_reference best (lowest value: low deletion, but also low insertion)
    for seed, shift in ((1, 0.0), (2, 0.1), (3, 0.2)):
        fake_run(runs / "trace" / f"seed{seed}", "Trace", seed,
                 {"random": 0.5 + shift, "gradceam_reference": 0.2 + shift, "neon": 0.3 + shift},
                 nmi=0.6 + shift, masks=False,
                 modes={"paper": 0.5, "reference": 1.5 + shift, "assignment": 3.0})
    fake_run(runs / "cbf" / "seed1", "SyntheticCBF", 1, {"random": 0.4, "occlusion": 0.1})
    fake_run(runs / "unscored" / "seed1", "Trace", 9, {}, masks=False)  # no scores: left out
    records = [r for r in collect(runs) if compare.methods_of([r])]
    assert len(records) == 4
    md = compare.comparison_markdown(records, "Settings: test.")
    assert "Settings: test." in md and md.index("## Trace") < md.index("## Which Grad-CeAM target?")
    # mean ± std over the three seeds, in the comparison's method order
    trace = md.split("## Trace\n", 1)[1].split("\n## ", 1)[0]
    order = [ln.split("|")[1].strip() for ln in trace.splitlines() if ln.startswith("| ") and "---" not in ln
             and not ln.startswith("| method")]
    assert order[:3] == ["random", "gradceam_reference", "neon"]
    ref = _row(md, "Trace", "gradceam_reference")
    vals = [0.1, 0.15, 0.2]  # excl_baseline deletion: v / 2
    assert ref[1] == f"**{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}**"
    # best per column in bold: lowest deletion, highest insertion (random's here)
    rnd = _row(md, "Trace", "random")
    assert rnd[2].startswith("**") and not ref[2].startswith("**") and not rnd[1].startswith("**")
    # the time column: seconds, two decimals, never bold
    assert ref[-1] == "3.00 ± 1.00" and not any(c.startswith("**") for c in (ref[-1], rnd[-1]))
    # no masks on Trace: no localisation columns; the CBF table has them, one seed: no ± std
    header = [ln for ln in trace.splitlines() if ln.startswith("| method")][0]
    assert "AUROC" not in header and "time (s)" in header
    occ = _row(md, "SyntheticCBF", "occlusion")
    assert occ[5:8] == ["**0.900**", "**0.900**", "**0.900**"] and "±" not in occ[1]
    assert "3 runs (seeds 1, 2, 3), NMI 0.70 ± 0.10" in trace
    # the all-samples table follows, without time
    assert _row(md, "Trace", "gradceam_reference", nth=1)[1] == "**0.300 ± 0.100**"
    # which target: cardinality from cardinality_by_mode.csv beside the target's scores
    targets = md.split("## Which Grad-CeAM target?\n", 1)[1]
    line = [ln for ln in targets.splitlines() if ln.startswith("| Trace | reference |")][0]
    assert "1.60 ± 0.10" in line and "0.150 ± 0.050" in line
    rows = compare.comparison_rows(records)
    r = next(r for r in rows if r["dataset"] == "Trace" and r["method"] == "neon" and r["score"] == "map_seconds")
    assert r["mean"] == pytest.approx(4.0) and r["n"] == 3


def test_main_aggregate_only_and_errors(tmp_path):
    fake_run(tmp_path / "runs" / "a" / "seed1", "SyntheticShapes", 1, {"random": 0.4, "neon": 0.2})
    compare.main(["--aggregate-only", "--out", str(tmp_path)])
    md = (tmp_path / "explanation_comparison.md").read_text()
    assert "## SyntheticShapes" in md and "neon" in md
    with open(tmp_path / "explanation_comparison.csv") as fh:
        assert {"dataset", "method", "score", "mean", "std", "n"} == set(next(csv.reader(fh)))
    with pytest.raises(SystemExit, match="no finished scored runs"):  # one line, no traceback
        compare.main(["--aggregate-only", "--out", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match=r"unknown experiments \['nope'\]"):
        compare.main(["--datasets", "nope", "--out", str(tmp_path)])


@pytest.mark.slow
def test_quick_comparison_end_to_end(tmp_path):
    cli("--quick", "--datasets", "synthetic_cbf", "--seeds", "1", "--out", str(tmp_path),
        "--extra", "model.net.filters=[8,8]", module="clustercam.compare", timeout=900)
    md = (tmp_path / "explanation_comparison.md").read_text()
    for method in compare.COMPARED_METHODS:
        assert f"| {method} |" in md, method
    assert "## SyntheticCBF" in md and "AUROC" in md and "| SyntheticCBF | reference |" in md


def test_peers_config_composes_and_bad_settings_fail_early(tmp_path):
    from hydra.utils import instantiate

    from clustercam.runtime.configs import compose

    cfg = compose(["experiment=synthetic_cbf", "callbacks=peers", *compare.COMMON[1:],
                   *compare.PER_DATASET["synthetic_cbf"]], output_dir=tmp_path)
    scores = cfg.callbacks.explanation_scores
    assert list(scores.methods) == list(compare.COMPARED_METHODS) and scores.all_clusters
    assert scores.method_options.occlusion.window == 13 and scores.max_samples == 300
    assert {"cluster_explain", "explanation_scores"} <= set(cfg.callbacks)
    cb = instantiate(scores)
    assert cb.methods == list(compare.COMPARED_METHODS) and cb.settings.all_clusters is True
    scores.method_options.integrated_gradients = {"steps": 3}  # not a setting of the method
    with pytest.raises(Exception, match="unknown settings \\['steps'\\]"):
        instantiate(scores)
