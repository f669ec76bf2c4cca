"""k-means and the scores (thin over scikit-learn), and early errors for impossible requests."""

import numpy as np
import pytest

from clustercam.callbacks.cluster_explain import ClusterExplainCallback
from clustercam.callbacks.config_names import OLD_CLUSTER_EXPLAIN_NAMES as OLD_NAMES
from clustercam.data.ucr import UCRDataModule
from clustercam.exceptions import UserError
from clustercam.explain.clustering import clustering_scores, fit_kmeans
from clustercam.explain.gradceam import ClusterExplainSettings
from tests.helpers import REPO


def test_hungarian_accuracy_by_hand():
    # clusters are a relabelling of the classes except one sample: 5 of 6 matched
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([2, 2, 0, 0, 1, 0])
    assert clustering_scores(y_true, y_pred)["acc"] == pytest.approx(5 / 6)
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
        ({"target": "gradcam"}, "unknown Grad-CeAM target 'gradcam'"),
        ({"normalise": "zscore"}, "'minmax' or 'raw'"),
        ({"n_examples": 0}, "n_examples"),
        ({"compare_targets": ["paper", "nope"]}, r"\['nope'\]"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"normalize": "raw"}, r"callbacks.cluster_explain: unknown settings \['normalize'\]"),
    ],
)
def test_callback_config_out_of_range(tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        ClusterExplainCallback(output_dir=tmp_path, **kwargs)


def test_callback_takes_the_explain_settings_and_its_old_names(tmp_path):
    import inspect
    from dataclasses import fields

    from omegaconf import OmegaConf

    settings = ClusterExplainSettings(target="assignment", temperature=0.5, compare_targets=["paper"])
    cb = ClusterExplainCallback(tmp_path, settings=settings)
    assert cb.settings is settings and cb.mode == "assignment" and cb.target.name == "assignment"
    old = {"mode": "assignment", "compare_modes": ["paper"], "cardinality_normalise": "raw", "chunk_size": 64}
    with pytest.warns(DeprecationWarning, match="callbacks.cluster_explain: mode= is renamed target="):
        renamed = ClusterExplainCallback(tmp_path, **old)
    assert renamed.settings == ClusterExplainSettings(target="assignment", compare_targets=("paper",),
                                                      normalise="raw", batch_size=64)
    # the yaml: the settings' fields with their defaults, the callback's own parameters, and
    # the old names as nulls (not given) for one release
    node = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "callbacks" / "cluster_explain.yaml").cluster_explain)
    own = set(inspect.signature(ClusterExplainCallback).parameters) - {"settings", "options"}
    given = {f.name: f.default for f in fields(ClusterExplainSettings)}
    assert set(node) - {"_target_", "_convert_"} == own | set(given) | set(OLD_NAMES)
    assert all(node[name] is None for name in OLD_NAMES)
    for name, value in given.items():
        got = tuple(node[name]) if isinstance(node[name], list) else node[name]
        assert got == value, name
    assert ClusterExplainCallback(tmp_path, **{k: node[k] for k in given | OLD_NAMES.keys()}).settings \
        == ClusterExplainSettings()


@pytest.mark.parametrize(
    "kwargs, match",
    [({"batch_size": 0}, "batch_size must be >= 1"), ({"eval_split": "val"}, "eval_split"),
     ({"max_samples": 0}, "max_samples")],
)
def test_datamodule_config_out_of_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UCRDataModule(name="Trace", **kwargs)


def _sklearn_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The scores as clustercam computed them before torchmetrics (scikit-learn + SciPy)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, confusion_matrix, normalized_mutual_info_score

    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    cm = confusion_matrix(t, p, labels=np.arange(max(t.max(), p.max()) + 1))
    rows, cols = linear_sum_assignment(cm, maximize=True)
    return {"nmi": normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic"),
            "ari": adjusted_rand_score(y_true, y_pred), "acc": cm[rows, cols].sum() / len(y_true)}


@pytest.mark.parametrize("n, n_classes, n_clusters", [(6, 3, 3), (100, 4, 4), (500, 10, 7), (60, 2, 5), (7, 1, 1)])
def test_torchmetrics_scores_equal_the_scikit_learn_ones(n: int, n_classes: int, n_clusters: int):
    rng = np.random.default_rng(n)
    y = rng.integers(0, n_classes, n) * 3 + 1  # class ids need not be 0 .. K-1
    noise = rng.integers(0, n_clusters, n)
    for pred in (noise, np.where(rng.random(n) < 0.7, y % n_clusters, noise), y):
        got, ref = clustering_scores(y, pred), _sklearn_scores(y, pred)
        assert list(got) == ["nmi", "ari", "acc"]
        for key in ref:
            assert got[key] == pytest.approx(ref[key], abs=1e-12), key


def test_rank_shares_combine_into_the_whole_split():
    """What DDP does: each rank updates the metrics with its share, the states are merged."""
    import torch

    from clustercam.explain.clustering import clustering_metrics

    rng = np.random.default_rng(0)
    y, pred = torch.as_tensor(rng.integers(0, 4, 99)), torch.as_tensor(rng.integers(0, 4, 99))
    shares = []
    for rank in range(2):
        m = clustering_metrics(4)
        m.update(pred[rank::2], y[rank::2])
        shares.append(m)
    for name in ("nmi", "ari", "acc"):
        shares[0][name].merge_state(shares[1][name])
    whole = clustering_scores(y.numpy(), pred.numpy())
    merged = {k: float(v) for k, v in shares[0].compute().items()}
    for key in whole:
        assert merged[key] == pytest.approx(whole[key], abs=1e-6), key
    assert clustering_scores(y, pred, rank=1, world_size=2) != whole  # one share alone differs
