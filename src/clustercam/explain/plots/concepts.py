"""Concept figures (paper Fig. 3-6): each concept blended over the grayscale image.

Concepts are drawn in decreasing order of importance, each titled with its id, its
number of channels and its importance ``I_l``, so the figure reads like the paper's.
Pure matplotlib + numpy on tensors; no trainer, no logger.

A figure is drawn the fast way: ONE full-figure axes holds the panels' frames (rectangles)
and titles (texts at the axes-title offset), and one artist draws every panel image at the
place one axes per panel would give it, each resampled once by PIL to its box in pixels
(Hamming, close to matplotlib's Hanning antialiasing) instead of one matplotlib image each.
Building and saving costs a fraction of a grid of axes (matplotlib spends ~20 ms creating
each axes, ~4 ms drawing each image). PNGs of these figures are RGB, "Up"-filtered, at zlib
level 1 (same pixels, several times faster to encode than Agg's; :func:`encode_png`).
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.patches import Rectangle
from matplotlib.transforms import Affine2D, offset_copy

from clustercam.exceptions import UserError
from clustercam.explain.concepts.image.importance import importance_order
from clustercam.explain.deprecation import renamed_parameters
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


def _table(cmap: Any, dtype: Any) -> np.ndarray:
    cm = plt.get_cmap(cmap)
    return cm(np.arange(cm.N))[:, :3].astype(dtype)


_named_table = functools.lru_cache(maxsize=16)(_table)  # a registered map's table, once a figure run


def _colours(heat: np.ndarray, cmap: str, dtype: Any = np.float64) -> np.ndarray:
    """``plt.get_cmap(cmap)(heat)[..., :3]`` for maps in [0, 1], by one lookup in the
    colour map's table (the same index arithmetic as ``Colormap.__call__``)."""
    lut = _named_table(cmap, np.dtype(dtype)) if isinstance(cmap, str) else _table(cmap, dtype)
    n = len(lut)
    idx = heat * n
    idx[idx == n] = n - 1
    return lut.take(idx.astype(np.intp), axis=0, mode="clip")


def _blend_gray(gray: np.ndarray, heat, cmap: str, alpha: float) -> np.ndarray:
    h = np.clip(_np(heat), 0, 1)
    if h.shape[-2:] != gray.shape:
        raise UserError(f"map shape {h.shape[-2:]} differs from the image's {gray.shape}")
    a = (alpha * h)[..., None]
    return (1 - a) * gray[..., None] + a * _colours(h, cmap)


def _blend_bytes(gray: np.ndarray, heat, cmap: str, alpha: float) -> np.ndarray:
    """... x H x W x 3 uint8 blends of many maps at once: :func:`blend` in float32, in place,
    then truncated to bytes as matplotlib turns float colours into bytes."""
    h = np.clip(_np(heat), 0, 1).astype(np.float32, copy=False)
    if h.shape[-2:] != gray.shape:
        raise UserError(f"map shape {h.shape[-2:]} differs from the image's {gray.shape}")
    g = gray.astype(np.float32)[..., None]
    out = _colours(h, cmap, np.float32)
    out -= g
    out *= (alpha * h)[..., None]
    out += g
    out *= 255
    return out.astype(np.uint8)


def blend(image, heat, cmap: str = CMAP, alpha: float = 0.6) -> np.ndarray:
    """H x W x 3: the grayscale image with the coloured map over it, opacity ``alpha * heat``.

    Weak parts of a concept leave the image visible, strong parts take the map's colour.
    ``heat`` may hold several maps (... x H x W): one blend each.
    """
    return _blend_gray(grayscale(image), heat, cmap, alpha)


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.2f}%"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(rgb: np.ndarray, dpi: float, texts: dict[str, str]) -> bytes:
    """An H x W x 3 uint8 image as a PNG: every row "Up"-filtered (minus the row above), zlib
    level 1, the ``dpi`` (pHYs, rounded to pixels a metre as Pillow writes it) and Latin-1
    ``texts`` (tEXt; the canvas passes ASCII only). Decodes to the same pixels and ``info`` as Pillow's PNG of the image;
    about half its time, as Pillow picks a filter per row by trying all five."""
    h, w, _ = rgb.shape
    rows = np.empty((h, 1 + 3 * w), np.uint8)
    rows[:, 0] = 2  # filter type 2, "Up"; the first row's "above" is zeros: itself
    filtered = rows[:, 1:].reshape(h, w, 3)
    filtered[0] = rgb[0]
    np.subtract(rgb[1:], rgb[:-1], out=filtered[1:])  # uint8 wraps modulo 256, as PNG's filter
    ppm = int(dpi / 0.0254 + 0.5)
    return b"".join([b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
                     _png_chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1)),
                     *(_png_chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1"))
                       for k, v in texts.items()),
                     _png_chunk(b"IDAT", zlib.compress(rows, 1)), _png_chunk(b"IEND", b"")])


