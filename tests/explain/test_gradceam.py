"""Grad-CeAM (the paper's eq. 5-10 and the authors' code) against values computed by hand on
tiny encoders."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clustercam.exceptions import UserError
from clustercam.explain.gradceam import centroid_weights, grad_ceam, resolve_target
from clustercam.models.components.resnet_cae import ResNetCAE
from tests.explain.tiny import GapLinear

MU = torch.tensor([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 2.0, 4.0]])
# channel means (= z with the identity head) are (2, 1, 1)
X1D = torch.tensor([[[1.0, 3.0], [0.0, 2.0], [1.0, 1.0]]])


def test_centroid_weights_by_hand():
    # s_0 = (2,1,0)+(0,2,4) = (2,3,4) -> (0, .5, 1); s_1 = (4,2,4) -> (1,0,1); s_2 = (2,3,8) -> (0,1/6,1)
    expected = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.0, 1.0], [0.0, 1 / 6, 1.0]])
    torch.testing.assert_close(centroid_weights(MU), expected)


def test_centroid_weights_all_equal_is_one_and_k2_symmetric():
    mu = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(centroid_weights(mu), torch.ones(2, 2))
    mu = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    s = centroid_weights(mu)
    torch.testing.assert_close(s[0], s[1])


def test_paper_mode_1d_by_hand():
    # z = (2,1,1); d_k = |mu_k - z|: d0=(2,1,1), d1=(0,0,1), d2=(2,1,3); dmin=(0,0,1), dmax=(2,1,3)
    # r = (dmax-d)/(dmax-dmin): r0=(0,0,1), r1=(1,1,1), r2=(0,0,0)
    # g_c = s_c * r_c: g0=(0,0,1), g1=(1,0,1), g2=0;  W_c,k = g_c,k / D (D=2)
    res = grad_ceam(GapLinear(), "features", X1D, MU, target="paper")
    torch.testing.assert_close(res.embeddings, torch.tensor([[2.0, 1.0, 1.0]]))
    w = torch.tensor([[[0.0, 0.0, 0.5], [0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(res.channel_weights, w)
    # M_0 = .5*A_2 = (.5,.5); M_1 = .5*A_0 + .5*A_2 = (1,2); M_2 = 0
    raw = torch.tensor([[[0.5, 0.5], [1.0, 2.0], [0.0, 0.0]]])
    torch.testing.assert_close(res.raw, raw)
    # normalised per sample and cluster; a constant map becomes 0
    torch.testing.assert_close(res.heatmaps, torch.tensor([[[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]))
    # losses: L0 = z.g0 = 1, L1 = 3, L2 = 0
    torch.testing.assert_close(
        resolve_target("paper").losses(res.embeddings, MU), torch.tensor([[1.0, 3.0, 0.0]])
    )


def test_paper_mode_2d_by_hand_and_bilinear_resize():
    # the same channel means on a 2 x 2 grid: D = 4, so W = g / 4
    x = torch.tensor([[[[1.0, 3.0], [1.0, 3.0]], [[0.0, 2.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    res = grad_ceam(GapLinear(), "features", x, MU, target="paper")
    w = torch.tensor([[[0.0, 0.0, 0.25], [0.25, 0.0, 0.25], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(res.channel_weights, w)
    m1 = 0.25 * x[0, 0] + 0.25 * x[0, 2]  # [[.5, 1], [.5, 1]]
    torch.testing.assert_close(res.raw[0, 1], m1)
    torch.testing.assert_close(res.heatmaps[0, 1], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))

    # a target layer at half resolution: maps are resized bilinearly to the input
    pool = torch.nn.AvgPool2d(2)
    x4 = x.repeat_interleave(2, -1).repeat_interleave(2, -2)  # 4 x 4, pooled back to x
    res4 = grad_ceam(GapLinear(features=pool), "features", x4, MU, target="paper")
    torch.testing.assert_close(res4.raw, res.raw)
    up = F.interpolate(res.raw, size=(4, 4), mode="bilinear", align_corners=False)
    lo = up.flatten(2).min(-1).values[..., None, None]
    hi = up.flatten(2).max(-1).values[..., None, None]
    expected = torch.where(hi > lo, (up - lo) / (hi - lo).clamp_min(1e-12), 0.0)
    torch.testing.assert_close(res4.heatmaps, expected)


def _reference_loss_np(z: np.ndarray, mu: np.ndarray, c: int) -> float:
    """The authors' target written out independently in numpy (reference mode:
    r_j = ((dmax_j - dmin_j) / (d_c,j - dmin_j + 1e-3))^2, loss sum_j |z_j| s_c,j r_j)."""
    s = np.abs(mu[None, :, :] - mu[:, None, :]).sum(1)
    s = (s - s.min(1, keepdims=True)) / (s.max(1, keepdims=True) - s.min(1, keepdims=True))
    d = np.abs(mu - z[None])
    dmin, dmax = d.min(0), d.max(0)
    r = ((dmax - dmin) / (d[c] - dmin + 1e-3)) ** 2
    return float((np.abs(z) * s[c] * r).sum())


@pytest.mark.parametrize("dims", [1, 2])
def test_reference_mode_by_finite_differences(dims):
    mu = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 0.5], [0.2, 2.0, 4.0]])
    z = np.array([1.5, 0.25, 1.5])  # no ties among the distances: the gradient is defined
    d = np.abs(mu - z)
    assert all(len(set(d[:, j])) == 3 for j in range(3))
    eps = 1e-6
    g = np.zeros((3, 3))
    for c in range(3):
        for j in range(3):
            e = np.zeros(3)
            e[j] = eps
            g[c, j] = (_reference_loss_np(z + e, mu, c) - _reference_loss_np(z - e, mu, c)) / (2 * eps)
    shape = (1, 3, 2) if dims == 1 else (1, 3, 2, 2)
    offsets = torch.tensor([-0.5, 0.5]) if dims == 1 else torch.tensor([[-0.5, 0.5], [0.5, -0.5]])
    x = torch.tensor(z, dtype=torch.float64).reshape(1, 3, *([1] * dims)) + offsets
    assert x.shape == shape
    enc = GapLinear().double()
    res = grad_ceam(enc, "features", x, torch.tensor(mu), target="reference")
    d_pos = x[0, 0].numel()
    # W = 2 * sum over positions of dL/dA = 2 * D * g / D = 2 g
    np.testing.assert_allclose(res.channel_weights[0].numpy(), 2 * g, rtol=1e-5, atol=1e-6)
    # reference mode: no ReLU on the weights
    raw = np.einsum("ck,kp->cp", 2 * g, x[0].reshape(3, -1).numpy()).reshape(3, *x.shape[2:])
    np.testing.assert_allclose(res.raw[0].numpy(), raw, rtol=1e-5, atol=1e-6)
    assert d_pos == 2 ** dims


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_assignment_mode_by_hand(temperature):
    # dL_c/dz = (2/T) (mu_c - sum_k p_k mu_k), p = softmax(-||z - mu||^2 / T)
    z = np.array([2.0, 1.0, 1.0])
    mu = MU.numpy().astype(np.float64)
    sq = ((z[None] - mu) ** 2).sum(1)
    p = np.exp(-sq / temperature)
    p /= p.sum()
    g = (2 / temperature) * (mu - p @ mu)
    res = grad_ceam(GapLinear().double(), "features", X1D.double(), MU.double(),
                    target="assignment", temperature=temperature)
    np.testing.assert_allclose(res.channel_weights[0].numpy(), g / 2, rtol=1e-6, atol=1e-9)
    raw = np.einsum("ck,kp->cp", np.maximum(g / 2, 0), X1D[0].double().numpy())
    np.testing.assert_allclose(res.raw[0].numpy(), raw, rtol=1e-6, atol=1e-9)
    # the log soft-assignment of the sample's own (nearest) cluster is the largest
    losses = resolve_target("assignment", temperature).losses(torch.tensor(z)[None], MU.double())
    assert int(losses.argmax()) == int(np.argmin(sq))


def _loop_reference(encoder, layer, x, mu, mode):
    """One backward per sample and cluster: what the batched call must equal."""
    weights, maps = [], []
    for i in range(len(x)):
        captured: dict = {}
        handle = layer.register_forward_hook(lambda m, a, out, box=captured: box.__setitem__("A", out))
        z = encoder(x[i : i + 1])
        handle.remove()
        a = captured["A"]
        loss = resolve_target(mode).losses(z, mu)
        wi, mi = [], []
        for c in range(len(mu)):
            (g,) = torch.autograd.grad(loss[0, c], a, retain_graph=True)
            w = 2 * g.sum(-1) if mode == "reference" else g.mean(-1)
            wr = w if mode == "reference" else w.clamp_min(0)
            wi.append(w[0])
            mi.append((wr[0][:, None] * a[0]).sum(0))
        weights.append(torch.stack(wi))
        maps.append(torch.stack(mi))
    return torch.stack(weights), torch.stack(maps).detach()


@pytest.mark.parametrize("mode", ["paper", "reference", "assignment"])
def test_batched_equals_loop_on_resnet_cae(mode):
    torch.manual_seed(0)
    # float64: reference-mode weights reach ~1e6 ((span / 1e-3)^2), beyond float32's 1e-5
    net = ResNetCAE((2, 24), filters=(4, 6), embedding_dim=5).double()
    enc = net.encoder.eval()
    x = torch.randn(7, 2, 24, dtype=torch.float64)
    mu = torch.randn(4, 5, dtype=torch.float64)
    res = grad_ceam(enc, "features", x, mu, target=mode, batch_size=3)
    w, m = _loop_reference(enc, enc.features, x, mu, mode)
    torch.testing.assert_close(res.channel_weights, w, atol=1e-5, rtol=1e-7)
    torch.testing.assert_close(res.raw, m, atol=1e-5, rtol=1e-7)
    assert res.heatmaps.shape == (7, 4, 24)
    assert float(res.heatmaps.min()) >= 0 and float(res.heatmaps.max()) <= 1


def test_never_writes_grad_and_restores_modes():
    torch.manual_seed(0)
    net = ResNetCAE((1, 16), filters=(4,), embedding_dim=3)
    enc = net.encoder
    enc.train()
    enc.features[0].body[1].eval()  # a mixed state must come back exactly as it was
    before = {n: m.training for n, m in enc.named_modules()}
    bn = enc.features[0].body[1]
    stats = bn.running_mean.clone()
    grad_ceam(enc, "features", torch.randn(5, 1, 16), torch.randn(3, 3))
    assert all(p.grad is None for p in enc.parameters())
    assert {n: m.training for n, m in enc.named_modules()} == before
    torch.testing.assert_close(bn.running_mean, stats)  # eval mode: statistics untouched


def test_target_layer_module_or_name_and_smoothing():
    torch.manual_seed(0)
    net = ResNetCAE((1, 40), filters=(4, 4), embedding_dim=3)
    x, mu = torch.randn(3, 1, 40), torch.randn(3, 3)
    a = grad_ceam(net.encoder, net.encoder.features, x, mu)
    b = grad_ceam(net.encoder, "features", x, mu)
    torch.testing.assert_close(a.heatmaps, b.heatmaps)
    s = grad_ceam(net.encoder, "features", x, mu, smooth=True)
    # a moving average cannot increase total variation along time
    tv = lambda h: (h[..., 1:] - h[..., :-1]).abs().sum(-1)  # noqa: E731
    assert (tv(s.heatmaps) <= tv(b.heatmaps) + 1e-5).all()


def test_return_maps_false_keeps_only_weights():
    torch.manual_seed(0)
    net = ResNetCAE((1, 16), filters=(4,), embedding_dim=3)
    res = grad_ceam(net.encoder, "features", torch.randn(4, 1, 16), torch.randn(2, 3), return_maps=False)
    assert res.heatmaps is None and res.raw is None
    assert res.channel_weights.shape == (4, 2, 4)


@pytest.mark.parametrize(
    "x, mu, layer, kwargs, match",
    [
        (torch.randn(2, 1, 8), torch.randn(1, 3), "features", {}, "K = 2"),
        (torch.randn(2, 1, 8), torch.randn(3, 4), "features", {}, "dimension m"),
        (torch.randn(2, 8), torch.randn(3, 3), "features", {}, "N x C x L"),
        (torch.full((2, 1, 8), float("nan")), torch.randn(3, 3), "features", {}, "NaN"),
        (torch.randn(2, 1, 8), torch.randn(3, 3), "nope", {}, "'nope' is not a module"),
        (torch.randn(2, 1, 8), torch.randn(3, 3), "features", {"target": "bogus"}, "bogus"),
        (torch.randn(2, 1, 8), torch.randn(3, 3), "features", {"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_input_is_a_clear_error(x, mu, layer, kwargs, match):
    net = ResNetCAE((1, 8), filters=(2,), embedding_dim=3)
    with pytest.raises(UserError, match=match):
        grad_ceam(net.encoder, layer, x, mu, **kwargs)


def test_module_not_in_encoder_is_a_clear_error():
    net = ResNetCAE((1, 8), filters=(2,), embedding_dim=3)
    with pytest.raises(UserError, match="not a module of the encoder"):
        grad_ceam(net.encoder, torch.nn.Conv1d(1, 1, 1), torch.randn(2, 1, 8), torch.randn(2, 3))


def test_clusters_selects_each_samples_own_map_and_old_calls_still_work():
    torch.manual_seed(0)
    net = ResNetCAE((1, 24), filters=(4, 6), embedding_dim=3)
    x, mu = torch.randn(7, 1, 24), torch.randn(3, 3)
    own = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    every = grad_ceam(net.encoder, "features", x, mu, target="assignment", batch_size=3)
    one = grad_ceam(net.encoder, "features", x, mu, clusters=own, target="assignment", batch_size=3)
    rows = torch.arange(7)
    assert one.heatmaps.shape == (7, 1, 24) and one.channel_weights.shape == (7, 1, 6)
    torch.testing.assert_close(one.heatmaps[:, 0], every.heatmaps[rows, own])
    torch.testing.assert_close(one.raw[:, 0], every.raw[rows, own])
    torch.testing.assert_close(one.channel_weights[:, 0], every.channel_weights[rows, own])
    assert one.clusters.equal(own[:, None]) and every.clusters.equal(torch.arange(3).expand(7, 3))
    with pytest.raises(UserError, match=r"clusters must be N = 7 indices in \[0, 3\)"):
        grad_ceam(net.encoder, "features", x, mu, clusters=torch.tensor([3] * 7))
    with pytest.warns(DeprecationWarning, match="mode= is renamed target="):
        old_keyword = grad_ceam(net.encoder, "features", x, mu, mode="assignment", batch_size=3)
    with pytest.warns(DeprecationWarning, match="positional order is deprecated"):
        old_positional = grad_ceam(net.encoder, "features", x, mu, "assignment", 1.0, 3)
    for old in (old_keyword, old_positional):
        assert old.mode == "assignment" and old.heatmaps.equal(every.heatmaps)
    with pytest.raises(UserError, match="got both mode="):
        grad_ceam(net.encoder, "features", x, mu, mode="paper", target="paper")


def test_a_config_rename_lets_the_old_name_replace_the_new_names_default():
    from clustercam.explain.deprecation import renamed_parameters

    @renamed_parameters(owner="callbacks.x", config=True, mode="target")
    def build(**options):
        return options

    assert build(target="reference", mode=None) == {"target": "reference"}  # null: not given
    with pytest.warns(DeprecationWarning, match="callbacks.x: mode= is renamed target="):
        assert build(target="reference", mode="paper") == {"target": "paper"}
