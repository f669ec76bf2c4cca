"""The fast concept figures look like the reference way of drawing them (one axes per panel).

The reference below is the previous implementation, kept here as the yardstick: a grid of
``plt.subplots`` axes, one ``imshow`` each. The fast figures (no axes: figure-level panels,
text drawn by Pillow) must render pixel-close to it at the dpi the callback saves with.
"""

from __future__ import annotations

import io
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from clustercam.explain.concepts import importance_order
from clustercam.explain.maps import minmax_normalise, resize_maps
from clustercam.explain.plots.concepts import blend, concept_figure, grayscale, sub_concept_figure


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.2f}%"


def reference_concept_figure(image, maps, channels, importance, title="", cmap="jet", alpha=0.6,
                             panel_size=2.4):
    maps = maps.numpy()
    n = len(maps)
    width = panel_size * (n + 1) + 1.1
    fig, axes = plt.subplots(1, n + 1, figsize=(width, panel_size + 0.9))
    right = 1 - 1.1 / width
    fig.subplots_adjust(left=0.01, right=right, bottom=0.03, top=0.72 if title else 0.8, wspace=0.06)
    img = np.clip(image.numpy(), 0, 1)
    axes[0].imshow(img.transpose(1, 2, 0), cmap="gray")
    axes[0].set_title("input", fontsize=9)
    for ax, i in zip(axes[1:], importance_order(importance)):
        if channels[i] > 0:
            ax.imshow(blend(image, maps[i], cmap, alpha))
        else:
            ax.imshow(grayscale(image), cmap="gray")
        ax.set_title(f"C{i}  n={int(channels[i])}\nI={_fmt(float(importance[i]))}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    cax = fig.add_axes((right + 0.1 / width, 0.1, 0.15 / width, 0.6))
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1)), cax=cax,
                 label="concept map (min-max)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def reference_sub_figure(image, parent_maps, parent_channels, parent_importance, sub_maps,
                         sub_channels, sub_importance, title="", cmap="jet", alpha=0.6, panel_size=2.2):
    sub_channels, sub_importance = sub_channels.numpy(), sub_importance.numpy()
    rows = [i for i in importance_order(parent_importance) if sub_channels[i].sum() > 0]
    s = sub_channels.shape[1]
    height = (panel_size + 0.6) * len(rows) + (0.5 if title else 0.1)
    fig, axes = plt.subplots(len(rows), s + 1, figsize=(panel_size * (s + 1), height), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01,
                        top=1 - (0.5 if title else 0.1) / height - 0.45 / height, wspace=0.06,
                        hspace=0.45 * (panel_size + 0.6) / panel_size / 2)
    for r, i in enumerate(rows):
        axes[r, 0].imshow(blend(image, parent_maps[i], cmap, alpha))
        axes[r, 0].set_title(f"C{i}  n={int(parent_channels[i])}\nI={_fmt(float(parent_importance[i]))}",
                             fontsize=9)
        order = [j for j in importance_order(sub_importance[i]) if sub_channels[i, j] > 0]
        for col in range(s):
            ax = axes[r, col + 1]
            if col < len(order):
                j = order[col]
                ax.imshow(blend(image, sub_maps[i, j], cmap, alpha))
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


