"""The panel figures' layout and pixels, without axes.

Panels are laid out as ``plt.subplots`` would lay them out, and drawn as figure-level
artists on one :class:`~clustercam.explain.plots.canvas.PanelCanvas`.

A panel figure has no axes at all: one artist (:class:`PanelImages`) draws every panel image
at the place an axes per panel would give it, each resampled once by Pillow to its box in
pixels (Hamming, close to matplotlib's Hanning antialiasing); one line draws the frames
(``Panels.frames``, the figure's first ``lines``, gid ``frames``: 5 points a panel, NaN
between panels), the titles are the figure's ``texts`` (in panel order), other artists (a series panel's
lines) its ``artists``; the colour bar (:meth:`Panels.colour_bar`) is a gradient panel with
its frame, ticks and labels. Matplotlib spends ~15-20 ms creating an axes (its axis, ticks,
grid) and clips every artist added to one to its patch (~1 ms a text): a figure of 30
panels costs a fraction of a grid of axes, or of one full-figure axes holding them.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.transforms import Affine2D, offset_copy

from clustercam.exceptions import UserError
from clustercam.explain.plots.canvas import PanelCanvas
from clustercam.explain.plots.common import to_numpy


def _table(cmap: Any, dtype: Any) -> np.ndarray:
    cm = plt.get_cmap(cmap)
    return cm(np.arange(cm.N))[:, :3].astype(dtype)


_named_table = functools.lru_cache(maxsize=16)(_table)  # a registered map's table, once a figure run


def colours(heat: np.ndarray, cmap: Any, dtype: Any = np.float64) -> np.ndarray:
    """``plt.get_cmap(cmap)(heat)[..., :3]`` for maps in [0, 1], by one table lookup.

    The same index arithmetic as ``Colormap.__call__``.
    """
    lut = _named_table(cmap, np.dtype(dtype)) if isinstance(cmap, str) else _table(cmap, dtype)
    n = len(lut)
    idx = heat * n
    idx[idx == n] = n - 1
    return lut.take(idx.astype(np.intp), axis=0, mode="clip")


def _blend_table(cmap: Any, alpha: float) -> np.ndarray:
    """65536 x 4 uint8 RGBA: grey level g under map level m (0..255 each) at row ``m * 256 + g``.

    The colour map's colour at opacity ``alpha * m / 255``, truncated to bytes; opaque.
    """
    level = np.arange(256, dtype=np.float64) / 255
    colour = colours(level, cmap)  # 256 x 3
    grey = level[None, :, None]
    out = np.full((256, 256, 4), 255, np.uint8)
    out[..., :3] = (grey + (alpha * level)[:, None, None] * (colour[:, None, :] - grey)) * 255 + 1e-9
    return out.reshape(-1, 4)


_named_blend_table = functools.lru_cache(maxsize=16)(_blend_table)


def levels(x: Any) -> np.ndarray:
    """Values in [0, 1] (clipped) as 256 uint8 levels, rounded."""
    out = np.clip(np.asarray(to_numpy(x), dtype=np.float32), 0, 1)
    out *= 255
    out += 0.5
    return out.astype(np.uint8)


class Blend(NamedTuple):
    """A panel image: the map ``heat`` over the grey image ``gray`` (H x W levels each).

    Blended by ``table`` (one lookup a pixel). Kept as levels until it is drawn, so a raster
    panel resizes two one-byte images (the grey one once per figure and size) and blends
    at its box's size.
    """

    gray: np.ndarray
    heat: np.ndarray
    table: np.ndarray

    def pixels(self) -> np.ndarray:
        """H x W x 3 uint8 at the image's own resolution."""
        index = self.heat.astype(np.uint16) << 8
        index |= self.gray
        return self.table.take(index, axis=0)[..., :3]


def blend_tile(gray: np.ndarray, heat: Any, cmap: Any, alpha: float) -> Blend:
    """The :class:`Blend` of a map in [0, 1] over a grey image in [0, 1] (or its levels).

    The colour map's colour at opacity ``alpha * heat``, within 3 levels of the float blend
    (:func:`~clustercam.explain.plots.concepts.blend`).

    Raises:
        UserError: the map's size differs from the image's.
    """
    gray = gray if gray.dtype == np.uint8 else levels(gray)
    heat = levels(heat)
    if heat.shape != gray.shape:
        raise UserError(f"map shape {heat.shape} differs from the image's {gray.shape}")
    table = _named_blend_table(cmap, float(alpha)) if isinstance(cmap, str) else _blend_table(cmap, alpha)
    return Blend(gray, heat, table)


