"""The same seed gives the same clustering, tables and heatmaps on CPU."""

import json

import numpy as np

from tests.helpers.run import read_csv, train


def test_same_seed_same_outputs(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        train(["experiment=cbf", "logger=none", "trainer.max_epochs=2", "data.max_samples=60",
               "trainer.deterministic=true", "seed=11"], out)
        runs.append(out)
    a, b = runs
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in runs)
    assert ma == mb
    assert read_csv(a / "cardinality.csv") == read_csv(b / "cardinality.csv")
    assert read_csv(a / "assignments.csv") == read_csv(b / "assignments.csv")
    ha, hb = np.load(a / "figures" / "heatmaps.npz"), np.load(b / "figures" / "heatmaps.npz")
    for key in ("index", "heatmaps", "raw", "channel_weights"):
        np.testing.assert_array_equal(ha[key], hb[key])
