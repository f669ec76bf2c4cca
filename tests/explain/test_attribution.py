"""The cluster target for attribution libraries, the captum peers, and the harness that scores them."""

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from clustercam.data.synthetic import SyntheticCBFDataModule, SyntheticShapesDataModule
from clustercam.exceptions import UserError
from clustercam.explain.assignments import log_soft_assignment, soft_assignment
from clustercam.explain.attribution import (
    cluster_target,
    gradient_shap_maps,
    integrated_gradients_maps,
    occlusion_maps,
    occlusion_windows,
)
from clustercam.explain.cluster_scores import ClusterScoreModel
from clustercam.explain.clustering import fit_kmeans
from clustercam.explain.evidence import cluster_evidence
from clustercam.explain.scores import (
    MAP_METHODS,
    MapRequest,
    explanation_maps,
    resolve_methods,
    score_explanations,
)
from clustercam.explain.scores.methods import PEERS, all_cluster_maps
from clustercam.models.components.cae import ConvAutoencoder
from clustercam.models.components.resnet_cae import ResNetCAE
from tests.explain.missing import hide_package


def _setup(seed=0, n=12, length=40, k=3):
    torch.manual_seed(seed)
    enc = ResNetCAE((1, length), filters=(4, 4), embedding_dim=3).encoder.eval()
    x = torch.randn(n, 1, length)
    with torch.no_grad():
        z = enc(x)
    mu = z[:k] + 0.05 * torch.randn(k, 3)
    return enc, x, mu, torch.cdist(z, mu).argmin(1)


def test_wrapper_scores():
    enc, x, mu, _ = _setup()
    with torch.no_grad():
        z = enc(x)
        for score, expected in (("probability", soft_assignment(z, mu, temperature=2.0)),
                                ("log_probability", log_soft_assignment(z, mu, 2.0)),
                                ("evidence", cluster_evidence(z, mu))):
            out = ClusterScoreModel(enc, mu, temperature=2.0, score=score)(x)
            torch.testing.assert_close(out.double(), expected.double(), rtol=1e-4, atol=1e-5)
        soft = ClusterScoreModel(enc, mu, score="evidence", beta=0.5)(x)
        torch.testing.assert_close(soft.double(), cluster_evidence(z, mu, 0.5), rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="unknown score"):
        ClusterScoreModel(enc, mu, score="logits")
    with pytest.raises(UserError, match="beta"):
        ClusterScoreModel(enc, mu, score="evidence", beta=-1.0)
    with pytest.raises(UserError, match="needs the samples"):
        cluster_target(enc, mu)  # temperature auto without x


@pytest.mark.parametrize("score", ["log_probability", "evidence"])
def test_integrated_gradients_completeness_on_the_wrapper(score):
    enc, x, mu, own = _setup(seed=1)
    enc = enc.double()
    x, mu = x.double(), mu.double()
    model = cluster_target(enc, mu, score=score, x=x)
    ig = IntegratedGradients(model)
    base = torch.zeros_like(x)
    attr, delta = ig.attribute(x, baselines=base, target=own, n_steps=300, return_convergence_delta=True)
    with torch.no_grad():
        gap = model(x)[torch.arange(len(x)), own] - model(base)[torch.arange(len(x)), own]
    # completeness: attributions sum to score(x) - score(baseline); delta is captum's own measure
    torch.testing.assert_close(attr.flatten(1).sum(1), gap, rtol=1e-2, atol=1e-2 * float(gap.abs().max()))
    assert float(delta.abs().max()) <= 1e-2 * float(gap.abs().max()) + 1e-6


def test_peer_maps_shapes_range_and_per_cluster_targets():
    enc, x, mu, own = _setup(seed=2)
    for fn, kwargs in ((integrated_gradients_maps, {"n_steps": 8}), (occlusion_maps, {"window": 5}),
                       (gradient_shap_maps, {"n_samples": 4, "n_baselines": 4})):
        m = fn(enc, None, x, mu, clusters=own, batch_size=5, **kwargs)
        assert m.shape == (12, 40) and float(m.min()) >= 0 and float(m.max()) <= 1, fn.__name__
        # a sample's map does not depend on the chunk it is in, nor on the others' targets
        m1 = fn(enc, None, x, mu, clusters=own, batch_size=12, **kwargs)
        if fn is not gradient_shap_maps:  # its random draws depend on the chunk
            torch.testing.assert_close(m, m1, atol=1e-5, rtol=1e-4)
        single = fn(enc, None, x, mu, clusters=1, **kwargs)  # one cluster for all
        torch.testing.assert_close(single[own == 1], m1[own == 1], atol=1e-5, rtol=1e-4)
        every = fn(enc, None, x, mu, **kwargs)  # clusters=None: all K
        assert every.shape == (12, 3, 40)
        torch.testing.assert_close(every[:, 1], single, atol=1e-5, rtol=1e-4)
    assert gradient_shap_maps(enc, None, x, mu, clusters=own, seed=3).equal(
        gradient_shap_maps(enc, None, x, mu, clusters=own, seed=3))
    with pytest.warns(DeprecationWarning, match="positional order is deprecated"):  # the old order
        old = occlusion_maps(enc, x, mu, own, 5, batch_size=5)
    assert old.equal(occlusion_maps(enc, None, x, mu, clusters=own, window=5, batch_size=5))
    with pytest.raises(UserError, match="explain the input: pass target_layer=None"):
        occlusion_maps(enc, "features", x, mu, clusters=own)
    img = ConvAutoencoder((1, 12, 12), filters=(4, 4), embedding_dim=3).encoder.eval()
    xi = torch.rand(4, 1, 12, 12)
    assert occlusion_maps(img, None, xi, torch.randn(3, 3), clusters=0, window=3).shape == (4, 12, 12)
    assert occlusion_windows((275,)) == ((28,), (14,))
    assert occlusion_windows((28, 28), 4, 4) == ((4, 4), (4, 4))
    with pytest.raises(UserError, match="window"):
        occlusion_windows((10,), 11)
    with pytest.raises(UserError, match="n_steps"):
        integrated_gradients_maps(enc, None, x, mu, clusters=own, n_steps=0)


