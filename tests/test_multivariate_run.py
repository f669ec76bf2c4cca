"""A multivariate dataset end to end: UEA BasicMotions (6 channels, shipped in
aeon's wheel) through the ResNet CAE, k-means, Grad-CeAM, the cardinality table, the scores
and the figures, in-process for one epoch."""

import numpy as np
from PIL import Image

from tests.helpers.run import check_contract, read_csv, train


def test_basicmotions_one_epoch_outputs_contract(tmp_path):
    out = tmp_path / "run"
    train(["experiment=basicmotions", "logger=none", "trainer.max_epochs=1", "model.net.filters=[8,8]",
           "callbacks=default_with_scores", "callbacks.explanation_scores.steps=2",
           "callbacks.explanation_scores.methods=[random,gradceam_reference]",
           "callbacks.cluster_explain.n_init=2", "callbacks.cluster_explain.val_n_init=1",
           "callbacks.cluster_explain.n_examples=2"], out)
    metrics = check_contract(out, k=4)
    assert metrics["n_samples"] == 40
    assert np.isfinite(metrics["scores/gradceam_reference/deletion_auc"])
    # members' inputs keep every channel; the maps are over time
    with np.load(out / "figures" / "heatmaps.npz") as npz:
        arrays = {k: npz[k].shape for k in npz.files}
    assert any(shape[1:] == (6, 100) for shape in arrays.values()), arrays
    # a cluster figure: one panel row per channel, one column per member
    fig = Image.open(sorted((out / "figures").glob("cluster_*.png"))[0])
    assert fig.height > fig.width / 3
    assert {r["cluster"] for r in read_csv(out / "assignments.csv")} <= {"0", "1", "2", "3"}