class PanelCanvas(FigureCanvasAgg):
    """Agg canvas whose PNGs of opaque figures are RGB, "Up"-filtered, zlib level 1
    (:func:`encode_png`): the same pixels as Agg's RGBA PNGs at level 6 (the alpha channel
    is all 255), several times faster to encode, files a few % larger. Transparent
    figures, metadata that is not ASCII, or explicit ``pil_kwargs`` take Agg's own path
    (at level 1 unless told otherwise)."""

    def png_image(self, metadata: dict | None = None) -> Callable[[Any], None] | None:
        """Draw the figure; return ``write(file)``, which encodes its PNG and writes it to a
        binary file (or a path), or None for a transparent figure or metadata that is not
        ASCII (Agg's own path). Lets a writer encode in another thread
        (:class:`clustercam.outputs.FigureWriter`): zlib releases the GIL."""
        FigureCanvasAgg.draw(self)
        rgba = np.asarray(self.buffer_rgba())  # the renderer's buffer, kept alive by the view
        texts = {k: v for k, v in {"Software": f"Matplotlib version{mpl.__version__}, https://matplotlib.org/",
                                   **(metadata or {})}.items() if v is not None}
        if rgba[..., 3].min() < 255 or not all(f"{k}{v}".isascii() for k, v in texts.items()):
            return None
        dpi = float(self.figure.dpi)

        def write(file: Any) -> None:
            data = encode_png(rgba[..., :3], dpi, texts)
            if hasattr(file, "write"):
                file.write(data)
            else:
                with open(file, "wb") as fh:
                    fh.write(data)

        return write

    def print_png(self, filename_or_obj: Any, *, metadata: dict | None = None,
                  pil_kwargs: dict | None = None, **_: Any) -> None:
        # ``_``: dpi, facecolor... which print_figure has already applied to the figure
        write = None if pil_kwargs else self.png_image(metadata)
        if write is None:
            super().print_png(filename_or_obj, metadata=metadata,
                              pil_kwargs={"compress_level": 1, **(pil_kwargs or {})})
            return
        write(filename_or_obj)


