"""The papers' figure layouts, from arrays.

A grid of inputs under maps (Grad-CeAM Fig. 7-11), box plots of the clustering scores per
class (concepts Fig. 2), and a tiling of concept figures already drawn (concepts Fig. 5-6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from clustercam.explain.plots.common import colour_bar, to_numpy
from clustercam.explain.plots.images import image_panel
from clustercam.explain.plots.series import coloured_line


def _series_panel(ax, x: np.ndarray, heat: np.ndarray) -> None:
    norm = plt.Normalize(0, 1)
    for ch in range(x.shape[0]):
        coloured_line(ax, x[ch], heat, norm)
    ax.tick_params(labelsize=7)


def map_grid(
    inputs: Sequence[Sequence[np.ndarray | None]],
    maps: Sequence[Sequence[np.ndarray | None]],
    title: str,
    row_titles: Sequence[str] = (),
    col_titles: Sequence[str] = (),
    panel_titles: Sequence[Sequence[str]] | None = None,
) -> Figure:
    """Rows x columns of inputs under their maps (Grad-CeAM Fig. 7-11), one shared colour bar.

    Args:
        inputs: ``inputs[r][c]``, a C x L series or a C x H x W image; None leaves the panel
            empty.
        maps: ``maps[r][c]``, L or H x W in [0, 1].
        title: the figure's title.
        row_titles: one per row, on the first column.
        col_titles: one per column, on the first row.
        panel_titles: one per panel (instead of ``col_titles``).

    Returns:
        The figure.
    """
    rows, cols = len(inputs), max(len(r) for r in inputs)
    is_image = any(x is not None and to_numpy(x).ndim == 3 for r in inputs for x in r)
    w, h = (2.0, 2.1) if is_image else (3.6, 1.7)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols + 1.4, h * rows + 0.9), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            x = inputs[r][c] if c < len(inputs[r]) else None
            if x is None:
                ax.axis("off")
                continue
            x, heat = to_numpy(x), to_numpy(maps[r][c])
            if x.ndim == 3:
                image_panel(ax, x, heat)
            else:
                _series_panel(ax, x, heat)
            if panel_titles is not None:
                ax.set_title(panel_titles[r][c], fontsize=8)
            elif r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=9)
            if c == 0 and r < len(row_titles):
                ax.set_ylabel(row_titles[r], fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 0.96))
    colour_bar(fig)
    return fig


METRIC_NAMES = {"silhouette": "silhouette (higher better)",
                "calinski_harabasz": "Calinski-Harabasz (higher better)",
                "davies_bouldin": "Davies-Bouldin (lower better)"}


def metric_boxplots(
    data: Mapping[tuple[str, str], Mapping[str, Mapping[str, Sequence[float]]]],
    methods: Sequence[str], metrics: Sequence[str], title: str = "",
) -> Figure:
    """Concepts paper Fig. 2: box plots of the clustering scores per class label.

    One row per method, one column per metric; in each panel, per class label, one box per
    algorithm.

    Args:
        data: ``data[(method, metric)][class][algorithm]``, the per-image values (NaNs
            skipped).
        methods: the rows (e.g. ``cgap``, ``cpha``).
        metrics: the columns (e.g. ``silhouette``, ``calinski_harabasz``, ``davies_bouldin``).
        title: the figure's title ("": a default).

    Returns:
        The figure.
    """
    fig, axes = plt.subplots(len(methods), len(metrics), figsize=(5.2 * len(metrics), 3.4 * len(methods)),
                             squeeze=False)
    colours = plt.get_cmap("tab10").colors
    handles = {}
    for r, method in enumerate(methods):
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            per_class = data.get((method, metric), {})
            classes = list(per_class)
            algos = sorted({a for v in per_class.values() for a in v})
            width = 0.8 / max(len(algos), 1)
            for j, algo in enumerate(algos):
                vals = [np.asarray([v for v in per_class[k].get(algo, []) if np.isfinite(v)]) for k in classes]
                pos = np.arange(len(classes)) + (j - (len(algos) - 1) / 2) * width
                keep = [i for i, v in enumerate(vals) if len(v)]
                if not keep:
                    continue
                box = ax.boxplot([vals[i] for i in keep], positions=pos[keep], widths=width * 0.9,
                                 patch_artist=True, showfliers=False)
                for patch in box["boxes"]:
                    patch.set_facecolor(colours[j % len(colours)])
                handles[algo] = box["boxes"][0]
            ax.set_xticks(np.arange(len(classes)))
            ax.set_xticklabels([str(k) for k in classes], rotation=45, ha="right", fontsize=7)
            ax.set_title(f"{method.upper()}: {METRIC_NAMES.get(metric, metric)}", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize=8, title="algorithm")
    fig.suptitle(title or "Clustering scores per class label", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.92, 0.96))
    return fig


def first_panel_row(image: np.ndarray, pad: int = 4) -> np.ndarray:
    """The top of a drawn panel figure down to the end of its first row of panels.

    A row of panels is where most of a pixel row is not white (titles and margins are mostly
    white); a sub-concept figure's rows go by decreasing importance, so its first row is the
    most important concept split into its sub-concepts (concepts paper Fig. 5).

    Args:
        image: H x W x 3 (or 4) pixels in [0, 1], as ``plt.imread`` reads a PNG.
        pad: pixel rows kept below the first row of panels.

    Returns:
        The top rows of ``image`` (all of it when nothing is inked).

    Example:
        >>> import numpy as np
        >>> from clustercam.explain.plots.papers import first_panel_row
        >>> image = np.ones((20, 10, 3))
        >>> image[2:6], image[10:15] = 0.0, 0.0  # two rows of panels
        >>> first_panel_row(image, pad=1).shape
        (7, 10, 3)
    """
    inked = (np.asarray(image)[..., :3] < 0.98).any(-1).mean(1) > 0.5
    rows = np.flatnonzero(inked)
    if rows.size == 0:
        return image
    after = np.flatnonzero(~inked[rows[0]:])
    end = rows[0] + (after[0] if after.size else inked.size - rows[0])
    return image[:min(end + pad, len(image))]


def tile_figures(paths: Sequence[Sequence[str | Path | None]], title: str,
                 row_titles: Sequence[str] = (), first_rows: bool = False) -> Figure:
    """Concepts paper Fig. 5-6: figures already drawn (PNG files) tiled rows x columns.

    Args:
        paths: ``paths[r][c]``, a PNG file; None leaves the tile empty.
        title: the figure's title.
        row_titles: one per row, above its first tile.
        first_rows: only the top row of panels of each figure (:func:`first_panel_row`).

    Returns:
        The figure.
    """
    rows, cols = len(paths), max(len(r) for r in paths)
    crop = first_panel_row if first_rows else (lambda im: im)
    images = [[crop(plt.imread(str(p))) if p is not None else None for p in row] for row in paths]
    heights = [max((im.shape[0] for im in row if im is not None), default=1) for row in images]
    widths = [max((images[r][c].shape[1] for r in range(rows) if c < len(images[r]) and images[r][c] is not None),
                  default=1) for c in range(cols)]
    scale = 1 / 100
    fig, axes = plt.subplots(rows, cols, figsize=(sum(widths) * scale + 0.5, sum(heights) * scale + 0.6),
                             squeeze=False, gridspec_kw={"height_ratios": heights, "width_ratios": widths})
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            im = images[r][c] if c < len(images[r]) else None
            if im is not None:
                ax.imshow(im)
            if c == 0 and r < len(row_titles):
                ax.set_title(row_titles[r], fontsize=9, loc="left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig
