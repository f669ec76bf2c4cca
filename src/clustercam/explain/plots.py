"""Matplotlib figures from tensors (no trainer, no logger): the paper's Fig. 9 and Fig. 11.

Series are drawn as lines coloured by the map; images (N x C x H x W) get the map blended
over them. Every figure has axis labels, a colour bar and the cluster sizes in its titles.
"""

from __future__ import annotations

from collections.abc import Sequence

# no matplotlib.use(): headless runs fall back to Agg, notebooks keep their inline backend
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

CMAP = "jet"


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def _coloured_line(ax, series: np.ndarray, heat: np.ndarray, norm) -> LineCollection:
    """One channel of a series, each segment coloured by the map value at its start."""
    t = np.arange(len(series))
    points = np.stack([t, series], 1)[:, None, :]
    segments = np.concatenate([points[:-1], points[1:]], axis=1)
    lc = LineCollection(segments, cmap=CMAP, norm=norm, linewidth=2)
    lc.set_array((heat[:-1] + heat[1:]) / 2)
    ax.add_collection(lc)
    ax.set_xlim(0, len(series) - 1)
    pad = 0.05 * (series.max() - series.min() + 1e-9)
    ax.set_ylim(series.min() - pad, series.max() + pad)
    return lc


def _image(ax, image: np.ndarray, heat: np.ndarray | None, alpha: float = 0.45):
    """An image (C x H x W) in grey or colour with an optional map blended over it.

    The image is min-max scaled for display only; the map keeps its [0, 1] scale so
    colours mean the same in every panel.
    """
    img = image.transpose(1, 2, 0)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if heat is None:
        return None
    return ax.imshow(heat, cmap=CMAP, vmin=0, vmax=1, alpha=alpha, interpolation="bilinear")


def _colour_bar(fig: Figure) -> None:
    """A map colour bar at full opacity (the blended panels use a transparent map)."""
    cax = fig.add_axes((0.91, 0.15, 0.02, 0.7))
    sm = ScalarMappable(norm=plt.Normalize(0, 1), cmap=CMAP)
    fig.colorbar(sm, cax=cax, label="Grad-CeAM (normalised)")


