"""2-D Grad-CeAM on the real image CAE against a plain per-sample, per-cluster loop.

The loop recomputes everything from the paper's eq. 5-10 on its own (targets, one
``torch.autograd.grad`` per sample and cluster, channel weights, map, bilinear resize,
min-max), so it checks the batched implementation (one forward, one batched backward for
all clusters, chunked samples) on a network with real strided convolutions.
"""

import pytest
import torch
import torch.nn.functional as F

from clustercam.explain.gradceam import grad_ceam, resolve_target
from clustercam.models.components.cae import ConvAutoencoder


def spec_loss(z: torch.Tensor, mu: torch.Tensor, c: int, mode: str) -> torch.Tensor:
    """L_c for ONE embedding z (m,), straight from the paper's eq. 5-8 (reference: the authors'
    code; assignment: log softmax_k(-||z - mu_k||^2)[c])."""
    if mode == "assignment":
        return torch.log_softmax(-((z[None] - mu) ** 2).sum(1), 0)[c]
    k = mu.shape[0]
    s = sum((mu[j] - mu[c]).abs() for j in range(k) if j != c)
    s = (s - s.min()) / (s.max() - s.min())
    d = (mu - z[None]).abs()  # K x m
    dmin, dmax = d.min(0).values, d.max(0).values
    if mode == "paper":
        r = ((dmax - d[c]) / (dmax - dmin + 1e-8)).detach()
        return (z * s * r).sum()
    r = ((dmax - dmin) / (d[c] - dmin + 1e-3)) ** 2
    return (z.abs() * s * r).sum()


def loop_gradceam(net: ConvAutoencoder, x: torch.Tensor, mu: torch.Tensor, mode: str):
    enc = net.encoder
    n, k = len(x), len(mu)
    weights, raws, heats = [], [], []
    for i in range(n):
        w_i, raw_i, heat_i = [], [], []
        for c in range(k):
            a = enc.features(x[i : i + 1])  # 1 x C x h x w
            pooled = a.flatten(2).mean(-1) if enc.pooling == "gap" else a.flatten(1)
            z = enc.fc(pooled)[0]
            (g,) = torch.autograd.grad(spec_loss(z, mu, c, mode), a)
            g = g[0]
            w = 2 * g.sum((1, 2)) if mode == "reference" else g.mean((1, 2))
            w_used = w if mode == "reference" else w.clamp_min(0)
            m = (w_used[:, None, None] * a[0].detach()).sum(0)
            up = F.interpolate(m[None, None], size=x.shape[2:], mode="bilinear", align_corners=False)[0, 0]
            lo, hi = up.min(), up.max()
            heat = (up - lo) / (hi - lo) if hi > lo else torch.zeros_like(up)
            w_i.append(w)
            raw_i.append(m)
            heat_i.append(heat)
        weights.append(torch.stack(w_i))
        raws.append(torch.stack(raw_i))
        heats.append(torch.stack(heat_i))
    return torch.stack(weights), torch.stack(raws), torch.stack(heats)


def close(actual, expected, rtol=1e-5):
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=1e-5 * scale)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = ConvAutoencoder((1, 28, 28), filters=[8, 16], kernels=[3, 5], strides=[2, 2]).double()
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        z = net.encoder(x)
    # centroids near some embeddings but not on them, so every distance term is non-trivial
    mu = z[:3] + 0.05 * torch.randn(3, z.shape[1], dtype=torch.float64)
    return net, x, mu


@pytest.mark.parametrize("mode", ["paper", "reference", "assignment"])
def test_batched_equals_per_sample_per_cluster_loop(setup, mode):
    net, x, mu = setup
    # batch_size 2: chunks of 2, 2, 1 samples, all K clusters in one batched backward each
    res = grad_ceam(net.encoder, net.target_layer, x, mu, target=mode, batch_size=2)
    w, raw, heat = loop_gradceam(net, x, mu, mode)
    assert res.channel_weights.shape == (5, 3, 16)
    assert res.raw.shape == (5, 3, 7, 7) and res.heatmaps.shape == (5, 3, 28, 28)
    close(res.channel_weights, w)
    close(res.raw, raw)
    close(res.heatmaps, heat)
    # the maps are not trivially constant: there is something to compare
    assert (heat.flatten(2).amax(-1) == 1).all()
    # the loop's target is the library's target
    close(resolve_target(mode).losses(res.embeddings, mu), torch.stack(
        [torch.stack([spec_loss(z, mu, c, mode) for c in range(3)]) for z in res.embeddings]))


def test_flatten_pooling_and_no_parameter_grads(setup):
    """The authors' flatten head: gradients differ by position, so W is not a plain copy."""
    _, x, _ = setup
    torch.manual_seed(1)
    net = ConvAutoencoder((1, 28, 28), filters=[8, 16], kernels=[3, 5], strides=[2, 2],
                          pooling="flatten").double()
    net.train()
    with torch.no_grad():
        z = net.encoder(x)
    mu = z[:4] + 0.05 * torch.randn(4, z.shape[1], dtype=torch.float64)
    res = grad_ceam(net.encoder, "features", x, mu, target="reference", batch_size=None)
    w, raw, heat = loop_gradceam(net, x, mu, "reference")
    close(res.channel_weights, w)
    close(res.raw, raw)
    close(res.heatmaps, heat)
    assert all(p.grad is None for p in net.parameters())
    assert net.training and net.encoder.features.training  # train/eval state restored


def test_image_figures_from_real_maps(setup):
    """Fig. 7/8 and 11 for images: plain image over the blended map, sizes and labels in titles."""
    from clustercam.explain.plots import cluster_members_figure, sample_all_clusters_figure

    net, x, mu = setup
    res = grad_ceam(net.encoder, "features", x, mu, target="assignment")
    fig = cluster_members_figure(x[:4], res.heatmaps[:4, 1], 1, 42, labels=[3, 3, 5, 3],
                                 majority=3, mode="assignment")
    assert "size 42" in fig._suptitle.get_text() and "majority label 3" in fig._suptitle.get_text()
    images = [ax for ax in fig.axes if ax.get_images()]
    assert len(images) == 8  # each member twice: plain, then with the map
    assert sum(len(ax.get_images()) == 2 for ax in images) == 4
    assert images[0].get_title() == "#1 nearest, label 3"
    colourbar = fig.axes[-1]
    assert colourbar.get_ylabel() == "Grad-CeAM (normalised)"
    fig = sample_all_clusters_figure(x[0], res.heatmaps[0], [10, 20, 30], assigned=2, label=7,
                                     raw_max=res.raw[0].flatten(1).amax(1).tolist())
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 1 + 3 and "assigned to cluster 2" in panels[0].get_title()
    assert panels[3].get_title().startswith("cluster 2 (size 30)\nraw max")
