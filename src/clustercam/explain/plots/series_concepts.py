"""Concept figures of series: each concept's map drawn over the series, concepts side by side.

A series has no picture to blend a map over, so each panel draws the series itself as a line
coloured by the concept's map at each time step (as the Grad-CeAM series figures of
:mod:`clustercam.explain.plots.series` do), over a band of the map blended into white at
opacity ``alpha / 2 * map`` (the image figures' blend, :func:`~clustercam.explain.plots.concepts.blend`,
with white for the image, at half its opacity so that the line stays visible where the map is
strong): strong stretches of a concept stand out as shaded bands. A
multivariate series draws each channel (up to ``MAX_CHANNELS``,
:func:`~clustercam.explain.plots.series.shown_channels`) in its own horizontal strip of the
panel, every channel coloured by the concept's one map (a concept map is over time: it sums the
layer's channels, which mix the input's).

Drawn the fast way of the image concept figures (:mod:`clustercam.explain.plots.panels`: no
axes; every panel's frame, title, band and one line collection per panel are figure-level artists), so a figure of
many concepts or channels costs about as much as one image figure (~0.5 s for 10 concepts of
a univariate series of length 500, ~1 s with 12 channels, on a loaded 2-core machine). The
panel titles are ``fig.texts`` in panel order, the line collections in ``fig.artists``
the panels' lines in the same order.
:func:`concept_drawers` picks these or the image figures for a display sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import Collection, LineCollection, PathCollection
from matplotlib.figure import Figure
from matplotlib.path import Path

from clustercam.explain.concepts.image.importance import importance_order
from clustercam.explain.maps import minmax_normalise, resize_maps
from clustercam.explain.plots.class_concepts import _num
from clustercam.explain.plots.common import CMAP, to_numpy
from clustercam.explain.plots.concepts import _fmt
from clustercam.explain.plots.panels import Panels, blend_tile
from clustercam.explain.plots.series import MAX_CHANNELS, shown_channels

PLAIN = "0.2"  # the colour of a series drawn without a map (the input, an empty concept)


def as_series_maps(maps: Any, length: int) -> np.ndarray:
    """K x ``length`` maps in [0, 1], as a series figure draws them.

    Resized linearly to the series' length, and min-max normalised per map unless every
    value already lies in [0, 1] (then drawn as given, e.g. sub-concepts normalised with
    their parent's bounds).

    Args:
        maps: K x l maps (a tensor or an array), at any time resolution.
        length: the series' length L.

    Returns:
        K x L float array in [0, 1] (a constant map becomes 0).
    """
    m = torch.as_tensor(to_numpy(maps), dtype=torch.float32)
    m = resize_maps(m, (int(length),))
    if m.numel() and not (float(m.min()) >= 0 and float(m.max()) <= 1):
        m = minmax_normalise(m, 1)
    return m.nan_to_num(0.0).numpy()


def _strips(series: np.ndarray) -> np.ndarray:
    """C x L values scaled into C stacked strips of [0, 1], channel 0 at the top.

    Each channel to its own min and max (a constant channel in the middle of its strip).
    """
    c = len(series)
    lo, hi = series.min(1, keepdims=True), series.max(1, keepdims=True)
    unit = np.where(hi > lo, (series - lo) / np.where(hi > lo, hi - lo, 1), 0.5)
    return ((c - 1 - np.arange(c))[:, None] + 0.1 + 0.8 * unit) / c


def _draw(p: Panels, r: int, c: int, strips: np.ndarray, heat: np.ndarray | None, title: str,
          cmap: str, alpha: float, fontsize: float = 9, pad: float | None = None) -> None:
    """Panel (r, c): the strips' lines, coloured by ``heat`` (L in [0, 1]) over its band.

    Plain lines and no band without a map (``heat`` None).
    """
    x0, y0, x1, y1 = p.boxes[r, c]
    n_ch, length = strips.shape
    t = x0 + (x1 - x0) * (np.arange(length) + 0.5) / length  # at the band's pixel centres
    points = np.stack([np.broadcast_to(t, strips.shape), y0 + (y1 - y0) * strips], -1)  # C x L x 2
    segments = np.stack([points[:, :-1], points[:, 1:]], 2).reshape(-1, 2, 2)
    if heat is None:
        lines: Collection = LineCollection(list(points), colors=PLAIN, linewidths=1.2, zorder=2)
    else:
        white = np.full((1, length), 255, np.uint8)
        p.images.panels.append((p.boxes[r, c], blend_tile(white, heat[None], cmap, alpha / 2)))
        lines = _coloured_segments(segments, np.tile((heat[:-1] + heat[1:]) / 2, n_ch), cmap)
    p.add(lines)
    p.frame(r, c, title, fontsize, pad)


def _coloured_segments(segments: np.ndarray, values: np.ndarray, cmap: str) -> PathCollection:
    """S x 2 x 2 segments, segment s in the colour map's colour of ``values[s]`` (in [0, 1]).

    The colour map has ``N`` colours (256), so the segments are grouped by colour: one
    path of move-to / line-to pairs per colour drawn, each in its colour. Matplotlib builds
    a ``Path`` per segment of a ``LineCollection`` (~30 us each: ~2 s for a 12-channel
    figure of length 500); this draws the same colours, with round caps so that the
    separate segments join without gaps.
    """
    cm = plt.get_cmap(cmap)
    level = np.clip((values * cm.N).astype(np.intp), 0, cm.N - 1)  # Colormap.__call__'s index
    order = np.argsort(level, kind="stable")
    levels, starts = np.unique(level[order], return_index=True)
    paths = []
    for part in np.split(order, starts[1:]):
        codes = np.tile([Path.MOVETO, Path.LINETO], len(part)).astype(Path.code_type)
        paths.append(Path(segments[part].reshape(-1, 2), codes))
    return PathCollection(paths, facecolors="none", edgecolors=cm(levels), linewidths=1.6, zorder=2,
                          capstyle="round")  # no gaps where the colour changes


def _height(n_channels: int, panel_size: float) -> float:
    """A panel's height in inches: half its width for one channel, more for several."""
    return panel_size * 0.5 + 0.3 * (n_channels - 1)


def series_concept_figure(
    series: Any,
    maps: Any,
    channels: Sequence[int],
    importance: Sequence[float],
    *,
    title: str = "",
    cmap: str = CMAP,
    alpha: float = 0.6,
    panel_names: Sequence[str] | None = None,
    panel_size: float = 2.4,
    max_channels: int = MAX_CHANNELS,
) -> Figure:
    """The series, then one panel per concept by decreasing importance, each coloured by its map.

    The series counterpart of :func:`~clustercam.explain.plots.concepts.concept_figure`, with
    the same arguments and panel titles. Empty concepts (no channel) are drawn last, plain.

    Args:
        series: C x L, the series as the model sees it.
        maps: K x l concept maps (any length l, resized linearly to L; see :func:`as_series_maps`).
        channels: per concept, its number of channels.
        importance: per concept, its importance (%).
        title: the figure's title.
        cmap: the maps' colour map.
        alpha: twice the band's opacity at map value 1 (the image figures' ``alpha``).
        panel_names: one per concept (default ``C0 .. C{K-1}``).
        panel_size: a panel's width in inches.
        max_channels: at most this many channels drawn (:func:`~.series.shown_channels`).

    Returns:
        The figure (no axes): the panel titles are ``fig.texts`` and the panels' line
        collections are in ``fig.artists``, both in panel order; then the colour bar's.
    """
    x = to_numpy(series).astype(float)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    heat = as_series_maps(maps, x.shape[-1])
    n = len(heat)
    names = list(panel_names) if panel_names is not None else [f"C{i}" for i in range(n)]
    keep, note = shown_channels(x[None], max_channels)
    strips = _strips(x[keep])
    height = _height(len(keep), panel_size)
    width = panel_size * (n + 1) + 1.1
    right = 1 - 1.1 / width
    top_margin = 1.0 if title else 0.75
    fh = height + top_margin + 0.35
    p = Panels((width, fh), 1, n + 1, None, left=0.01, right=right, bottom=0.35 / fh,
                top=1 - top_margin / fh, wspace=0.06)
    _draw(p, 0, 0, strips, None, "input" + (f" ({len(keep)} of {x.shape[0]} ch.)" if note else ""), cmap, alpha)
    x0, y0, _, y1 = p.boxes[0, 0]
    p.text(x0, y0 - 0.05 / fh, f"time 0 - {x.shape[-1] - 1}", fontsize=7, ha="left", va="top")
    if x.shape[0] > 1:  # which channel each strip is (channel order, top to bottom)
        for r, ch in enumerate(keep):
            p.text(x0 + 0.03 / width, y1 - (y1 - y0) * r / len(keep), f"ch {ch}", fontsize=6,
                      ha="left", va="top", color="0.4")
    for col, i in enumerate(importance_order(importance), start=1):
        label = f"{names[i]}  n={int(channels[i])}\nI={_fmt(float(importance[i]))}"
        _draw(p, 0, col, strips, heat[i] if channels[i] > 0 else None, label, cmap, alpha)
    p.colour_bar((right + 0.1 / width, 0.35 / fh, 0.15 / width, height / fh), "concept map (min-max)", cmap)
    return p.done(title + note)


def series_sub_concept_figure(
    series: Any,
    parent_maps: Any,
    parent_channels: Sequence[int],
    parent_importance: Sequence[float],
    sub_maps: Any,
    sub_channels: Any,
    sub_importance: Any,
    *,
    title: str = "",
    cmap: str = CMAP,
    alpha: float = 0.6,
    panel_size: float = 2.2,
    max_channels: int = MAX_CHANNELS,
) -> Figure | None:
    """One row per split concept (by decreasing importance): the parent, then its sub-concepts.

    The series counterpart of :func:`~clustercam.explain.plots.concepts.sub_concept_figure`.

    Args:
        series: C x L.
        parent_maps: K x l concept maps.
        parent_channels: per concept, its number of channels.
        parent_importance: per concept, its importance (%).
        sub_maps: K x S x l, normalised with the parent's bounds (so a weak sub-concept looks
            weak; maps in [0, 1] are drawn as given).
        sub_channels: K x S channel counts.
        sub_importance: K x S importances (%).
        title: the figure's title.
        cmap: the maps' colour map.
        alpha: twice the band's opacity at map value 1 (the image figures' ``alpha``).
        panel_size: a panel's width in inches.
        max_channels: at most this many channels drawn.

    Returns:
        The figure, or None when no concept was split.
    """
    sub_channels, sub_importance = to_numpy(sub_channels), to_numpy(sub_importance)
    rows = [i for i in importance_order(parent_importance) if sub_channels[i].sum() > 0]
    if not rows:
        return None
    x = to_numpy(series).astype(float)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    length, s = x.shape[-1], sub_channels.shape[1]
    parents = as_series_maps(parent_maps, length)
    subs = as_series_maps(to_numpy(sub_maps).reshape(-1, to_numpy(sub_maps).shape[-1]), length)
    subs = subs.reshape(len(parents), s, length)
    keep, note = shown_channels(x[None], max_channels)
    strips = _strips(x[keep])
    row_h = _height(len(keep), panel_size) + 0.6
    height = row_h * len(rows) + (0.5 if title else 0.1)
    p = Panels((panel_size * (s + 1), height), len(rows), s + 1, None, left=0.01, right=0.99,
                bottom=0.1 / height, top=1 - (0.5 if title else 0.1) / height - 0.45 / height,
                wspace=0.06, hspace=0.6 / (row_h - 0.6))
    for r, i in enumerate(rows):
        _draw(p, r, 0, strips, parents[i],
              f"C{i}  n={int(parent_channels[i])}\nI={_fmt(float(parent_importance[i]))}", cmap, alpha)
        sub_order = [j for j in importance_order(sub_importance[i]) if sub_channels[i, j] > 0]
        for col, j in enumerate(sub_order, start=1):
            _draw(p, r, col, strips, subs[i, j],
                  f"C{i}{j}  n={int(sub_channels[i, j])}\nI={_fmt(float(sub_importance[i, j]))}", cmap, alpha)
    return p.done(title + note)


def series_class_concept_figure(
    index: Any,
    maps: Any,
    images: Mapping[int, Any],
    channels: Sequence[int],
    stability: Sequence[float],
    importance: Sequence[float],
    importance_std: Sequence[float],
    title: str = "",
    cmap: str = CMAP,
    alpha: float = 0.6,
    panel_size: float = 1.8,
    max_channels: int = MAX_CHANNELS,
) -> Figure:
    """One row per class concept (by decreasing importance): the series where it is strongest.

    Each series coloured by the concept's map on it.

    The series counterpart of
    :func:`~clustercam.explain.plots.class_concepts.class_concept_figure`, with the same
    arguments (``images``: dataset index -> C x L series).

    Args:
        index: n x k dataset indices of each concept's top series (``-1``: an empty slot).
        maps: n x k x l (or n x k x 1 x l, the concept code's grid of a series layer), the
            concept's summed channels on those series (layer resolution; resized linearly to
            each series' length, min-max normalised per series).
        images: dataset index -> C x L series.
        channels: per concept, its number of channels.
        stability: per concept, its stability.
        importance: per concept, its mean importance (%) over the class.
        importance_std: per concept, the importance's standard deviation.
        title: the figure's title.
        cmap: the maps' colour map.
        alpha: twice the band's opacity at map value 1 (the image figures' ``alpha``).
        panel_size: a panel's width in inches.
        max_channels: at most this many channels drawn (chosen over all the shown series).

    Returns:
        The figure; row labels and panel titles (``#index``) are ``fig.texts``, rows in
        order, then the colour bar's.
    """
    index, maps = torch.as_tensor(to_numpy(index)).long(), torch.as_tensor(to_numpy(maps)).float()
    if maps.dim() == 4:  # the 1 x l grid the concept code keeps a series layer on
        maps = maps.flatten(-2)
    n, k = index.shape
    shown = {int(i): to_numpy(images[int(i)]).astype(float) for i in index.flatten().tolist()
             if int(i) >= 0 and int(i) in images}
    shown = {i: (x.reshape(1, -1) if x.ndim == 1 else x) for i, x in shown.items()}
    first = next(iter(shown.values()), np.zeros((1, 2)))
    same = len({x.shape for x in shown.values()}) <= 1
    keep, note = shown_channels(np.stack(list(shown.values())) if shown and same else first[None], max_channels)
    row_h = _height(len(keep), panel_size)
    width = panel_size * max(k, 1) + 2.2  # row labels left, the colour bar and its label right
    height = (row_h + 0.35) * n + (0.6 if title else 0.2)
    p = Panels((width, height), n, max(k, 1), None, left=1.3 / width, right=1 - 0.9 / width,
                bottom=0.1 / height, top=1 - (0.6 if title else 0.2) / height, wspace=0.05,
                hspace=0.35 / row_h)
    for r, j in enumerate(importance_order(importance)):
        label = (f"G{j}  n={int(channels[j])}\nstab {_num(float(stability[j]))}\n"
                 f"I {_num(float(importance[j]), 1)}±{_num(float(importance_std[j]), 1)}%")
        x0, y0, _, y1 = p.boxes[r, 0]
        p.text(x0 - 0.08 / width, (y0 + y1) / 2, label, fontsize=8, ha="right", va="center")
        for s in range(k):
            i = int(index[j, s])
            if i not in shown:
                continue  # an empty slot: no frame, no line
            x = shown[i]
            heat = minmax_normalise(resize_maps(maps[j, s], (x.shape[-1],)), 1).numpy() \
                if int(channels[j]) > 0 else None
            _draw(p, r, s, _strips(x[keep]), heat, f"#{i}", cmap, alpha, fontsize=7, pad=2)
    p.colour_bar((1 - 0.75 / width, 0.2, 0.12 / width, 0.6), "class concept map (min-max)", cmap)
    return p.done(title + note)


class ConceptDrawers(NamedTuple):
    """The figure functions for one kind of input, and how many trailing axes its maps span."""

    concept: Callable[..., Figure]
    sub_concept: Callable[..., Figure | None]
    class_gallery: Callable[..., Figure]
    map_dims: int


def concept_drawers(sample: Any) -> ConceptDrawers:
    """The figure functions for one display sample: series or images.

    The series figures for a C x L sample (a batch of N x C x L inputs), the image figures
    for a C x H x W one.

    Args:
        sample: one display sample (a tensor or an array; None, no sample shown: the image
            figures).

    Returns:
        Its :class:`ConceptDrawers`.
    """
    if np.ndim(sample) == 2:
        return ConceptDrawers(series_concept_figure, series_sub_concept_figure, series_class_concept_figure, 1)
    from clustercam.explain.plots.class_concepts import class_concept_figure
    from clustercam.explain.plots.concepts import concept_figure, sub_concept_figure

    return ConceptDrawers(concept_figure, sub_concept_figure, class_concept_figure, 2)