def gray_bytes(gray: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 of a grey panel as ``imshow(gray, cmap="gray")`` colours it.

    Scaled to its own min and max, then the colour map's 256 levels.
    """
    lo, hi = float(gray.min()), float(gray.max())
    g = (gray - lo) / (hi - lo) if hi > lo else np.zeros_like(gray)
    level = np.clip(g * 256, 0, 255).astype(np.uint8)  # the "gray" map's level i is the byte i
    return np.repeat(level[..., None], 3, axis=-1)


def rgb_bytes(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 of a float RGB image in [0, 1], as matplotlib turns it into bytes."""
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


class PanelImages(Artist):
    """Every panel image of a figure, drawn by one artist.

    Each panel is resampled once to its box at the renderer's resolution (raster backends)
    or placed at its own resolution with a scaling transform (vector backends, as ``imshow``
    does there).
    """

    zorder = 1  # below the series' lines (2), the frames (2.5) and the titles (3)

    def __init__(self) -> None:
        """No panels yet: append (box in figure fraction, RGB bytes or a Blend) to ``panels``."""
        super().__init__()
        # (box in figure fraction, H x W x 3 uint8 RGB or a Blend)
        self.panels: list[tuple[np.ndarray, np.ndarray | Blend]] = []

    def draw(self, renderer: Any) -> None:
        """Draw every panel in its box."""
        from PIL import Image

        if not self.get_visible() or not self.panels:
            return
        width, height = renderer.get_canvas_width_height()
        gc = renderer.new_gc()
        resized: dict[tuple[int, int, int], np.ndarray] = {}  # a grey image shared by panels, once a size
        for (x0, y0, x1, y1), tile in self.panels:
            left, right = round(x0 * width), round(x1 * width)
            bottom, top = round(y0 * height), round(y1 * height)
            size = (right - left, top - bottom)
            if size[0] <= 0 or size[1] <= 0:
                continue
            if renderer.option_scale_image():  # vector: the panel at its own resolution
                rgb = tile.pixels() if isinstance(tile, Blend) else tile
                scale = Affine2D().scale(size[0] / rgb.shape[1], size[1] / rgb.shape[0])
                renderer.draw_image(gc, left, bottom, np.asarray(Image.fromarray(rgb).convert("RGBA"))[::-1], scale)
            elif isinstance(tile, Blend):  # the two levels resized, then blended at the box's size
                key = (id(tile.gray), *size)
                if key not in resized:
                    resized[key] = np.asarray(Image.fromarray(np.ascontiguousarray(tile.gray))
                                              .resize(size, Image.Resampling.HAMMING), np.uint16)
                index = np.asarray(Image.fromarray(tile.heat).resize(size, Image.Resampling.HAMMING), np.uint16)
                index <<= 8
                index |= resized[key]
                renderer.draw_image(gc, left, bottom, tile.table.take(index[::-1], axis=0))
            else:
                tile = Image.fromarray(tile).resize(size, Image.Resampling.HAMMING)
                renderer.draw_image(gc, left, bottom, np.asarray(tile.convert("RGBA"))[::-1])
        gc.restore()


class Panels:
    """Image panels laid out as ``plt.subplots`` + ``subplots_adjust`` would lay them out.

    Drawn as figure-level artists (no axes): ``show`` puts an image where panel (r, c)'s
    axes would show it, ``boxes[r, c]`` is that place in figure fraction (x0, y0, x1, y1).
    """

    def __init__(self, figsize: tuple[float, float], rows: int, cols: int, aspect: float | None,
                 **adjust: float) -> None:
        """A figure of ``figsize`` inches with ``rows`` x ``cols`` panels.

        ``aspect``: a panel's height / width (None: the whole cell); ``adjust``: as
        ``subplots_adjust``'s.
        """
        self.fig = Figure(figsize=figsize)
        PanelCanvas(self.fig)
        self.images = self.add(PanelImages())
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
        self._offsets: dict[float, Any] = {}
        # the panels' frames, one closed run of 5 points each, in panel order, NaN between them:
        # one line draws them all (a Rectangle each costs ~0.6 ms to build and draw); it is
        # one of ``fig.lines``, so IPython's inline display does not take the figure (no axes)
        # for an empty one
        self.frames = Line2D([], [], color=mpl.rcParams["axes.edgecolor"], zorder=2.5, gid="frames",
                             linewidth=mpl.rcParams["axes.linewidth"], solid_joinstyle="miter",
                             transform=self.fig.transFigure)
        self.frames.set_figure(self.fig)
        self.fig.lines.append(self.frames)
        self._frame_xy: list[list[float]] = [[], []]

    def above(self, points: float) -> Any:
        """The figure-fraction transform shifted up by ``points`` (a title's pad)."""
        if points not in self._offsets:
            self._offsets[points] = offset_copy(self.fig.transFigure, fig=self.fig, y=points, units="points")
        return self._offsets[points]

    def add(self, artist: Any) -> Any:
        """Add a figure-level artist, in figure fraction unless it has its own transform."""
        if not artist.is_transform_set():
            artist.set_transform(self.fig.transFigure)
        return self.fig.add_artist(artist)

    def text(self, x: float, y: float, s: str, **kwargs: Any) -> Any:
        """A text at (x, y) in figure fraction (or ``transform=``), one of the figure's ``texts``."""
        return self.fig.text(x, y, s, **kwargs)

    def frame(self, r: int, c: int, title: str, fontsize: float = 9, pad: float | None = None) -> None:
        """Panel (r, c)'s frame and title, without an image (see :meth:`show`).

        ``pad``: the title's points above the panel (default the axes-title pad).
        """
        x0, y0, x1, y1 = self.boxes[r, c]
        self._frame_xy[0] += [x0, x1, x1, x0, x0, np.nan]
        self._frame_xy[1] += [y0, y0, y1, y1, y0, np.nan]
        self.frames.set_data(*self._frame_xy)
        self.text((x0 + x1) / 2, y1, title, fontsize=fontsize, ha="center", va="baseline",
                  transform=self.above(mpl.rcParams["axes.titlepad"] if pad is None else pad))

    def show(self, r: int, c: int, rgb: np.ndarray | Blend, title: str, fontsize: float = 9,
             pad: float | None = None) -> None:
        """Panel (r, c): an H x W x 3 uint8 image (or a :class:`Blend`), its frame and its title."""
        self.images.panels.append((self.boxes[r, c], rgb))
        self.frame(r, c, title, fontsize, pad)

    def colour_bar(self, rect: tuple[float, float, float, float], label: str, cmap: Any) -> None:
        """A vertical [0, 1] colour bar of ``cmap`` at full opacity, as ``fig.colorbar`` draws one.

        ``rect``: left, bottom, width, height in figure fraction. Ticks every 0.2 on its
        right, outward, their labels, and ``label`` beside them, read upwards. Its artists'
        gids start with ``colourbar`` (the label's: ``colourbar-label``).
        """
        x0, y0, w, h = rect
        gradient = (_table(cmap, np.float64)[::-1, None] * 255).astype(np.uint8)  # N x 1 x 3, 1 at the top
        bar = self.add(PanelImages())
        bar.set_gid("colourbar")
        bar.panels.append((np.array([x0, y0, x0 + w, y0 + h]), gradient))
        rc = mpl.rcParams
        frame = Rectangle((x0, y0), w, h, fill=False, zorder=2.5, transform=self.fig.transFigure,
                          linewidth=rc["axes.linewidth"], edgecolor=rc["axes.edgecolor"], gid="colourbar-frame")
        frame.set_figure(self.fig)
        self.fig.patches.append(frame)
        size, pad = rc["ytick.major.size"], rc["ytick.major.pad"]
        values = np.linspace(0, 1, 6)
        to_px = self.fig.dpi_scale_trans  # inches; a tick's length in points is size / 72 inches
        ticks = LineCollection([[(0, 0), (size / 72, 0)]] * len(values), colors=rc["ytick.color"],
                               linewidths=rc["ytick.major.width"], transform=to_px,
                               offsets=[(x0 + w, y0 + h * v) for v in values],
                               offset_transform=self.fig.transFigure, zorder=2.5, gid="colourbar-ticks")
        self.add(ticks)
        at = offset_copy(self.fig.transFigure, fig=self.fig, x=size + pad, units="points")
        for v in values:
            self.text(x0 + w, y0 + h * v, f"{v:.1f}", fontsize=rc["ytick.labelsize"], ha="left",
                      va="center_baseline", transform=at, gid=f"colourbar-tick-{v:.1f}")
        from matplotlib.font_manager import FontProperties

        widest = FontProperties(size=rc["ytick.labelsize"]).get_size_in_points() * 1.6  # "0.0" in DejaVu Sans, in points
        beside = offset_copy(self.fig.transFigure, fig=self.fig, units="points",
                             x=size + pad + widest + rc["axes.labelpad"])
        self.text(x0 + w, y0 + h / 2, label, fontsize=rc["axes.labelsize"], rotation=90, ha="left",
                  va="center", rotation_mode="default", transform=beside, gid="colourbar-label")

    def done(self, title: str) -> Figure:
        """The figure, with ``title`` above it (none when empty)."""
        if title:
            self.fig.suptitle(title, fontsize=10)
        return self.fig