def test_registry_all_clusters_and_settings():
    enc, x, mu, own = _setup(seed=3)
    assert set(PEERS) <= set(MAP_METHODS)
    names = ["gradceam_reference", "random", "activation", *PEERS]
    opts = {"integrated_gradients": {"n_steps": 4}, "gradient_shap": {"n_samples": 2},
            "occlusion": {"window": 8, "stride": 8}}
    own_maps = explanation_maps(enc, "features", x, mu, clusters=own, methods=names, method_options=opts)
    every = explanation_maps(enc, "features", x, mu, methods=names, method_options=opts)  # all K
    for name in names:
        assert every[name].shape == (12, 3, 40), name
        torch.testing.assert_close(every[name][torch.arange(12), own], own_maps[name], atol=1e-5,
                                   rtol=1e-4, msg=name)
    # a method without a one-pass form is asked once per cluster
    req = MapRequest(enc, "features", x, mu, own)
    plain = all_cluster_maps(lambda r: r.clusters[:, None].float().expand(-1, 40), req)
    assert (plain[:, 2] == 2).all() and (plain[:, 0] == 0).all()
    with pytest.raises(UserError, match="unknown settings \\['steps'\\]"):
        resolve_methods(["integrated_gradients"], {"integrated_gradients": {"steps": 3}})
    with pytest.raises(UserError, match="not among the methods"):
        resolve_methods(["neon"], {"occlusion": {"window": 3}})
    with pytest.raises(UserError, match="unknown methods \\['lime'\\]"):
        resolve_methods(["neon", "lime"])


def test_missing_captum_is_one_clear_error(monkeypatch):
    enc, x, mu, own = _setup()
    hide_package(monkeypatch, "captum")
    with pytest.raises(ImportError, match=r"pip install clustercam\[peers\]"):
        occlusion_maps(enc, None, x, mu, clusters=own)


@pytest.mark.parametrize("kind", ["cbf", "shapes"])
def test_ground_truth_maps_beat_random_and_every_peer_is_scored(kind):
    torch.manual_seed(0)
    if kind == "cbf":
        dm = SyntheticCBFDataModule(max_samples=60)
        enc = ResNetCAE((1, 128), filters=(8, 8), embedding_dim=4).encoder.eval()
    else:
        dm = SyntheticShapesDataModule(max_samples=60, n_train=60)
        enc = ConvAutoencoder((1, 32, 32), filters=(8, 8), embedding_dim=4).encoder.eval()
    dm.setup("test")
    x, _ = dm.eval_tensors()
    masks = dm.eval_masks()
    with torch.no_grad():
        km = fit_kmeans(enc(x).double().numpy(), 3, n_init=2, seed=0)
    mu, clusters = torch.from_numpy(km.centroids).float(), torch.from_numpy(km.labels)
    truth = ("truth", lambda req: masks.float())
    opts = {"integrated_gradients": {"n_steps": 4}, "gradient_shap": {"n_samples": 2, "n_baselines": 4}}
    rep = score_explanations(enc, "features", x, mu, clusters=clusters, masks=masks,
                             methods=["random", truth, *PEERS], steps=8, method_options=opts,
                             all_clusters=True)
    r = rep.results
    for key in ("pointing_game", "relevance_mass", "auroc"):
        assert r[f"scores/truth/{key}"] == 1.0 and r[f"scores/random/{key}"] < 0.6, key
    assert r["scores/truth/deletion_auc_excl_baseline"] < r["scores/random/deletion_auc_excl_baseline"] - 0.05
    assert r["scores/truth/insertion_auc_excl_baseline"] > r["scores/random/insertion_auc_excl_baseline"] + 0.05
    for m in PEERS:
        assert 0 <= r[f"scores/{m}/auroc"] <= 1 and 0 <= r[f"scores/{m}/deletion_auc"] <= 1, m
        assert r[f"scores/{m}/map_seconds"] > 0, m
    assert r["scores/all_clusters"] == 1.0 and r["scores/n_clusters"] == 3


def test_pytorch_grad_cam_style_target_picks_a_cluster_column():
    # pytorch-grad-cam's ClassifierOutputTarget(c) is `lambda out: out[..., c]` on the model
    # output; on the wrapper that is the score of cluster c, whose gradient Grad-CAM uses
    enc, x, mu, _ = _setup()
    model = cluster_target(enc, mu, x=x)
    out = model(x)
    target = lambda output: output[..., 2]  # noqa: E731 - the shape of ClassifierOutputTarget(2)
    torch.testing.assert_close(target(out), out[:, 2])
    target(out).sum().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)
    assert isinstance(model, nn.Module) and out.shape == (12, 3)


def test_the_peers_libraries_are_imported_only_when_used():
    import subprocess
    import sys

    code = ("import sys, clustercam.explain, clustercam.explain.scores\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'zennit', 'captum'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
