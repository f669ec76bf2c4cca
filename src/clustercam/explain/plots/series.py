"""Series figures: each series drawn as a line coloured by its map (paper Fig. 9, 11)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from clustercam.explain.plots.common import CMAP, colour_bar


def coloured_line(ax, series: np.ndarray, heat: np.ndarray, norm) -> LineCollection:
    """One channel of a series, each segment coloured by the mean map value of its ends."""
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


def _panel(ax, x: np.ndarray, heat: np.ndarray, norm, xlabel: bool) -> LineCollection | None:
    """Every channel of a C x L series in one panel, coloured by the same map."""
    mappable = None
    for ch in range(x.shape[0]):
        mappable = coloured_line(ax, x[ch], heat, norm)
    ax.set_ylabel("value (z-norm.)")
    if xlabel:
        ax.set_xlabel("time step")
    return mappable


def _stacked(panels: int) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(panels, 1, figsize=(8, 1.6 * panels + 0.8), sharex=True, squeeze=False)
    return fig, axes[:, 0]


def _finish(fig: Figure, title: str) -> Figure:
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    colour_bar(fig)
    return fig


def members_series(
    x: np.ndarray, heatmaps: np.ndarray, title: str, labels: Sequence[int] | None
) -> Figure:
    """n series (n x C x L) one panel each, nearest the centroid first, under n x L maps."""
    n = len(x)
    fig, axes = _stacked(n)
    norm = plt.Normalize(0, 1)
    for i in range(n):
        _panel(axes[i], x[i], heatmaps[i], norm, xlabel=i == n - 1)
        rank = f"#{i + 1} nearest"
        axes[i].set_title(rank if labels is None else f"{rank}, label {int(labels[i])}", fontsize=8)
    return _finish(fig, title)


def sample_series(
    x: np.ndarray, heatmaps: np.ndarray, sizes: Sequence[int], assigned: int,
    raw_max: Sequence[float] | None, title: str,
) -> Figure:
    """One series (C x L) under each of K maps (K x L), one panel per cluster."""
    k = len(heatmaps)
    fig, axes = _stacked(k)
    norm = plt.Normalize(0, 1)
    for c in range(k):
        _panel(axes[c], x, heatmaps[c], norm, xlabel=c == k - 1)
        t = f"cluster {c} (size {int(sizes[c])})" + (" - assigned" if c == assigned else "")
        if raw_max is not None:
            t += f", raw max {float(raw_max[c]):.3g}"
        axes[c].set_title(t, fontsize=8)
    return _finish(fig, title)