def _gray_bytes(gray: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 of a grey panel as ``imshow(gray, cmap="gray")`` colours it: scaled to
    its own min and max, then the colour map's 256 levels."""
    lo, hi = float(gray.min()), float(gray.max())
    g = (gray - lo) / (hi - lo) if hi > lo else np.zeros_like(gray)
    level = np.clip(g * 256, 0, 255).astype(np.uint8)  # the "gray" map's level i is the byte i
    return np.repeat(level[..., None], 3, axis=-1)


def _rgb_bytes(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 of a float RGB image in [0, 1], as matplotlib turns it into bytes."""
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


class _PanelImages(Artist):
    """Every panel image of a figure, drawn by one artist: each panel is resampled once to
    its box at the renderer's resolution (raster backends) or placed at its own resolution
    with a scaling transform (vector backends, as ``imshow`` does there)."""

    zorder = 1  # in the axes: below the frames (2.5) and the titles (3)

    def __init__(self) -> None:
        super().__init__()
        self.panels: list[tuple[np.ndarray, np.ndarray]] = []  # (box in figure fraction, uint8 RGB)

    def draw(self, renderer: Any) -> None:
        from PIL import Image

        if not self.get_visible() or not self.panels:
            return
        width, height = renderer.get_canvas_width_height()
        gc = renderer.new_gc()
        for (x0, y0, x1, y1), rgb in self.panels:
            left, right = round(x0 * width), round(x1 * width)
            bottom, top = round(y0 * height), round(y1 * height)
            if right <= left or top <= bottom:
                continue
            tile = Image.fromarray(rgb)
            if renderer.option_scale_image():  # vector: the panel at its own resolution
                scale = Affine2D().scale((right - left) / rgb.shape[1], (top - bottom) / rgb.shape[0])
                renderer.draw_image(gc, left, bottom, np.asarray(tile.convert("RGBA"))[::-1], scale)
            else:
                tile = tile.resize((right - left, top - bottom), Image.Resampling.HAMMING)
                renderer.draw_image(gc, left, bottom, np.asarray(tile.convert("RGBA"))[::-1])
        gc.restore()


class _Panels:
    """Image panels laid out as ``plt.subplots`` + ``subplots_adjust`` would, drawn in one
    full-figure axes: ``show`` puts an image where panel (r, c)'s axes would show it."""

    def __init__(self, figsize: tuple[float, float], rows: int, cols: int, aspect: float | None,
                 **adjust: float) -> None:
        self.fig = Figure(figsize=figsize)
        PanelCanvas(self.fig)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_axis_off()
        self.images = _PanelImages()
        self.ax.add_artist(self.images)
        bottoms, tops, lefts, rights = GridSpec(rows, cols, figure=self.fig, **adjust) \
            .get_grid_positions(self.fig)
        fw, fh = figsize
        fig_aspect = fh / fw
        self.boxes = np.zeros((rows, cols, 4))
        for r in range(rows):
            for c in range(cols):  # the aspect-equal shrink and centring of Axes.apply_aspect
                w, h = rights[c] - lefts[c], tops[r] - bottoms[r]
                if aspect is None:  # the whole cell (the series panels)
                    self.boxes[r, c] = (lefts[c], bottoms[r], rights[c], tops[r])
                    continue
                hh = w * aspect / fig_aspect
                ww = w if hh <= h else h * fig_aspect / aspect
                hh = min(hh, h)
                x0, y0 = lefts[c] + (w - ww) / 2, bottoms[r] + (h - hh) / 2
                self.boxes[r, c] = (x0, y0, x0 + ww, y0 + hh)
        self._title = offset_copy(self.ax.transData, fig=self.fig, y=mpl.rcParams["axes.titlepad"],
                                  units="points")

    def show(self, r: int, c: int, rgb: np.ndarray, title: str, fontsize: float = 9,
             pad: float | None = None) -> None:
        """Panel (r, c): an H x W x 3 uint8 image, its frame and its title (``pad``: points
        above the panel, default the axes-title pad)."""
        self.images.panels.append((self.boxes[r, c], rgb))
        self.frame(r, c, title, fontsize, pad)

    def frame(self, r: int, c: int, title: str, fontsize: float = 9, pad: float | None = None) -> None:
        """Panel (r, c)'s frame and title, without an image (see :meth:`show`)."""
        x0, y0, x1, y1 = self.boxes[r, c]
        # add_artist, not add_patch: the limits are fixed by done(), and add_patch's update of
        # the data limits cost more than the rest of a panel (same pixels)
        self.ax.add_artist(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, zorder=2.5,
                                     linewidth=mpl.rcParams["axes.linewidth"],
                                     edgecolor=mpl.rcParams["axes.edgecolor"]))
        offset = self._title if pad is None else offset_copy(self.ax.transData, fig=self.fig, y=pad,
                                                              units="points")
        self.ax.text((x0 + x1) / 2, y1, title, fontsize=fontsize, ha="center", va="baseline",
                     transform=offset)

    def done(self, title: str) -> Figure:
        self.ax.set_xlim(0, 1)
        self.ax.set_ylim(0, 1)
        if title:
            self.fig.suptitle(title, fontsize=10)
        return self.fig


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
    last, without a map. The panel titles are the texts of ``fig.axes[0]``, in panel order.
    """
    maps = _np(maps)
    n = len(maps)
    names = list(panel_names) if panel_names is not None else [f"C{i}" for i in range(n)]
    order = importance_order(importance)
    width = panel_size * (n + 1) + 1.1
    right = 1 - 1.1 / width
    img = np.clip(_np(image), 0, 1)
    gray = grayscale(img)
    p = _Panels((width, panel_size + 0.9), 1, n + 1, gray.shape[0] / gray.shape[1], left=0.01,
                right=right, bottom=0.03, top=0.72 if title else 0.8, wspace=0.06)
    p.show(0, 0, _rgb_bytes(img.transpose(1, 2, 0)) if img.shape[0] == 3 else _gray_bytes(gray), "input")
    blends = _blend_bytes(gray, maps, cmap, alpha)
    for col, i in enumerate(order, start=1):
        label = f"{names[i]}  n={int(channels[i])}\nI={_fmt(float(importance[i]))}"
        if channels[i] > 0:
            p.show(0, col, blends[i], label)
        else:
            p.show(0, col, _gray_bytes(gray), label)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    cax = p.fig.add_axes((right + 0.1 / width, 0.1, 0.15 / width, 0.6))
    p.fig.colorbar(sm, cax=cax, label="concept map (min-max)")
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
    p = _Panels((panel_size * (s + 1), height), len(rows), s + 1, gray.shape[0] / gray.shape[1],
                left=0.01, right=0.99, bottom=0.01,
                top=1 - (0.5 if title else 0.1) / height - 0.45 / height, wspace=0.06,
                hspace=0.45 * (panel_size + 0.6) / panel_size / 2)
    parents = _blend_bytes(gray, _np(parent_maps)[rows], cmap, alpha)
    subs = _blend_bytes(gray, _np(sub_maps)[rows], cmap, alpha)
    for r, i in enumerate(rows):
        p.show(r, 0, parents[r], f"C{i}  n={int(parent_channels[i])}\nI={_fmt(float(parent_importance[i]))}")
        sub_order = [j for j in importance_order(sub_importance[i]) if sub_channels[i, j] > 0]
        for col, j in enumerate(sub_order, start=1):
            p.show(r, col, subs[r, j],
                   f"C{i}{j}  n={int(sub_channels[i, j])}\nI={_fmt(float(sub_importance[i, j]))}")
    return p.done(title)
