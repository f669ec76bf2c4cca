"""The deep clustering study's report from finished runs, and the settings it runs with."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from clustercam.runtime.configs import compose
from clustercam.studies.deep_clustering import family, report, run_overrides
from clustercam.studies.records import RunRecord


def _run(ds, seed, dcec, nmi, pre=None, clam_del=0.2, ref_del=0.3, ass_del=0.25):
    m = {"nmi": nmi, "acc": 0.5, "scores/n_samples": 10,
         "scores/clam/deletion_auc_excl_baseline": clam_del, "scores/clam/map_seconds": 30.0,
         "scores/gradceam_reference/deletion_auc_excl_baseline": ref_del,
         "scores/gradceam_reference/map_seconds": 0.5,
         "scores/gradceam_assignment/deletion_auc_excl_baseline": ass_del,
         "scores/gradceam_assignment/map_seconds": 0.5}
    if dcec:
        m.update({"clustering_model": "idec", "pretrain_nmi": pre, "pretrain_acc": 0.4,
                  "target_updates": 5})
    modes = {"student_t": {"median": 1.5 + seed / 10, "mean": 1.6, "min": 0.9, "max": 2.0}}
    return RunRecord(Path(f"/runs/{ds}/seed{seed}"), ds, seed, m, {}, modes)


def test_report_puts_both_families_side_by_side_and_calls_the_winner():
    runs = [_run("Trace", 1, False, 0.50), _run("Trace", 2, False, 0.60),
            _run("Trace", 1, True, 0.70, pre=0.50), _run("Trace", 2, True, 0.80, pre=0.60, clam_del=0.4)]
    assert [family(r) for r in runs] == ["AE + k-means"] * 2 + ["DCEC"] * 2
    text = report(runs)
    nmi_row = next(line for line in text.splitlines() if line.startswith("| Trace | 1, 2 |"))
    # AE 0.55 ± 0.07, DCEC init 0.55 ± 0.07, final 0.75 ± 0.07, Δ 0.20 ± 0.00
    assert "| 0.550 ± 0.071 | 0.550 ± 0.071 | 0.750 ± 0.071 | 0.200 ± 0.000 |" in nmi_row
    # deletion (lower is better): AE: CLAM 0.2 beats assignment 0.25; DCEC: CLAM 0.3 vs 0.25
    assert "| Trace | AE + k-means | deletion ↓ | 0.200 | 0.250 | assignment | CLAM |" in text
    assert "| Trace | DCEC | deletion ↓ | 0.300 | 0.250 | assignment | Grad-CeAM |" in text
    assert "Grad-CeAM (60× faster)" in text
    assert "| Trace | DCEC | student_t | 1.65 ± 0.07 |" in text


def test_run_overrides_compose_and_drop_the_options_of_unscored_methods():
    ov = run_overrides("trace", ["random", "gradceam_student_t", "clam"])
    cfg = compose(["print_config=false", "experiment=trace_dcec", *ov], output_dir="/tmp/unused")
    scores = OmegaConf.to_container(cfg.callbacks.explanation_scores, resolve=True)
    assert scores["methods"][0] == "random" and scores["methods"][2] == "clam"
    assert scores["methods"][1]["_target_"].endswith("student_t_target")
    assert set(scores["method_options"]) == {"clam"}
    assert not any("occlusion" in o for o in ov if not o.startswith("~"))
    with pytest.raises(ValueError, match="unknown methods \\['lime'\\]"):
        run_overrides("trace", ["lime"])
