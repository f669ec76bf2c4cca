"""Series figures: each series drawn as a line coloured by its map (paper Fig. 9, 11).

A univariate series is one panel; a multivariate one (C > 1) is a column of C panels, one
row per channel, every channel coloured by the series' one map (a Grad-CeAM map is over
time: the first convolution mixes the channels). Up to ``MAX_CHANNELS`` channels are drawn;
beyond that the ``MAX_CHANNELS`` whose shown series' mean varies most over time (the
channels where the shown series share a shape), as the title says.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from clustercam.exceptions import UserError
from clustercam.explain.plots.common import CMAP, colour_bar

MAX_CHANNELS = 12


def coloured_line(ax, series: np.ndarray, heat: np.ndarray, norm) -> LineCollection:
    """One channel of a series, each segment coloured by the mean map value of its ends.

    Args:
        ax: the matplotlib axes to draw on.
        series: L values.
        heat: L map values in [0, 1].
        norm: the colour normalisation (``plt.Normalize(0, 1)``).

    Returns:
        The ``LineCollection`` drawn.
    """
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


def shown_channels(x: np.ndarray, max_channels: int = MAX_CHANNELS) -> tuple[np.ndarray, str]:
    """The channels to draw of n series, in channel order, and a title note.

    All C when C <= ``max_channels``; else the ``max_channels`` whose mean over the n series
    has the largest variance over time (on z-normalised inputs every single channel has
    variance 1, so a single series keeps its first non-constant channels).

    Args:
        x: n x C x L.
        max_channels: at most this many channels (>= 1).

    Returns:
        The channel indices and a note for the title ("" when all are drawn).

    Raises:
        UserError: ``max_channels`` < 1.

    Example:
        >>> import numpy as np
        >>> from clustercam.explain.plots.series import shown_channels
        >>> x = np.zeros((2, 3, 4))
        >>> x[:, 2] = [0.0, 1.0, 0.0, 1.0]
        >>> shown_channels(x, max_channels=1)
        (array([2]), ' - 1 of 3 channels (largest variance of the mean series)')
    """
    c = x.shape[1]
    if max_channels < 1:
        raise UserError(f"max_channels must be >= 1, got {max_channels}")
    if c <= max_channels:
        return np.arange(c), ""
    score = x.mean(0).var(-1)
    keep = np.sort(np.argsort(-score, kind="stable")[:max_channels])
    return keep, f" - {max_channels} of {c} channels (largest variance of the mean series)"


def _grid(rows: int, cols: int, multichannel: bool) -> tuple[Figure, np.ndarray]:
    w, h = ((2.7 * cols + 1.4), (0.8 * rows + 1.3)) if multichannel else (8, 1.6 * rows + 0.8)
    fig, axes = plt.subplots(rows, cols, figsize=(w, h), sharex=True, squeeze=False)
    return fig, axes


def _finish(fig: Figure, title: str, fixed: bool = False) -> Figure:
    """Title, layout and colour bar.

    ``fixed`` margins (in inches) for the channel grids, where ``tight_layout`` costs most
    of the figure's time.
    """
    fig.suptitle(title, fontsize=11)
    if fixed:
        w, h = fig.get_size_inches()
        fig.subplots_adjust(left=0.6 / w, right=1 - 1.5 / w, bottom=0.5 / h, top=1 - 0.65 / h,
                            wspace=0.22, hspace=0.3)
    else:
        fig.tight_layout(rect=(0, 0, 0.9, 1))
    colour_bar(fig, rect=(1 - 1.15 / fig.get_size_inches()[0], 0.15, 0.02, 0.7) if fixed else
               (0.91, 0.15, 0.02, 0.7))
    return fig


def _series_figure(x: np.ndarray, heatmaps: np.ndarray, titles: Sequence[str], title: str,
                   max_channels: int) -> Figure:
    """Series i (C x L) under map i (L).

    Univariate ones stacked, one panel each; multivariate ones side by side, one column
    each, one row per channel.
    """
    norm = plt.Normalize(0, 1)
    n = len(x)
    if x.shape[1] == 1:
        fig, axes = _grid(n, 1, multichannel=False)
        for i in range(n):
            coloured_line(axes[i, 0], x[i, 0], heatmaps[i], norm)
            axes[i, 0].set_ylabel("value (z-norm.)")
            axes[i, 0].set_title(titles[i], fontsize=8)
        axes[-1, 0].set_xlabel("time step")
        return _finish(fig, title)
    channels, note = shown_channels(x, max_channels)
    fig, axes = _grid(len(channels), n, multichannel=True)
    for i in range(n):
        for r, ch in enumerate(channels):
            ax = axes[r, i]
            coloured_line(ax, x[i, ch], heatmaps[i], norm)
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_ylabel(f"ch {ch}", fontsize=8)
        axes[0, i].set_title(titles[i], fontsize=8)
        axes[-1, i].set_xlabel("time step", fontsize=8)
    return _finish(fig, title + note, fixed=True)


def members_series(
    x: np.ndarray, heatmaps: np.ndarray, title: str, labels: Sequence[int] | None,
    max_channels: int = MAX_CHANNELS,
) -> Figure:
    """A cluster's members, nearest the centroid first, each under its map.

    Args:
        x: n x C x L.
        heatmaps: n x L in [0, 1].
        title: the figure's title.
        labels: the members' class labels (n), for the panel titles.
        max_channels: at most this many channels drawn (:func:`shown_channels`).

    Returns:
        The figure.
    """
    titles = [f"#{i + 1} nearest" + ("" if labels is None else f", label {int(labels[i])}")
              for i in range(len(x))]
    return _series_figure(x, heatmaps, titles, title, max_channels)


def sample_series(
    x: np.ndarray, heatmaps: np.ndarray, sizes: Sequence[int], assigned: int,
    raw_max: Sequence[float] | None, title: str, max_channels: int = MAX_CHANNELS,
) -> Figure:
    """One series under each of K maps, one panel (column) per cluster.

    Args:
        x: C x L.
        heatmaps: K x L in [0, 1].
        sizes: the K clusters' numbers of members.
        assigned: the series' own cluster.
        raw_max: per cluster, the unnormalised map's maximum (None: not shown).
        title: the figure's title.
        max_channels: at most this many channels drawn (:func:`shown_channels`).

    Returns:
        The figure.
    """
    k = len(heatmaps)
    titles = []
    for c in range(k):
        t = f"cluster {c} (size {int(sizes[c])})" + (" - assigned" if c == assigned else "")
        if raw_max is not None:
            t += f", raw max {float(raw_max[c]):.3g}"
        titles.append(t)
    return _series_figure(np.repeat(x[None], k, axis=0), heatmaps, titles, title, max_channels)
