"""Image figures: the plain image above (or beside) the same image with a map blended over it.

Paper Fig. 7, 8 and 11.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from clustercam.explain.plots.common import CMAP, colour_bar


def image_panel(ax, image: np.ndarray, heat: np.ndarray | None, alpha: float = 0.45):
    """An image in grey or colour with an optional map blended over it.

    The image is min-max scaled for display only; the map keeps its [0, 1] scale so
    colours mean the same in every panel.

    Args:
        ax: the matplotlib axes to draw on.
        image: C x H x W (C = 1 or 3).
        heat: H x W in [0, 1], or None for the plain image.
        alpha: the map's opacity.

    Returns:
        The map's ``AxesImage``, or None without a map.
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


def _image_grid(n: int, cols: int, with_inputs: bool, height: float) -> tuple[Figure, np.ndarray]:
    """Axes for n image panels, ``cols`` a row.

    With ``with_inputs`` each row of maps sits under a row of the plain images, so colour
    images stay readable under the map.
    """
    cols = max(1, min(n, cols))
    rows = int(np.ceil(n / cols))
    per = 2 if with_inputs else 1
    fig, axes = plt.subplots(rows * per, cols, figsize=(2.2 * cols + 0.8, height * rows * per + 0.7),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    return fig, axes


def members_images(
    x: np.ndarray, heatmaps: np.ndarray, title: str, labels: Sequence[int] | None, cols: int = 5
) -> Figure:
    """A cluster's members as columns: the plain image above the same image with its map.

    Args:
        x: n x C x H x W.
        heatmaps: n x H x W in [0, 1].
        title: the figure's title.
        labels: the members' class labels (n), for the panel titles.
        cols: members per row.

    Returns:
        The figure.
    """
    n = len(x)
    fig, axes = _image_grid(n, cols, with_inputs=True, height=1.9)
    cols = axes.shape[1]
    for i in range(n):
        r, c = divmod(i, cols)
        top, bottom = axes[2 * r, c], axes[2 * r + 1, c]
        for ax in (top, bottom):
            ax.axis("on")
        image_panel(top, x[i], None)
        image_panel(bottom, x[i], heatmaps[i])
        rank = f"#{i + 1} nearest"
        top.set_title(rank if labels is None else f"{rank}, label {int(labels[i])}", fontsize=8)
        if c == 0:
            top.set_ylabel("input", fontsize=8)
            bottom.set_ylabel("Grad-CeAM", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 0.97))
    colour_bar(fig)
    return fig


def sample_images(
    x: np.ndarray, heatmaps: np.ndarray, sizes: Sequence[int], assigned: int,
    raw_max: Sequence[float] | None, head: str, cols: int = 6,
) -> Figure:
    """One image under every cluster's map: the plain image first, then one panel per cluster.

    Args:
        x: C x H x W.
        heatmaps: K x H x W in [0, 1].
        sizes: the K clusters' numbers of members.
        assigned: the image's own cluster (its panel is framed).
        raw_max: per cluster, the unnormalised map's maximum (None: not shown).
        head: the figure's title.
        cols: panels per row.

    Returns:
        The figure.
    """
    k = len(heatmaps)
    fig, axes = _image_grid(k + 1, cols, with_inputs=False, height=2.4)
    panels = axes.ravel()
    panels[0].axis("on")
    image_panel(panels[0], x, None)
    panels[0].set_title(f"input\nassigned to cluster {assigned}", fontsize=8)
    for c in range(k):
        ax = panels[c + 1]
        ax.axis("on")
        image_panel(ax, x, heatmaps[c])
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
    colour_bar(fig)
    return fig
