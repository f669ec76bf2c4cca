"""Concept figures (paper Fig. 3-6): each concept blended over the grayscale image.

Concepts are drawn in decreasing order of importance, each titled with its id, its
number of channels and its importance ``I_l``, so the figure reads like the paper's.
Pure matplotlib + numpy on tensors; no trainer, no logger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from clustercam.explain.concepts.importance import importance_order
from clustercam.explain.plots.common import CMAP


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


def blend(image, heat, cmap: str = CMAP, alpha: float = 0.6) -> np.ndarray:
    """H x W x 3: the grayscale image with the coloured map over it, opacity ``alpha * heat``.

    Weak parts of a concept leave the image visible, strong parts take the map's colour.
    """
    gray = grayscale(image)
    h = np.clip(_np(heat), 0, 1)
    if h.shape != gray.shape:
        raise ValueError(f"map shape {h.shape} differs from the image's {gray.shape}")
    colour = plt.get_cmap(cmap)(h)[..., :3]
    a = (alpha * h)[..., None]
    return (1 - a) * gray[..., None] + a * colour


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.2f}%"


def concept_figure(
    image,
    maps,
    channels: Sequence[int],
    importance: Sequence[float],
    title: str = "",
    cmap: str = CMAP,
    alpha: float = 0.6,
    labels: Sequence[str] | None = None,
    panel_size: float = 2.4,
) -> Figure:
    """The image, then one panel per concept sorted by decreasing importance.

    ``maps``: L x H x W in [0, 1] at the image's size; ``channels``/``importance``: per
    concept; ``labels``: panel names (default ``C0 .. C{L-1}``). Empty concepts are drawn
    last, without a map.
    """
    maps = _np(maps)
    n = len(maps)
    names = list(labels) if labels is not None else [f"C{i}" for i in range(n)]
    order = importance_order(importance)
    width = panel_size * (n + 1) + 1.1
    fig, axes = plt.subplots(1, n + 1, figsize=(width, panel_size + 0.9))
    right = 1 - 1.1 / width
    fig.subplots_adjust(left=0.01, right=right, bottom=0.03, top=0.72 if title else 0.8, wspace=0.06)
    img = np.clip(_np(image), 0, 1)
    axes[0].imshow(img.transpose(1, 2, 0) if img.shape[0] == 3 else grayscale(img), cmap="gray")
    axes[0].set_title("input", fontsize=9)
    for ax, i in zip(axes[1:], order):
        if channels[i] > 0:
            ax.imshow(blend(image, maps[i], cmap, alpha))
        else:
            ax.imshow(grayscale(image), cmap="gray")
        ax.set_title(f"{names[i]}  n={int(channels[i])}\nI={_fmt(float(importance[i]))}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    cax = fig.add_axes((right + 0.1 / width, 0.1, 0.15 / width, 0.6))
    fig.colorbar(sm, cax=cax, label="concept map (min-max)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def sub_concept_figure(
    image,
    parent_maps,
    parent_channels: Sequence[int],
    parent_importance: Sequence[float],
    sub_maps,
    sub_channels,
    sub_importance,
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
    fig, axes = plt.subplots(len(rows), s + 1, figsize=(panel_size * (s + 1), height), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - (0.5 if title else 0.1) / height - 0.45 / height,
                        wspace=0.06, hspace=0.45 * (panel_size + 0.6) / panel_size / 2)
    pm, sm_ = _np(parent_maps), _np(sub_maps)
    for r, i in enumerate(rows):
        axes[r, 0].imshow(blend(image, pm[i], cmap, alpha))
        axes[r, 0].set_title(f"C{i}  n={int(parent_channels[i])}\nI={_fmt(float(parent_importance[i]))}",
                             fontsize=9)
        sub_order = [j for j in importance_order(sub_importance[i]) if sub_channels[i, j] > 0]
        for col in range(s):
            ax = axes[r, col + 1]
            if col < len(sub_order):
                j = sub_order[col]
                ax.imshow(blend(image, sm_[i, j], cmap, alpha))
                ax.set_title(f"C{i}{j}  n={int(sub_channels[i, j])}\nI={_fmt(float(sub_importance[i, j]))}",
                             fontsize=9)
            else:
                ax.axis("off")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