def _image_grid(n: int, cols: int, with_inputs: bool, height: float) -> tuple[Figure, np.ndarray]:
    """Axes for n image panels, ``cols`` a row; with ``with_inputs`` each row of maps sits
    under a row of the plain images, so colour images stay readable under the map."""
    cols = max(1, min(n, cols))
    rows = int(np.ceil(n / cols))
    per = 2 if with_inputs else 1
    fig, axes = plt.subplots(rows * per, cols, figsize=(2.2 * cols + 0.8, height * rows * per + 0.7),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    return fig, axes


def _panel(ax, x: np.ndarray, heat: np.ndarray, norm, xlabel: bool):
    if x.ndim == 2:  # C x L series
        mappable = None
        for ch in range(x.shape[0]):
            mappable = _coloured_line(ax, x[ch], heat, norm)
        ax.set_ylabel("value (z-norm.)")
        if xlabel:
            ax.set_xlabel("time step")
        return mappable
    return _image(ax, x, heat)


def cluster_members_figure(
    x: Sequence, heatmaps: Sequence, cluster: int, size: int, labels: Sequence[int] | None = None,
    majority: int | None = None, mode: str = "",
) -> Figure:
    """Fig. 7-9: members of one cluster (nearest the centroid first) under that cluster's map.

    ``x``: n x C x L (series) or n x C x H x W (images); ``heatmaps``: n x L or n x H x W in [0, 1].
    """
    x, heatmaps = _np(x), _np(heatmaps)
    n = len(x)
    title = f"Cluster {cluster} (size {size})"
    if majority is not None:
        title += f", majority label {majority}"
    if mode:
        title += f" - Grad-CeAM {mode}"
    if x.ndim == 4:
        return _members_images(x, heatmaps, title, labels)
    norm = plt.Normalize(0, 1)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.6 * n + 0.8), sharex=True, squeeze=False)
    axes = axes[:, 0]
    mappable = None
    for i in range(n):
        mappable = _panel(axes[i], x[i], heatmaps[i], norm, xlabel=i == n - 1) or mappable
        rank = f"#{i + 1} nearest"
        axes[i].set_title(rank if labels is None else f"{rank}, label {int(labels[i])}", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    if mappable is not None:
        cax = fig.add_axes((0.91, 0.15, 0.02, 0.7))
        fig.colorbar(mappable, cax=cax, label="Grad-CeAM (normalised)")
    return fig


def sample_all_clusters_figure(
    x: Sequence, heatmaps: Sequence, sizes: Sequence[int], assigned: int,
    label: int | None = None, raw_max: Sequence[float] | None = None, mode: str = "",
) -> Figure:
    """Fig. 11: one sample under every cluster's map (its own cluster marked).

    ``x``: C x L or C x H x W; ``heatmaps``: K x L or K x H x W. ``raw_max`` (per cluster,
    the unnormalised map's maximum) is shown because normalisation hides weak evidence.
    """
    x, heatmaps = _np(x), _np(heatmaps)
    k = len(heatmaps)
    head = "One sample under every cluster's map"
    if label is not None:
        head += f" (label {int(label)})"
    if mode:
        head += f" - Grad-CeAM {mode}"
    if x.ndim == 3:
        return _sample_images(x, heatmaps, sizes, assigned, raw_max, head)
    norm = plt.Normalize(0, 1)
    fig, axes = plt.subplots(k, 1, figsize=(8, 1.6 * k + 0.8), sharex=True, squeeze=False)
    axes = axes[:, 0]
    mappable = None
    for c in range(k):
        mappable = _panel(axes[c], x, heatmaps[c], norm, xlabel=c == k - 1) or mappable
        t = f"cluster {c} (size {int(sizes[c])})" + (" - assigned" if c == assigned else "")
        if raw_max is not None:
            t += f", raw max {float(raw_max[c]):.3g}"
        axes[c].set_title(t, fontsize=8)
    fig.suptitle(head, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    if mappable is not None:
        cax = fig.add_axes((0.91, 0.15, 0.02, 0.7))
        fig.colorbar(mappable, cax=cax, label="Grad-CeAM (normalised)")
    return fig


# -- images (paper Fig. 7, 8, 11) -------------------------------------------------------------


def _members_images(
    x: np.ndarray, heatmaps: np.ndarray, title: str, labels: Sequence[int] | None, cols: int = 5
) -> Figure:
    """Members as columns: the plain image above the same image with the cluster's map."""
    n = len(x)
    fig, axes = _image_grid(n, cols, with_inputs=True, height=1.9)
    cols = axes.shape[1]
    for i in range(n):
        r, c = divmod(i, cols)
        top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
        for ax in (top, bottom):
            ax.axis("on")
        _image(top, x[i], None)
        _image(bottom, x[i], heatmaps[i])
        rank = f"#{i + 1} nearest"
        top.set_title(rank if labels is None else f"{rank}, label {int(labels[i])}", fontsize=8)
        if c == 0:
            top.set_ylabel("input", fontsize=8)
            bottom.set_ylabel("Grad-CeAM", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 0.97))
    _colour_bar(fig)
    return fig


def _sample_images(
    x: np.ndarray, heatmaps: np.ndarray, sizes: Sequence[int], assigned: int,
    raw_max: Sequence[float] | None, head: str, cols: int = 6,
) -> Figure:
    """The plain image first, then one panel per cluster with that cluster's map."""
    k = len(heatmaps)
    fig, axes = _image_grid(k + 1, cols, with_inputs=False, height=2.4)
    panels = axes.ravel()
    panels[0].axis("on")
    _image(panels[0], x, None)
    panels[0].set_title(f"input\nassigned to cluster {assigned}", fontsize=8)
    for c in range(k):
        ax = panels[c + 1]
        ax.axis("on")
        _image(ax, x, heatmaps[c])
        t = f"cluster {c} (size {int(sizes[c])})"
        if raw_max is not None:
            t += f"\nraw max {float(raw_max[c]):.3g}"
        ax.set_title(t, fontsize=8, fontweight="bold" if c == assigned else "normal")
        if c == assigned:  # a frame marks the sample's own cluster
            for spine in ax.spines.values():
                spine.set_edgecolor("black")
                spine.set_linewidth(2.5)
    fig.suptitle(head, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 0.97))
    _colour_bar(fig)
    return fig