def pixels(fig, dpi: int = 100) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return np.asarray(Image.open(buf).convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def fixture():
    """A smooth image and smooth concept maps at 128 px, as the callback draws them."""
    g = torch.Generator().manual_seed(0)
    image = resize_maps(torch.rand(3, 6, 6, generator=g), (128, 128)).clamp(0, 1)
    maps = minmax_normalise(resize_maps(torch.rand(4, 8, 8, generator=g), (128, 128)), 2)
    sub = minmax_normalise(resize_maps(torch.rand(4, 3, 8, 8, generator=g), (128, 128)), 2) * 0.7
    channels, importance = [40, 0, 25, 12], [3.0, float("nan"), 12.5, -1.0]
    sub_channels = torch.tensor([[10, 20, 10], [0, 0, 0], [5, 0, 20], [0, 0, 0]])
    sub_importance = torch.tensor([[1.0, -2.0, 0.5], [0, 0, 0], [4.0, 0, 3.0], [0, 0, 0]])
    return image, maps, channels, importance, sub, sub_channels, sub_importance


def assert_pixel_close(fast: np.ndarray, ref: np.ndarray) -> None:
    assert fast.shape == ref.shape
    diff = np.abs(fast - ref)
    # the fast figures' text is Pillow's FreeType, hinted its own way (tests/test_panel_canvas.py):
    # the glyphs' antialiased edges differ (~1 % of these figures' pixels, ~0.8 of the mean
    # below); elsewhere a few frame-corner pixels at most
    assert diff.mean() < 1.5, diff.mean()  # grey levels of 255, all channels
    assert (diff > 16).mean() < 2e-2, (diff > 16).mean()


def test_fast_concept_figure_is_pixel_close_to_the_reference(fixture) -> None:
    image, maps, channels, importance, *_ = fixture
    title = "img (class, p=0.5) - CGAP kmeans n=4"
    fast = pixels(concept_figure(image, maps, channels, importance, title=title))
    ref = pixels(reference_concept_figure(image, maps, channels, importance, title=title))
    assert_pixel_close(fast, ref)
    # the panels are really there: the figure is not the blank reference's frame
    assert fast.std() > 20


def test_fast_sub_concept_figure_is_pixel_close_to_the_reference(fixture) -> None:
    image, maps, channels, importance, sub, sub_channels, sub_importance = fixture
    fast = pixels(sub_concept_figure(image, maps, channels, importance, sub, sub_channels,
                                     sub_importance, title="t: sub-concepts"))
    ref = pixels(reference_sub_figure(image, maps, channels, importance, sub, sub_channels,
                                      sub_importance, title="t: sub-concepts"))
    assert_pixel_close(fast, ref)


def test_png_files_keep_the_pixels(fixture, tmp_path) -> None:
    """Fast PNG compression changes the file size, never a pixel."""
    image, maps, channels, importance, *_ = fixture
    fig = concept_figure(image, maps, channels, importance)
    fig.savefig(tmp_path / "fast.png", dpi=100)
    fig.savefig(tmp_path / "level6.png", dpi=100, pil_kwargs={"compress_level": 6})
    fig.savefig(tmp_path / "fig.pdf")  # other formats are untouched
    a = np.asarray(Image.open(tmp_path / "fast.png"))
    b = np.asarray(Image.open(tmp_path / "level6.png"))  # Agg's RGBA path
    assert a.shape[-1] == 3 and b.shape[-1] == 4 and (b[..., 3] == 255).all()
    assert np.array_equal(a, b[..., :3])
    assert (tmp_path / "fig.pdf").stat().st_size > 0
    fig.savefig(tmp_path / "fig.svg")  # vector files embed every panel at its own resolution
    svg = (tmp_path / "fig.svg").read_text()
    assert svg.count('width="128" height="128"') >= 5  # input + 4 concepts (+ colour bar)


def _panel_bands(image: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) pixel rows of each run of rows that are mostly not white."""
    inked = (image[..., :3] < 0.98).any(-1).mean(1) > 0.5
    edges = np.flatnonzero(np.diff(np.r_[0, inked.astype(int), 0]))
    return list(zip(edges[::2], edges[1::2] - 1))


def test_first_panel_row_keeps_the_title_and_the_most_important_split(fixture) -> None:
    """Concepts Fig. 5 shows one split concept per class: the first row of a sub-concept figure."""
    from clustercam.explain.plots.papers import first_panel_row

    image, maps, channels, importance, sub, sub_channels, sub_importance = fixture
    full = pixels(sub_concept_figure(image, maps, channels, importance, sub, sub_channels,
                                     sub_importance, title="t: sub-concepts")) / 255.0
    bands = _panel_bands(full)
    assert len(bands) == 2  # concepts 0 and 2 are split
    top = first_panel_row(full)
    assert np.array_equal(top, full[:len(top)])  # the figure's title and first row, uncut
    assert _panel_bands(top) == bands[:1]
    assert bands[0][1] < len(top) <= bands[0][1] + 5 < bands[1][0]
    # a panel row is one panel tall (2.2 in at dpi 100, less the frame's rounding)
    assert 190 <= bands[0][1] - bands[0][0] + 1 <= 225


def test_the_callbacks_figure_writer_writes_the_same_files(fixture, tmp_path) -> None:
    """outputs.FigureWriter (compression in a worker thread) writes the PNG that
    outputs.save_figure writes for the concept figures: same bytes, RGB at level 1."""
    from clustercam import outputs

    image, maps, channels, importance, sub, sub_channels, sub_importance = fixture

    def figures():
        return [concept_figure(image, maps, channels, importance, title="a"),
                sub_concept_figure(image, maps, channels, importance, sub, sub_channels,
                                   sub_importance, title="a: sub-concepts")]

    ref = [outputs.save_figure(f, tmp_path / f"ref{i}.png", dpi=100) for i, f in enumerate(figures())]
    with outputs.FigureWriter() as writer:
        got = [writer.save(f, tmp_path / f"got{i}.png", dpi=100) for i, f in enumerate(figures())]
    for r, g in zip(ref, got):
        assert g.read_bytes() == r.read_bytes() and Image.open(g).mode == "RGB"


def test_a_blend_tile_is_the_float_blend_within_three_levels() -> None:
    """The panels blend by table lookup on 256 levels of map and image: every pixel within
    3 of the float blend's bytes, the map's shape checked."""
    from clustercam.exceptions import UserError
    from clustercam.explain.plots.panels import blend_tile

    g = torch.Generator().manual_seed(1)
    image, heat = torch.rand(3, 40, 50, generator=g), torch.rand(40, 50, generator=g)
    want = (np.clip(blend(image, heat, "jet", 0.6), 0, 1) * 255).astype(int)
    got = blend_tile(grayscale(image), heat, "jet", 0.6).pixels().astype(int)
    assert got.shape == want.shape == (40, 50, 3)
    assert np.abs(got - want).max() <= 3 and np.abs(got - want).mean() < 0.5
    with pytest.raises(UserError, match="differs"):
        blend_tile(grayscale(image), heat[:, :10], "jet", 0.6)


def test_a_panel_figure_shows_inline_in_a_notebook(fixture) -> None:
    """A panel figure has no axes: IPython's inline display skips a figure without axes or
    lines, so its frames are one of the figure's lines and it is drawn."""
    from IPython.core.pylabtools import print_figure

    image, maps, channels, importance, *_ = fixture
    png = print_figure(concept_figure(image, maps, channels, importance, title="t"), "png")
    assert png is not None and Image.open(io.BytesIO(png)).size[0] > 500


@pytest.mark.parametrize("fmt", ["pdf", "svg"])
def test_a_panel_figure_saves_as_vector_output(fixture, tmp_path, fmt) -> None:
    """Vector backends draw the panels at their own resolution (one embedded image each, the
    colour bar's gradient too) and the text as matplotlib's (not through the raster canvas)."""
    image, maps, channels, importance, *_ = fixture
    fig = concept_figure(image, maps, channels, importance, title="t")
    fig.savefig(tmp_path / f"f.{fmt}")
    data = (tmp_path / f"f.{fmt}").read_bytes()
    if fmt == "pdf":
        assert data.startswith(b"%PDF") and data.count(b"/Subtype /Image") == 5 + 1  # 5 panels, the bar
    else:
        assert data.count(b"<image ") == 5 + 1
