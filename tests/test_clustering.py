"""k-means and the scores (thin over scikit-learn), and early errors for impossible requests."""

import numpy as np
import pytest

from clustercam.callbacks.cluster_explain import ClusterExplainCallback
from clustercam.data.ucr import UCRDataModule
from clustercam.explain.clustering import clustering_scores, fit_kmeans, hungarian_accuracy


def test_hungarian_accuracy_by_hand():
    # clusters are a relabelling of the classes except one sample: 5 of 6 matched
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([2, 2, 0, 0, 1, 0])
    assert hungarian_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    s = clustering_scores(y_true, np.array([1, 1, 2, 2, 0, 0]))
    assert s == {"nmi": 1.0, "ari": 1.0, "acc": 1.0}


def test_kmeans_recovers_separated_blobs_and_is_seeded():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(c, 0.1, size=(20, 3)) for c in (0.0, 5.0, 10.0)])
    y = np.repeat([0, 1, 2], 20)
    a, b = fit_kmeans(z, 3, seed=4), fit_kmeans(z, 3, seed=4)
    assert clustering_scores(y, a.labels)["acc"] == 1.0
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.centroids.shape == (3, 3)


@pytest.mark.parametrize(
    "z, k, match",
    [
        (np.zeros((5, 2)), 1, "n_clusters must be >= 2"),
        (np.zeros((5, 2)), 6, "n_clusters = 6 is larger than the number of samples 5"),
        (np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]), 2, "NaN"),
        (np.zeros(5), 2, "N x m"),
    ],
)
def test_impossible_kmeans_requests(z, k, match):
    with pytest.raises(ValueError, match=match):
        fit_kmeans(z, k)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_clusters": 1}, "n_clusters must be >= 2"),
        ({"mode": "gradcam"}, "unknown Grad-CeAM mode 'gradcam'"),
        ({"cardinality_normalise": "zscore"}, "'minmax' or 'raw'"),
        ({"n_examples": 0}, "n_examples"),
        ({"compare_modes": ["paper", "nope"]}, r"\['nope'\]"),
    ],
)
def test_callback_config_out_of_range(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClusterExplainCallback(output_dir=tmp_path, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"batch_size": 0}, "batch_size must be >= 1"), ({"eval_split": "val"}, "eval_split"),
     ({"max_samples": 0}, "max_samples")],
)
def test_datamodule_config_out_of_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UCRDataModule(name="Trace", **kwargs)
