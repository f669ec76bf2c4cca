"""Grad-CeAM figures: members of a cluster under its map (paper Fig. 7-9), one sample under
every cluster's map (Fig. 11), for series and images alike."""

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
    """Fig. 7-9: members of one cluster (nearest the centroid first) under that cluster's map.

    ``x``: n x C x L (series) or n x C x H x W (images); ``heatmaps``: n x L or n x H x W in [0, 1].
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
    """Fig. 11: one sample under every cluster's map (its own cluster marked).

    ``x``: C x L or C x H x W; ``heatmaps``: K x L or K x H x W. ``raw_max`` (per cluster,
    the unnormalised map's maximum) is shown because normalisation hides weak evidence.
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
    """``(name, figure)`` for each non-empty cluster (``cluster_<c>``) and one
    ``sample_all_clusters`` (the member nearest its centroid in the first non-empty
    cluster), from :func:`~clustercam.explain.gradceam.cluster_explanation.explain_clusters` output.
    ``y``: the class labels (N), ``clusters``: each sample's cluster (N)."""
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
