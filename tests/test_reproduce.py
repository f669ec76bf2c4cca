"""The Table I aggregation: runs of a multirun become mean ± std rows beside the paper."""

import json

import yaml

from clustercam.reproduce import collect, modes_table, table1


def _fake_run(root, name, seed, nmi, median, target=None):
    run = root / name / f"seed{seed}"
    run.mkdir(parents=True)
    data = {"name": name} if target is None else {"_target_": target}
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "data": data}))
    (run / "metrics.json").write_text(json.dumps({"nmi": nmi}))
    (run / "cardinality_summary.json").write_text(
        json.dumps({"median": median, "mean": median, "min": 1.0, "max": 2.0}))
    (run / "cardinality_by_mode.csv").write_text(
        f"mode,median,mean,min,max,empty_clusters\nreference,{median},{median},1.0,2.0,0\n"
        "paper,0.5,0.5,0.0,1.0,0\nassignment,3.0,3.0,2.0,4.0,0\n")


def test_table1_mean_and_std_over_seeds(tmp_path):
    _fake_run(tmp_path, "Trace", 1, 0.6, 1.0)
    _fake_run(tmp_path, "Trace", 2, 0.8, 2.0)
    _fake_run(tmp_path, "mnist", 1, 0.3, 1.5, target="clustercam.data.mnist.MNISTDataModule")
    records = collect(tmp_path)
    assert sorted(r["dataset"] for r in records) == ["MNIST", "Trace", "Trace"]
    text = table1(records, {"trace": 90.0})
    trace = next(line for line in text.splitlines() if line.startswith("| Trace"))
    # NMI (0.6, 0.8): mean 0.70, sample std 0.14; median (1, 2): 1.50 ± 0.71
    assert "| 2 | 0.70 ± 0.14 | 1.50 ± 0.71 |" in trace
    assert "1.5 / 1.7 / 1.0 / 2.8" in trace and "1.5 min" in trace
    mnist = next(line for line in text.splitlines() if line.startswith("| MNIST"))
    assert "| 1 | 0.30 | 1.50 |" in mnist and "1.4 / 1.4 / 0.5 / 5.8" in mnist
    modes = modes_table(records)
    assert "| Trace | assignment | 0.70 ± 0.14 | 3.00 ± 0.00 |" in modes
