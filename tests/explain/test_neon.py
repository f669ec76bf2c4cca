"""NEON: the neuralized k-means by hand, conservation through LRP, sign of f_c, state restored."""

import math
import warnings

import pytest
import torch
from torch import nn

from clustercam.exceptions import UserError
from clustercam.explain.cluster_scores import ClusterScoreModel
from clustercam.explain.evidence import cluster_evidence, default_beta, midpoint_relevance
from clustercam.explain.neon import check_lrp_encoder, neon
from clustercam.models.components.cae import ConvAutoencoder
from clustercam.models.components.encoder import Encoder
from clustercam.models.components.resnet_cae import ResNetCAE
from tests.explain.missing import hide_package

# z = (1, 0.5); mu_0 = (0, 0), mu_1 = (4, 0), mu_2 = (0, 2). For c = 0:
# h_01 = |z - mu_1|^2 - |z - mu_0|^2 = 9.25 - 1.25 = 8, w_01 = (-8, 0), m_01 = (2, 0): terms (8, 0)
# h_02 = 3.25 - 1.25 = 2, w_02 = (0, -4), m_02 = (0, 1): terms (0, 2)
MU = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 2.0]])
Z = torch.tensor([[1.0, 0.5]])


def identity_encoder() -> nn.Module:
    """z = x for x of shape N x 1 x m: the m positions of the map are the m features of z."""
    return nn.Flatten(1)


def test_hand_computed_identity_encoder():
    x = Z[:, None, :]  # 1 x 1 x 2
    # hard: all of f_0 = min(8, 2) = 2 goes to unit k = 2, whose terms are (0, 2): R = (0, 2)
    res = neon(identity_encoder(), None, x, MU, beta=None)
    torch.testing.assert_close(res.raw[0, 0], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)
    assert res.evidence[0].tolist() == pytest.approx([2.0, -8.0, -2.0])
    assert res.beta is None
    # soft shares at beta = 0.25: p = softmax(-0.25 (8, 2)) = (e^-2, e^-0.5) / sum; unit 1's terms
    # are all on feature 0, unit 2's on feature 1, so R = f_0 (p_1, p_2) with f_0 = min = 2
    beta = 0.25
    p = torch.softmax(torch.tensor([-beta * 8, -beta * 2]), 0)
    res = neon(identity_encoder(), None, x, MU, beta=beta)
    torch.testing.assert_close(res.raw[0, 0], 2.0 * p, atol=1e-6, rtol=0)
    assert res.raw[0, 0].sum().item() == pytest.approx(2.0)
    # soft-min evidence: f_0 = -(1/beta) log(e^(-2) + e^(-0.5)), the same shares
    f_soft = -math.log(math.exp(-2) + math.exp(-0.5)) / beta
    res = neon(identity_encoder(), None, x, MU, beta=beta, evidence="soft_min")
    assert res.evidence[0, 0].item() == pytest.approx(f_soft)
    torch.testing.assert_close(res.raw[0, 0], f_soft * p, atol=1e-6, rtol=0)
    # the midpoint rule on its own gives the same relevance on z
    rz, f = midpoint_relevance(Z, MU, beta=beta, clusters=torch.tensor([0]))
    torch.testing.assert_close(rz[0, 0].float(), 2.0 * p, atol=1e-6, rtol=0)
    assert f[0, 0].item() == pytest.approx(2.0)


def test_evidence_positive_exactly_for_the_assigned_cluster():
    gen = torch.Generator().manual_seed(0)
    z, mu = torch.randn(200, 4, generator=gen), torch.randn(5, 4, generator=gen)
    own = torch.cdist(z, mu).argmin(1)
    f = cluster_evidence(z, mu)  # the hard minimum
    assert ((f > 0) == (own[:, None] == torch.arange(5))).all()
    # the soft-min lies below the minimum and reaches it as beta grows
    soft = cluster_evidence(z, mu, beta=0.5)
    assert (soft <= f + 1e-12).all()
    assert torch.allclose(cluster_evidence(z, mu, beta=1e4), f, atol=1e-3)
    # relevance on z sums to f_c for every cluster, hard and soft shares
    for beta in (None, default_beta(z, mu)):
        rz, f_c = midpoint_relevance(z, mu, beta=beta)
        torch.testing.assert_close(rz.sum(-1), f_c, atol=1e-6, rtol=1e-6)
    # the wrapper's evidence score is the same f_c
    model = ClusterScoreModel(nn.Flatten(1), mu, score="evidence")
    torch.testing.assert_close(model(z[:, None, :]).double(), f.float().double(), atol=1e-5, rtol=1e-5)


