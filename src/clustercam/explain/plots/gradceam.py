"""Grad-CeAM figures, for series and images alike.

Members of a cluster under its map (paper Fig. 7-9), one sample under every cluster's map
(Fig. 11).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from clustercam.explain.deprecation import renamed_parameters
from clustercam.explain.gradceam.cluster_explanation import ClusterExplanation
from clustercam.explain.plots.common import to_numpy
from clustercam.explain.plots.images import members_images, sample_images
from clustercam.explain.plots.series import members_series, sample_series


def cluster_members_figure(
    x: Sequence, heatmaps: Sequence, cluster: int, size: int, labels: Sequence[int] | None = None,
    majority: int | None = None, mode: str = "",
) -> Figure:
    """Paper Fig. 7-9: members of one cluster (nearest the centroid first) under its map.

    Args:
        x: the members, n x C x L (series) or n x C x H x W (images).
        heatmaps: their maps for this cluster, n x L or n x H x W in [0, 1].
        cluster: the cluster's id, for the title.
        size: the cluster's number of members, for the title.
        labels: the members' class labels (n), for the panel titles.
        majority: the cluster's majority class label, for the title.
        mode: the Grad-CeAM target's name, for the title.

    Returns:
        The figure (close it with ``plt.close(fig)``).

    Example:
        >>> import matplotlib.pyplot as plt
        >>> import torch
        >>> from clustercam.explain.plots import cluster_members_figure
        >>> fig = cluster_members_figure(torch.randn(2, 1, 32), torch.rand(2, 32), cluster=0,
        ...                              size=7, labels=[1, 1], mode="reference")
        >>> [ax.get_title() for ax in fig.axes[:2]]  # one panel per member, then the colour bar
        ['#1 nearest, label 1', '#2 nearest, label 1']
        >>> plt.close(fig)
    """
    x, heatmaps = to_numpy(x), to_numpy(heatmaps)
    title = f"Cluster {cluster} (size {size})"
    if majority is not None:
        title += f", majority label {majority}"
    if mode:
        title += f" - Grad-CeAM {mode}"
    if x.ndim == 4:
        return members_images(x, heatmaps, title, labels)
    return members_series(x, heatmaps, title, labels)


def sample_all_clusters_figure(
    x: Sequence, heatmaps: Sequence, sizes: Sequence[int], assigned: int,
    label: int | None = None, raw_max: Sequence[float] | None = None, mode: str = "",
) -> Figure:
    """Paper Fig. 11: one sample under every cluster's map (its own cluster marked).

    Args:
        x: the sample, C x L (series) or C x H x W (images).
        heatmaps: its maps, K x L or K x H x W in [0, 1].
        sizes: the K clusters' numbers of members.
        assigned: the sample's own cluster.
        label: its class label, for the title.
        raw_max: per cluster, the unnormalised map's maximum, shown because the
            normalisation hides weak evidence.
        mode: the Grad-CeAM target's name, for the title.

    Returns:
        The figure.
    """
    x, heatmaps = to_numpy(x), to_numpy(heatmaps)
    head = "One sample under every cluster's map"
    if label is not None:
        head += f" (label {int(label)})"
    if mode:
        head += f" - Grad-CeAM {mode}"
    if x.ndim == 3:
        return sample_images(x, heatmaps, sizes, assigned, raw_max, head)
    return sample_series(x, heatmaps, sizes, assigned, raw_max, head)


@renamed_parameters(labels="clusters")
def explanation_figures(
    x: Tensor, y: Tensor, clusters: Tensor, explanation: ClusterExplanation
) -> Iterator[tuple[str, Figure]]:
    """The figures of :func:`~clustercam.explain.explain_clusters`' output, by name.

    One ``cluster_<c>`` per non-empty cluster (Fig. 7-9) and one ``sample_all_clusters``
    (Fig. 11: the member nearest its centroid in the first non-empty cluster).

    Args:
        x: the explained inputs, N x C x L or N x C x H x W.
        y: the class labels, N.
        clusters: each sample's cluster, N. ``labels=`` is the old name.
        explanation: what :func:`~clustercam.explain.explain_clusters` returned for x.

    Yields:
        ``(name, figure)`` pairs; none when the explanation has no member maps.
    """
    maps = explanation.member_maps
    if maps is None:
        return
    k = len(explanation.members)
    clusters = torch.as_tensor(clusters).long()
    sizes = torch.bincount(clusters, minlength=k)
    sel = explanation.member_index
    start = 0
    for c, members in enumerate(explanation.members):
        if len(members) == 0:
            continue
        rows = slice(start, start + len(members))
        majority = int(torch.mode(y[clusters == c]).values)
        yield f"cluster_{c}", cluster_members_figure(
            x[members], maps.heatmaps[rows, c], c, int(sizes[c]), labels=y[members].tolist(),
            majority=majority, mode=explanation.mode)
        start += len(members)
    if len(sel):
        yield "sample_all_clusters", sample_all_clusters_figure(
            x[sel[0]], maps.heatmaps[0], sizes.tolist(), int(clusters[sel[0]]), label=int(y[sel[0]]),
            raw_max=maps.raw[0].flatten(1).amax(1).tolist(), mode=explanation.mode)
