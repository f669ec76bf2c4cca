"""CLAM (Score-CAM on the Student-t soft assignment) against a per-sample, per-channel loop
written here from its definition; masks, batching, cluster selection, state and hooks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clustercam.exceptions import UserError
from clustercam.explain import clam
from clustercam.explain.clam import clam_masks
from clustercam.explain.scores.methods import MAP_METHODS, MapRequest, all_cluster_maps
from clustercam.models.components.cae import ConvAutoencoder
from clustercam.models.components.encoder import Encoder
from clustercam.models.components.resnet_cae import ResNetCAE


def slow_clam(encoder, layer, x, mu, alpha):
    """One sample, one channel, one forward at a time; q written out as the formula."""
    maps, weights = [], []
    grabbed = {}
    handle = layer.register_forward_hook(lambda m, i, o: grabbed.__setitem__("a", o))
    encoder.eval()
    mode = "linear" if x.dim() == 3 else "bilinear"
    with torch.no_grad():
        for n in range(x.shape[0]):
            xn = x[n : n + 1]
            encoder(xn)
            a = grabbed["a"][0]  # C x spatial
            scores = []
            for j in range(a.shape[0]):
                u = F.interpolate(a[j][None, None], size=x.shape[2:], mode=mode, align_corners=False)[0, 0]
                h = torch.zeros_like(u) if u.max() == u.min() else (u - u.min()) / (u.max() - u.min())
                z = encoder(xn * h)
                kern = (1 + ((z - mu) ** 2).sum(1) / alpha) ** (-(alpha + 1) / 2)
                scores.append(kern / kern.sum())
            s = torch.stack(scores)  # C x K
            w = torch.softmax(s, dim=0).T  # K x C
            maps.append(torch.relu(torch.einsum("kc,c...->k...", w, a)))
            weights.append(w)
    handle.remove()
    return torch.stack(maps), torch.stack(weights)


def _sharp():
    """A hand-made encoder whose masked inputs land at very different soft assignments, so
    the channel weights are far from uniform (random tiny encoders give nearly equal scores)."""
    conv = nn.Conv1d(1, 3, 3, padding=1, bias=False)
    enc = Encoder(nn.Sequential(conv, nn.ReLU()), (3, 8), 2, "gap")
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 0, 0]], [[0, 0, 1.0]], [[0, 1.0, 0]]]))
        enc.fc.weight.copy_(torch.tensor([[8.0, 0, 0], [0, 0, 8.0]]))
        enc.fc.bias.zero_()
    x = torch.rand(5, 1, 8, generator=torch.Generator().manual_seed(0)) * torch.linspace(0, 2, 8)
    return enc, x, torch.tensor([[0.0, 0.0], [3.0, 3.0], [6.0, 1.0]])


def _series():
    torch.manual_seed(0)
    enc = ResNetCAE((2, 24), filters=(4, 5), embedding_dim=3).encoder
    return enc, torch.randn(4, 2, 24), torch.randn(3, 3)


def _images():
    torch.manual_seed(1)
    enc = ConvAutoencoder((1, 12, 10), filters=(4, 6), kernels=(3, 3), embedding_dim=3).encoder
    return enc, torch.rand(3, 1, 12, 10), torch.randn(4, 3) * 0.1


@pytest.mark.parametrize("make", [_sharp, _series, _images], ids=["sharp", "1d", "2d"])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.0])
def test_clam_equals_the_per_sample_per_channel_loop(make, alpha):
    enc, x, mu = make()
    raw, w = slow_clam(enc, enc.features, x, mu, alpha)
    res = clam(enc, "features", x, mu, alpha=alpha, batch_size=7)  # chunks cut across samples
    if make is _sharp:  # the scores differ between channels, so the softmax is tested too
        assert res.scores.std(1).mean() > 0.05 and res.channel_weights.max() > 0.4
    torch.testing.assert_close(res.raw, raw, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(res.channel_weights, w, atol=1e-6, rtol=1e-5)
    assert res.heatmaps.shape == (x.shape[0], mu.shape[0], *x.shape[2:])
    assert res.heatmaps.min() >= 0 and res.heatmaps.max() <= 1
    assert torch.equal(res.clusters, torch.arange(mu.shape[0]).expand(x.shape[0], -1))


def test_batched_equals_unbatched_and_one_cluster_equals_its_row():
    enc, x, mu = _series()
    one = clam(enc, "features", x, mu, batch_size=1)
    big = clam(enc, "features", x, mu, batch_size=10_000)
    for a, b in ((one.scores, big.scores), (one.raw, big.raw), (one.heatmaps, big.heatmaps)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    own = torch.tensor([2, 0, 1, 2])
    sel = clam(enc, "features", x, mu, clusters=own, batch_size=9)
    assert sel.heatmaps.shape == (4, 1, 24) and torch.equal(sel.clusters[:, 0], own)
    torch.testing.assert_close(sel.heatmaps[:, 0], big.heatmaps[torch.arange(4), own], atol=1e-6, rtol=1e-5)


def test_a_constant_channel_gives_a_zero_mask():
    a = torch.tensor([[[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]]])
    masks = clam_masks(a, (6,))
    assert torch.equal(masks[0, 1], torch.zeros(6))
    assert masks[0, 0].min() == 0 and masks[0, 0].max() == 1
    img = torch.zeros(1, 2, 3, 3)
    img[0, 0, 1, 1] = 2.0
    m2 = clam_masks(img, (6, 6))
    assert torch.equal(m2[0, 1], torch.zeros(6, 6)) and m2[0, 0].max() == 1


def test_state_and_hooks_are_restored_and_bad_settings_are_named():
    enc, x, mu = _series()
    enc.train()
    clam(enc, "features", x, mu)
    assert all(m.training for m in enc.modules())
    assert not any(m._forward_hooks for m in enc.modules())
    with pytest.raises(UserError, match="alpha must be > 0"):
        clam(enc, "features", x, mu, alpha=0)
    with pytest.raises(UserError, match="batch_size"):
        clam(enc, "features", x, mu, batch_size=0)
    with pytest.raises(UserError, match="clusters must be N = 4"):
        clam(enc, "features", x, mu, clusters=torch.tensor([0, 1, 3, 0]))
    assert all(m.training for m in enc.modules())


def test_registered_map_method_gives_all_clusters_in_one_call():
    enc, x, mu = _series()
    own = torch.tensor([0, 1, 2, 0])
    req = MapRequest(enc, "features", x, mu, own)
    method = MAP_METHODS["clam"].configure(alpha=2.0, batch_size=5)
    every = all_cluster_maps(method, req)
    torch.testing.assert_close(every, clam(enc, "features", x, mu, alpha=2.0).heatmaps, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(method(req), every[torch.arange(4), own], atol=1e-6, rtol=1e-5)