def test_default_beta_is_the_inverse_mean_margin():
    z = torch.tensor([[1.0, 0.5], [3.0, 0.0]])  # margins: sample 0 (cluster 0): min(8, 2) = 2
    # sample 1 (cluster 1): |z - mu_0|^2 - |z - mu_1|^2 = 9 - 1 = 8, |z - mu_2|^2 - 1 = 13 - 1 = 12
    assert default_beta(z, MU) == pytest.approx(1 / ((2 + 8) / 2))
    with pytest.warns(RuntimeWarning, match="mean margin 0"):
        assert math.isnan(default_beta(torch.zeros(3, 2), torch.zeros(2, 2)))


def _positive_resnet() -> nn.Module:
    """A ResNet CAE encoder whose LRP rules conserve: non-negative weights, no biases,
    BatchNorm at identity statistics, so every contribution is positive."""
    torch.manual_seed(0)
    enc = ResNetCAE((1, 32), filters=(4, 4), embedding_dim=3).encoder
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, nn.Conv1d | nn.Linear):
                m.weight.abs_()
                if m.bias is not None:
                    m.bias.zero_()
    return enc


def test_conservation_through_residual_blocks_and_mean_pooling():
    enc = _positive_resnet()
    x = torch.rand(6, 1, 32)
    with torch.no_grad():
        mu = enc.eval()(x[:3]) + 0.01 * torch.randn(3, 3)
    res = neon(enc, "features", x, mu)
    # sum of input relevance = sum at the target layer = f_c, for every sample and cluster
    torch.testing.assert_close(res.raw.sum(-1).double(), res.evidence, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(res.layer_raw.sum(-1).double(), res.evidence, rtol=1e-3, atol=1e-4)
    # a BatchNorm-free image encoder too (flat first layer, z+ convolutions, epsilon head)
    img = ConvAutoencoder((1, 12, 12), filters=(4, 4)).encoder
    with torch.no_grad():
        for m in img.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.bias.zero_()
    xi = torch.rand(5, 1, 12, 12)
    with torch.no_grad():
        mu_i = img(xi[:3]) + 0.1
    ri = neon(img, None, xi, mu_i, beta=None)
    torch.testing.assert_close(ri.raw.sum((-1, -2)).double(), ri.evidence, rtol=2e-2, atol=1e-4)


def test_all_clusters_at_once_match_one_cluster_each_and_state_is_restored():
    torch.manual_seed(1)
    enc = ResNetCAE((2, 24), filters=(4, 4), embedding_dim=3).encoder.train()
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    x, mu = torch.randn(7, 2, 24), torch.randn(3, 3)
    res = neon(enc, None, x, mu, batch_size=3)
    sel = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    one = neon(enc, None, x, mu, clusters=sel, batch_size=4)
    torch.testing.assert_close(one.raw[:, 0], res.raw[torch.arange(7), sel], rtol=1e-4, atol=1e-6)
    assert res.heatmaps.shape == (7, 3, 24) and one.heatmaps.shape == (7, 1, 24)
    assert float(res.heatmaps.min()) >= 0 and float(res.heatmaps.max()) <= 1
    assert (one.clusters[:, 0] == sel).all() and (res.clusters == torch.arange(3)).all()
    # train mode, parameters, buffers, forward methods and hooks as they were
    assert enc.training and all(m.training for m in enc.modules())
    assert set(state) == set(enc.state_dict())
    assert all(torch.equal(state[k], v) for k, v in enc.state_dict().items())
    for m in enc.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
        assert "forward" not in m.__dict__ and not hasattr(m, "canonizer_sum")
    assert all(p.grad is None for p in enc.parameters())


def test_hooks_removed_when_the_encoder_raises():
    class Boom(Encoder):
        def forward(self, x):
            raise RuntimeError("boom")

    enc = Boom(nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU()), (2, 14), 2, "gap")
    with pytest.raises(RuntimeError, match="boom"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        neon(enc, None, torch.randn(2, 1, 16), torch.randn(2, 2), beta=None)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in enc.modules())


