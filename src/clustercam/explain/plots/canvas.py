"""The canvas of the panel figures (concepts, sub-concepts, class galleries).

Their PNGs and their text are drawn fast on the raster path:

- :class:`PanelCanvas`: an Agg canvas whose PNGs of opaque figures are RGB, "Up"-filtered,
  zlib level 1 (:func:`encode_png`: same pixels as Agg's RGBA PNG at level 6, several times
  faster to encode, files a few % larger).
- :class:`PanelRenderer`, its renderer: plain text (no mathtext, no TeX, no clip, a multiple
  of 90 degrees) is measured and drawn by Pillow's FreeType, from the same font file
  matplotlib picks (DejaVu Sans by default). Matplotlib 3.11 shapes each string twice
  (measure, draw) and renders glyph by glyph in Python, ~1 ms a title line; Pillow draws
  it in ~0.05 ms. The glyphs are hinted by FreeType's defaults instead of matplotlib's
  autohinter, and a line starts on a whole pixel: a title may differ from matplotlib's by a
  pixel's antialiasing. Everything else, and vector output (PDF, SVG), is matplotlib's.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(rgb: np.ndarray, dpi: float, texts: dict[str, str]) -> bytes:
    """An H x W x 3 uint8 image as a PNG, about twice as fast as Pillow's.

    Every row is "Up"-filtered (minus the row above) and compressed at zlib level 1, with
    the ``dpi`` (pHYs, rounded to pixels a metre as Pillow writes it) and Latin-1 ``texts``
    (tEXt; the canvas passes ASCII only). Decodes to the same pixels and ``info`` as
    Pillow's PNG of the image, in about half its time, as Pillow picks a filter per row by
    trying all five.

    Args:
        rgb: H x W x 3 uint8 (a strided view of an RGBA buffer is fine).
        dpi: the resolution to record.
        texts: tEXt chunks, key -> value.

    Returns:
        The PNG file's bytes.
    """
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


@functools.lru_cache(maxsize=64)
def _pillow_font(path: str, size_px: float) -> Any:
    from PIL import ImageFont

    return ImageFont.truetype(path, size_px, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=256)
def _font_of(prop: Any, dpi: float) -> Any:
    """Pillow's font for matplotlib's font properties at ``dpi`` (``prop`` hashes its values)."""
    return _pillow_font(font_manager.findfont(prop), round(prop.get_size_in_points() * dpi / 72, 3))


class PanelRenderer(RendererAgg):
    """Agg renderer that measures and draws plain text with Pillow.

    See the module's docstring; the rest is ``RendererAgg``'s.
    """

    def get_text_width_height_descent(self, s: str, prop: Any, ismath: Any) -> tuple[float, float, float]:
        """Width, height and descent of the ink of ``s`` in pixels (Pillow's, unless math)."""
        if ismath:
            return super().get_text_width_height_descent(s, prop, ismath)
        left, top, right, bottom = _font_of(prop, self.dpi).getbbox(s, anchor="ls")
        return float(right - left), float(bottom - top), float(max(bottom, 0))

    def draw_text(self, gc: Any, x: float, y: float, s: str, prop: Any, angle: float,
                  ismath: Any = False, mtext: Any = None) -> None:
        """Draw ``s`` with its baseline's start at (x, y) (from the top), blended into the buffer."""
        if (ismath or angle % 90 or not gc.get_antialiased() or gc.get_clip_rectangle() is not None
                or gc.get_clip_path()[0] is not None):
            return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
        from PIL import Image, ImageDraw

        font = _font_of(prop, self.dpi)
        left, top, right, bottom = (int(v) for v in font.getbbox(s, anchor="ls"))  # the ink, from the baseline's start
        if right <= left or bottom <= top:
            return
        tile = Image.new("L", (right - left, bottom - top))
        ImageDraw.Draw(tile).text((-left, -top), s, fill=255, font=font, anchor="ls")
        cover = np.asarray(tile)
        turns = round(angle / 90) % 4
        if turns:  # counter-clockwise on screen (y down): an offset (dx, dy) goes to (dy, -dx) a turn
            cover = np.rot90(cover, turns)
            cos, sin = ((1, 0), (0, 1), (-1, 0), (0, -1))[turns]
            xs = [dx * cos + dy * sin for dx in (left, right) for dy in (top, bottom)]
            ys = [dy * cos - dx * sin for dx in (left, right) for dy in (top, bottom)]
            left, top = min(xs), min(ys)
        x0, y0 = round(x) + left, round(y) + top  # y: from the top, at the baseline
        buf = np.asarray(self.buffer_rgba())
        h, w = cover.shape
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, buf.shape[1]), min(y0 + h, buf.shape[0])
        if xa >= xb or ya >= yb:
            return
        rgba = gc.get_rgb()
        alpha = rgba[3] if len(rgba) > 3 else gc.get_alpha()
        a = cover[ya - y0:yb - y0, xa - x0:xb - x0, None] * np.float32(alpha / 255)
        dst = buf[ya:yb, xa:xb]
        colour = np.asarray(rgba[:3], np.float32) * 255
        dst[..., :3] = (dst[..., :3] * (1 - a) + colour * a + 0.5).astype(np.uint8)
        dst[..., 3] = (a[..., 0] * 255 + dst[..., 3] * (1 - a[..., 0]) + 0.5).astype(np.uint8)


class PanelCanvas(FigureCanvasAgg):
    """Agg canvas of the panel figures, with fast text and fast PNGs.

    Its renderer draws their text fast (:class:`PanelRenderer`) and its PNGs of opaque
    figures are RGB, "Up"-filtered, zlib level 1 (:func:`encode_png`). Transparent figures,
    metadata that is not ASCII, or explicit ``pil_kwargs`` take Agg's own PNG path (at
    level 1 unless told otherwise).
    """

    def get_renderer(self) -> RendererAgg:
        """The canvas's :class:`PanelRenderer`, new when the size or dpi changed."""
        w, h = self.get_width_height(physical=True)
        key = w, h, self.figure.dpi
        if self._lastKey != key:  # as FigureCanvasAgg.get_renderer, with this renderer
            self.renderer = PanelRenderer(w, h, self.figure.dpi)
            self._lastKey = key
        return self.renderer

    def png_image(self, metadata: dict | None = None) -> Callable[[Any], None] | None:
        """Draw the figure and return ``write(file)``, which encodes its PNG.

        ``write`` writes to a binary file (or a path); None for a transparent figure or
        metadata that is not ASCII (Agg's own path). Lets a writer encode in another thread
        (:class:`clustercam.outputs.FigureWriter`): zlib releases the GIL.
        """
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
        """Write the PNG (see :meth:`png_image`)."""
        # ``_``: dpi, facecolor... which print_figure has already applied to the figure
        write = None if pil_kwargs else self.png_image(metadata)
        if write is None:
            super().print_png(filename_or_obj, metadata=metadata,
                              pil_kwargs={"compress_level": 1, **(pil_kwargs or {})})
            return
        write(filename_or_obj)
