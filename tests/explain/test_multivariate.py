"""Grad-CeAM and the cardinality table on multivariate series (N x C x L, C > 1):
a batch gives what a loop over single samples gives, the map is over time only, and it does
not depend on the order of the input channels."""

import copy

import numpy as np
import pytest
import torch

from clustercam.exceptions import UserError
from clustercam.explain import cardinality, grad_ceam
from clustercam.models.components.resnet_cae import ResNetCAE

C, L, K = 5, 40, 3


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = ResNetCAE((C, L), filters=(8, 6), embedding_dim=4)
    # non-trivial BatchNorm statistics, then eval mode as the pipeline uses
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net.encoder(torch.randn(16, C, L))
    enc = net.encoder.eval()
    x = torch.randn(9, C, L).cumsum(-1)
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)
    with torch.no_grad():
        z = enc(x)
    # near three spread-out samples, so no cluster is empty, but not on them: the reference
    # target has a kink where a coordinate of z equals the centroid's (|mu - z|)
    mu = 0.8 * z[[2, 3, 8]] + 0.2 * z.mean(0)
    return enc, x, mu


@pytest.mark.parametrize("layer", ["features", "features.0"])  # closed-form and autograd paths
@pytest.mark.parametrize("mode", ["reference", "paper", "assignment"])
def test_gradceam_batched_equals_the_per_sample_loop(setup, layer, mode):
    enc, x, mu = setup
    batched = grad_ceam(enc, layer, x, mu, target=mode, batch_size=4)
    assert batched.heatmaps.shape == (len(x), K, L)  # over time, not per channel
    loop = [grad_ceam(enc, layer, x[i : i + 1], mu, target=mode) for i in range(len(x))]
    for name in ("heatmaps", "raw", "channel_weights", "embeddings"):
        single = torch.cat([getattr(r, name) for r in loop])
        # float32 rounding relative to the map's scale: raw maps reach 1e4 here and sum terms
        # that cancel, so an element near 0 carries the rounding of the large ones (seen on
        # an AMD EPYC host: 0.04 off on one of 1,080 elements of magnitude up to 27,000)
        scale = 1e-5 * float(single.abs().max())
        torch.testing.assert_close(getattr(batched, name), single, atol=1e-5 + scale, rtol=1e-4, msg=name)
    assert batched.heatmaps.amax(-1).gt(0.99).any()  # maps are not all flat


@pytest.mark.filterwarnings("ignore:clusters .* are empty before amplification")
def test_cardinality_batched_equals_the_per_sample_loop(setup):
    enc, x, mu = setup
    w = grad_ceam(enc, "features", x, mu, return_maps=False).channel_weights
    table = cardinality(enc, "features", x, mu, w, batch_size=2 * K)  # chunks of 2 samples
    before = torch.zeros(K, dtype=torch.long)
    after = torch.zeros(K, dtype=torch.long)
    for i in range(len(x)):
        one = cardinality(enc, "features", x[i : i + 1], mu, w[i : i + 1])
        before += one.before
        after += one.after
    assert table.before.tolist() == before.tolist() and table.after.tolist() == after.tolist()
    assert int(table.before.sum()) == len(x) and (table.before > 0).all()


def _permuted_copy(enc, perm):
    """The same encoder reading channels in the order ``perm``: every convolution that reads
    the input (the first block's conv and its 1x1 shortcut) gets its input weights permuted."""
    other = copy.deepcopy(enc)
    first = other.features[0]
    with torch.no_grad():
        for conv in (first.body[0], first.shortcut[0]):
            assert conv.in_channels == C
            conv.weight.copy_(conv.weight[:, perm])
    return other


@pytest.mark.parametrize("mode", ["reference", "assignment"])
def test_maps_do_not_depend_on_the_channel_order(setup, mode):
    enc, x, mu = setup
    perm = torch.tensor([3, 0, 4, 1, 2])
    other = _permuted_copy(enc, perm)
    a = grad_ceam(enc, "features", x, mu, target=mode)
    b = grad_ceam(other, "features", x[:, perm], mu, target=mode)
    torch.testing.assert_close(b.embeddings, a.embeddings, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.heatmaps, a.heatmaps, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.channel_weights, a.channel_weights, atol=1e-5, rtol=1e-4)
    ta = cardinality(enc, "features", x, mu, a.channel_weights)
    tb = cardinality(other, "features", x[:, perm], mu, b.channel_weights)
    assert ta.before.tolist() == tb.before.tolist() and ta.after.tolist() == tb.after.tolist()
    # and the permutation matters without the matching weights (the test can fail)
    c = grad_ceam(enc, "features", x[:, perm], mu, target=mode)
    assert not torch.allclose(c.embeddings, a.embeddings, atol=1e-3)


# -- figures: one panel row per channel, all coloured by the series' one map -------------
def _panels(fig):
    from matplotlib.collections import LineCollection

    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")
            and any(isinstance(c, LineCollection) for c in ax.collections)]


def test_members_figure_has_a_row_per_channel_and_a_column_per_member():
    import matplotlib.pyplot as plt

    from clustercam.explain.plots import cluster_members_figure, sample_all_clusters_figure

    x, heat = torch.randn(3, 6, 30), torch.rand(3, 30)
    fig = cluster_members_figure(x, heat, 1, 7, labels=[0, 0, 1])
    panels = _panels(fig)
    assert len(panels) == 6 * 3
    rows = sorted({round(ax.get_position().y0, 3) for ax in panels})
    cols = sorted({round(ax.get_position().x0, 3) for ax in panels})
    assert (len(rows), len(cols)) == (6, 3)
    # every channel of member 2 is coloured by member 2's map (segment means of its ends)
    member2 = [ax for ax in panels if round(ax.get_position().x0, 3) == cols[1]]
    segment_heat = (heat[1, :-1] + heat[1, 1:]).numpy() / 2
    for ax in member2:
        np.testing.assert_allclose(ax.collections[0].get_array(), segment_heat, rtol=1e-6)
    plt.close(fig)
    fig = sample_all_clusters_figure(x[0], torch.rand(4, 30), [1, 2, 3, 4], assigned=2)
    assert len(_panels(fig)) == 6 * 4 and "assigned" in fig.axes[2].get_title()
    plt.close(fig)


def test_beyond_twelve_channels_the_most_varying_mean_series_and_the_title_says_so():
    import matplotlib.pyplot as plt

    from clustercam.explain.plots import cluster_members_figure
    from clustercam.explain.plots.series import shown_channels

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 20, 50, generator=g)
    shared = torch.sin(torch.linspace(0, 6, 50)) * 3
    strong = [1, 4, 5, 7, 9, 11, 12, 13, 15, 16, 18, 19]
    x[:, strong] += shared  # the members share a shape on these channels only
    keep, note = shown_channels(x.numpy())
    assert keep.tolist() == strong and "12 of 20 channels" in note
    fig = cluster_members_figure(x, torch.rand(4, 50), 0, 4)
    assert len(_panels(fig)) == 12 * 4 and "12 of 20 channels" in fig._suptitle.get_text()
    assert {ax.get_ylabel() for ax in _panels(fig) if ax.get_ylabel()} == {f"ch {c}" for c in strong}
    plt.close(fig)
    assert shown_channels(x[:, :12].numpy())[1] == ""
    with pytest.raises(UserError, match="max_channels must be >= 1"):
        shown_channels(x.numpy(), 0)
