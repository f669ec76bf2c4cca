"""The gallery of a class's concepts: one row per class concept, its top images with its map.

Rows are sorted by decreasing importance (empty concepts last); each row is titled with the
concept's id, channel count, stability and importance (mean +- std over the class's
images), and shows the images with the largest activation mass of the concept, the
concept's map (its channels summed, resized bilinearly, min-max normalised per image)
blended over each. Pure matplotlib on tensors; no trainer, no logger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from clustercam.explain.concepts.image.importance import importance_order
from clustercam.explain.maps import minmax_normalise, resize_maps
from clustercam.explain.plots.common import CMAP, colour_bar, to_numpy
from clustercam.explain.plots.concepts import blend, grayscale


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
    ``channels``/``stability``/``importance``/``importance_std``: per concept.
    """
    index, maps = index.long().cpu(), maps.float().cpu()
    n, k = index.shape
    rows = importance_order(importance)
    width = panel_size * max(k, 1) + 1.9
    height = (panel_size + 0.35) * n + (0.6 if title else 0.2)
    fig, axes = plt.subplots(n, max(k, 1), figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=1.3 / width, right=1 - 0.6 / width, bottom=0.1 / height,
                        top=1 - (0.6 if title else 0.2) / height, wspace=0.05, hspace=0.3)
    for r, j in enumerate(rows):
        ax_row = axes[r]
        label = (f"G{j}  n={int(channels[j])}\nstab {_num(float(stability[j]))}\n"
                 f"I {_num(float(importance[j]), 1)}±{_num(float(importance_std[j]), 1)}%")
        ax_row[0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
        for s in range(max(k, 1)):
            ax = ax_row[s]
            ax.set_xticks([])
            ax.set_yticks([])
            i = int(index[j, s]) if k else -1
            if i < 0 or i not in images:
                for side in ax.spines.values():
                    side.set_visible(False)
                continue
            image = images[i]
            if int(channels[j]) > 0:
                heat = minmax_normalise(resize_maps(maps[j, s], tuple(image.shape[-2:])), 2)
                ax.imshow(blend(image, heat, cmap, alpha))
            else:
                ax.imshow(grayscale(image), cmap="gray")
            ax.set_title(f"#{i}", fontsize=7, pad=2)
    colour_bar(fig, label="class concept map (min-max)", cmap=cmap,
               rect=(1 - 0.45 / width, 0.2, 0.12 / width, 0.6))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def gallery_indices(index: Tensor) -> list[int]:
    """The distinct dataset indices a gallery shows (to load their display images once)."""
    return sorted({int(i) for i in to_numpy(index).ravel() if int(i) >= 0})
