"""Concept figures (paper Fig. 3-6): each concept blended over the grayscale image.

Concepts are drawn in decreasing order of importance, each titled with its id, its
number of channels and its importance ``I_l``, so the figure reads like the paper's.
Pure matplotlib + numpy on tensors; no trainer, no logger.

Drawn the fast way of :mod:`clustercam.explain.plots.panels` (no axes: one artist draws every
panel image, the frames and titles are figure-level artists) on its canvas
(:mod:`clustercam.explain.plots.canvas`: text by Pillow, PNGs at zlib level 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from clustercam.exceptions import UserError
from clustercam.explain.concepts.image.importance import importance_order
from clustercam.explain.deprecation import renamed_parameters
from clustercam.explain.plots.common import CMAP
from clustercam.explain.plots.panels import (
    Panels,
    blend_tile,
    colours,
    gray_bytes,
    levels,
    rgb_bytes,
)


def _np(a) -> np.ndarray:
    return a.detach().cpu().float().numpy() if hasattr(a, "detach") else np.asarray(a, dtype=float)


def grayscale(image) -> np.ndarray:
    """H x W luminance in [0, 1] of a 3 x H x W (or 1 x H x W) image in [0, 1]."""
    img = _np(image)
    if img.ndim == 3 and img.shape[0] == 3:
        gray = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    else:
        gray = img.reshape(img.shape[-2:]) if img.ndim == 3 else img
    return np.clip(gray, 0, 1)


def _blend_gray(gray: np.ndarray, heat, cmap: str, alpha: float) -> np.ndarray:
    h = np.clip(_np(heat), 0, 1)
    if h.shape[-2:] != gray.shape:
        raise UserError(f"map shape {h.shape[-2:]} differs from the image's {gray.shape}")
    a = (alpha * h)[..., None]
    return (1 - a) * gray[..., None] + a * colours(h, cmap)


def blend(image, heat, cmap: str = CMAP, alpha: float = 0.6) -> np.ndarray:
    """H x W x 3: the grayscale image with the coloured map over it, opacity ``alpha * heat``.

    Weak parts of a concept leave the image visible, strong parts take the map's colour.
    ``heat`` may hold several maps (... x H x W): one blend each.
    """
    return _blend_gray(grayscale(image), heat, cmap, alpha)


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.2f}%"


@renamed_parameters(labels="panel_names")
def concept_figure(
    image,
    maps,
    channels: Sequence[int],
    importance: Sequence[float],
    *,
    title: str = "",
    cmap: str = CMAP,
    alpha: float = 0.6,
    panel_names: Sequence[str] | None = None,
    panel_size: float = 2.4,
) -> Figure:
    """The image, then one panel per concept sorted by decreasing importance.

    ``maps``: L x H x W in [0, 1] at the image's size; ``channels``/``importance``: per
    concept; ``panel_names``: one per concept (default ``C0 .. C{L-1}``). Empty concepts are drawn
    last, without a map. The panel titles are ``fig.texts``, in panel order (then the colour
    bar's).
    """
    maps = _np(maps)
    n = len(maps)
    names = list(panel_names) if panel_names is not None else [f"C{i}" for i in range(n)]
    order = importance_order(importance)
    width = panel_size * (n + 1) + 1.1
    right = 1 - 1.1 / width
    img = np.clip(_np(image), 0, 1)
    gray = grayscale(img)
    p = Panels((width, panel_size + 0.9), 1, n + 1, gray.shape[0] / gray.shape[1], left=0.01,
                right=right, bottom=0.03, top=0.72 if title else 0.8, wspace=0.06)
    p.show(0, 0, rgb_bytes(img.transpose(1, 2, 0)) if img.shape[0] == 3 else gray_bytes(gray), "input")
    gray_levels = levels(gray)  # one grey image under every map
    for col, i in enumerate(order, start=1):
        label = f"{names[i]}  n={int(channels[i])}\nI={_fmt(float(importance[i]))}"
        if channels[i] > 0:
            p.show(0, col, blend_tile(gray_levels, maps[i], cmap, alpha), label)
        else:
            p.show(0, col, gray_bytes(gray), label)
    p.colour_bar((right + 0.1 / width, 0.1, 0.15 / width, 0.6), "concept map (min-max)", cmap)
    return p.done(title)


def sub_concept_figure(
    image,
    parent_maps,
    parent_channels: Sequence[int],
    parent_importance: Sequence[float],
    sub_maps,
    sub_channels,
    sub_importance,
    *,
    title: str = "",
    cmap: str = CMAP,
    alpha: float = 0.6,
    panel_size: float = 2.2,
) -> Figure | None:
    """One row per split concept (by decreasing importance): the parent, then its sub-concepts.

    ``sub_maps``: L x S x H x W normalised with the parent's min and max (so a weak
    sub-concept looks weak); ``sub_channels``/``sub_importance``: L x S. Returns None when
    no concept was split.
    """
    sub_channels = _np(sub_channels)
    sub_importance = _np(sub_importance)
    rows = [i for i in importance_order(parent_importance) if sub_channels[i].sum() > 0]
    if not rows:
        return None
    s = sub_channels.shape[1]
    height = (panel_size + 0.6) * len(rows) + (0.5 if title else 0.1)
    gray = grayscale(image)
    p = Panels((panel_size * (s + 1), height), len(rows), s + 1, gray.shape[0] / gray.shape[1],
                left=0.01, right=0.99, bottom=0.01,
                top=1 - (0.5 if title else 0.1) / height - 0.45 / height, wspace=0.06,
                hspace=0.45 * (panel_size + 0.6) / panel_size / 2)
    parents, subs, gray_levels = _np(parent_maps)[rows], _np(sub_maps)[rows], levels(gray)
    for r, i in enumerate(rows):
        p.show(r, 0, blend_tile(gray_levels, parents[r], cmap, alpha), f"C{i}  n={int(parent_channels[i])}\nI={_fmt(float(parent_importance[i]))}")
        sub_order = [j for j in importance_order(sub_importance[i]) if sub_channels[i, j] > 0]
        for col, j in enumerate(sub_order, start=1):
            p.show(r, col, blend_tile(gray_levels, subs[r, j], cmap, alpha),
                   f"C{i}{j}  n={int(sub_channels[i, j])}\nI={_fmt(float(sub_importance[i, j]))}")
    return p.done(title)
