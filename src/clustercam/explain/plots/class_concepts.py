"""The gallery of a class's concepts: one row per class concept, its top images with its map.

Rows are sorted by decreasing importance (empty concepts last); each row is titled with the
concept's id, channel count, stability and importance (mean +- std over the class's
images), and shows the images with the largest activation mass of the concept, the
concept's map (its channels summed, resized bilinearly, min-max normalised per image)
blended over each. Drawn the fast way of the concept figures
(:mod:`clustercam.explain.plots.panels`: no axes, each panel image resampled once), a
fraction of a grid of axes' cost. Pure matplotlib on tensors; no
trainer, no logger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from torch import Tensor

from clustercam.explain.concepts.image.importance import importance_order
from clustercam.explain.maps import minmax_normalise, resize_maps
from clustercam.explain.plots.common import CMAP, to_numpy
from clustercam.explain.plots.concepts import grayscale
from clustercam.explain.plots.panels import Panels, blend_tile, gray_bytes, levels


def _num(v: float, digits: int = 2) -> str:
    return "nan" if math.isnan(v) else f"{v:.{digits}f}"


def class_concept_figure(
    index: Tensor,
    maps: Tensor,
    images: Mapping[int, Tensor],
    channels: Sequence[int],
    stability: Sequence[float],
    importance: Sequence[float],
    importance_std: Sequence[float],
    title: str = "",
    cmap: str = CMAP,
    alpha: float = 0.6,
    panel_size: float = 1.8,
) -> Figure:
    """One row per class concept (by decreasing importance), its top images with its map.

    ``index``: n x k dataset indices of each concept's top images (``-1``: empty slot);
    ``maps``: n x k x h x w the concept's summed channels on those images (activation
    resolution); ``images``: dataset index -> C x H x W display image in [0, 1];
    ``channels``/``stability``/``importance``/``importance_std``: per concept. The row
    labels and the panel titles (``#index``) are ``fig.texts``, rows in order, then the
    colour bar's.
    """
    index, maps = index.long().cpu(), maps.float().cpu()
    n, k = index.shape
    rows = importance_order(importance)
    width = panel_size * max(k, 1) + 2.2  # row labels left, the colour bar and its label right
    height = (panel_size + 0.35) * n + (0.6 if title else 0.2)
    shown = [images[int(i)] for i in index.flatten().tolist() if int(i) >= 0 and int(i) in images]
    aspect = shown[0].shape[-2] / shown[0].shape[-1] if shown else 1.0
    p = Panels((width, height), n, max(k, 1), aspect, left=1.3 / width, right=1 - 0.9 / width,
                bottom=0.1 / height, top=1 - (0.6 if title else 0.2) / height, wspace=0.05, hspace=0.3)
    gray_of: dict[int, object] = {}
    level_of: dict[int, object] = {}
    heat_of: dict[tuple[int, ...], Tensor] = {}  # every map resized at once, per display size
    for size in {tuple(im.shape[-2:]) for im in shown}:
        heat_of[size] = minmax_normalise(resize_maps(maps, size), 2)
    for r, j in enumerate(rows):
        label = (f"G{j}  n={int(channels[j])}\nstab {_num(float(stability[j]))}\n"
                 f"I {_num(float(importance[j]), 1)}±{_num(float(importance_std[j]), 1)}%")
        x0, y0, _, y1 = p.boxes[r, 0]
        p.text(x0 - 0.08 / width, (y0 + y1) / 2, label, fontsize=8, ha="right", va="center")
        for s in range(k):
            i = int(index[j, s])
            if i < 0 or i not in images:
                continue  # an empty slot: no frame, no image
            if i not in gray_of:  # an image may top several concepts
                gray_of[i] = grayscale(images[i])
                level_of[i] = levels(gray_of[i])
            gray = gray_of[i]
            if int(channels[j]) > 0:
                heat = to_numpy(heat_of[tuple(gray.shape)][j, s])
                p.show(r, s, blend_tile(level_of[i], heat, cmap, alpha), f"#{i}", fontsize=7, pad=2)
            else:
                p.show(r, s, gray_bytes(gray), f"#{i}", fontsize=7, pad=2)
    p.colour_bar((1 - 0.75 / width, 0.2, 0.12 / width, 0.6), "class concept map (min-max)", cmap)
    return p.done(title)


def gallery_indices(index: Tensor) -> list[int]:
    """The distinct dataset indices a gallery shows (to load their display images once)."""
    return sorted({int(i) for i in to_numpy(index).ravel() if int(i) >= 0})