def test_bad_input():
    enc = identity_encoder()
    x = Z[:, None, :]
    for beta in (0, -1.0, math.inf, math.nan, "big", True):
        with pytest.raises(UserError, match="beta"):
            neon(enc, None, x, MU, beta=beta)
    with pytest.raises(UserError, match="soft_min"):
        neon(enc, None, x, MU, beta=None, evidence="soft_min")
    with pytest.raises(UserError, match="unknown evidence"):
        neon(enc, None, x, MU, evidence="max")
    with pytest.raises(UserError, match="clusters"):
        neon(enc, None, x, MU, clusters=torch.tensor([3]))
    with pytest.raises(UserError, match="embedding"):
        neon(enc, None, x, torch.randn(3, 5))
    with pytest.raises(UserError, match="unknown zennit composite"):
        neon(enc, None, x, MU, composite="nope")
    # modules zennit cannot canonize: the error names the module type
    ln = nn.Sequential(nn.Conv1d(1, 2, 3), nn.LayerNorm(6), nn.Flatten(1), nn.Linear(12, 2))
    with pytest.raises(UserError, match="LayerNorm at '1'"):
        neon(ln, None, torch.randn(2, 1, 8), torch.randn(2, 2))
    bn_first = nn.Sequential(nn.BatchNorm1d(1), nn.Conv1d(1, 2, 3), nn.Flatten(1), nn.Linear(12, 2))
    with pytest.raises(UserError, match="BatchNorm1d at '0' follows the input"):
        check_lrp_encoder(bn_first)
    rnn = nn.Sequential(nn.GRU(4, 4))
    with pytest.raises(UserError, match="GRU"):
        check_lrp_encoder(rnn)
    # a custom forward no canonizer rewrites (a functional mean here) is a warning
    from tests.explain.tiny import GapLinear

    with pytest.warns(RuntimeWarning, match="GapLinear .* own forward"):
        neon(GapLinear(3), None, torch.randn(2, 3, 5), torch.randn(2, 3))


def test_missing_zennit_is_one_clear_error(monkeypatch):
    hide_package(monkeypatch, "zennit")
    with pytest.raises(ImportError, match=r"pip install clustercam\[peers\]"):
        neon(identity_encoder(), None, Z[:, None, :], MU)


def test_the_old_argument_order_still_works_with_a_warning():
    enc = _positive_resnet()
    x, mu = torch.rand(4, 1, 32), torch.rand(3, 3)
    new = neon(enc, "features", x, mu, beta=None)
    with pytest.warns(DeprecationWarning, match="positional order is deprecated"):
        old = neon(enc, x, mu, None, None, target_layer="features")
    assert old.raw.equal(new.raw) and old.layer_raw.equal(new.layer_raw)
    with pytest.warns(DeprecationWarning):
        assert neon(enc, x=x, centroids=mu, beta=None).layer_raw is None  # no target_layer given


def test_residual_blocks_are_recognised_by_their_declared_branches():
    from clustercam.explain.neon import _is_residual_block
    from clustercam.models.components.resnet_cae import ResidualBlock1d

    class Renamed(ResidualBlock1d):  # another name, the same forward: still canonized
        pass

    class Gated(ResidualBlock1d):  # its own forward: no longer act(body + shortcut)
        def forward(self, x):
            return self.act(self.body(x) * self.shortcut(x))

    assert _is_residual_block(ResidualBlock1d(1, 2)) and _is_residual_block(Renamed(1, 2))
    assert not _is_residual_block(Gated(1, 2)) and not _is_residual_block(nn.Conv1d(1, 2, 3))
    enc = _positive_resnet()
    enc.features[1].__class__ = Renamed  # conservation holds through the renamed block
    x = torch.rand(3, 1, 32)
    with torch.no_grad():
        mu = enc.eval()(x) + 0.01 * torch.randn(3, 3)
    res = neon(enc, None, x, mu)
    torch.testing.assert_close(res.raw.sum(-1).double(), res.evidence, rtol=1e-3, atol=1e-4)

    class Undeclared(ResidualBlock1d):  # the same forward, not declared: the '+' is a plain gradient
        def residual_branches(self):
            return None

    enc.features[1].__class__ = Undeclared
    with pytest.warns(RuntimeWarning, match="Undeclared at 'features.1' has its own forward"):
        leaky = neon(enc, None, x, mu)
    assert (leaky.raw.sum(-1).double() - leaky.evidence).abs().max() > 1  # relevance not conserved
