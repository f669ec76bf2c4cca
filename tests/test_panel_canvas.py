"""The panel figures' canvas draws plain text with Pillow where matplotlib's Agg would put it,
and leaves everything else (mathtext, clipped text) to Agg, pixel for pixel."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from clustercam.explain.plots.canvas import PanelCanvas  # noqa: E402


def rendered(canvas_class, *texts: dict) -> np.ndarray:
    """H x W x 4 bytes of a 3 x 2 inch figure at 100 dpi holding ``texts`` (fig.text kwargs)."""
    fig = Figure(figsize=(3, 2), dpi=100)
    canvas = canvas_class(fig)
    for kw in texts:
        fig.text(**kw)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def ink_box(rgba: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the pixels darker than the white background."""
    ys, xs = np.nonzero(rgba[..., :3].min(-1) < 200)
    return ys.min(), xs.min(), ys.max(), xs.max()


@pytest.mark.parametrize("kw", [
    {"x": 0.5, "y": 0.5, "s": "C3  n=448", "ha": "center", "va": "baseline", "fontsize": 9},
    {"x": 0.5, "y": 0.5, "s": "C3  n=448\nI=12.50%", "ha": "center", "va": "baseline", "fontsize": 9},
    {"x": 0.9, "y": 0.5, "s": "G0  n=3\nstab 0.80\nI 10.0±1.0%", "ha": "right", "va": "center", "fontsize": 8},
    {"x": 0.1, "y": 0.9, "s": "time 0 - 99", "ha": "left", "va": "top", "fontsize": 7},
    {"x": 0.5, "y": 0.5, "s": "concept map (min-max)", "rotation": 90, "ha": "left", "va": "center"},
    {"x": 0.2, "y": 0.3, "s": "0.4", "ha": "left", "va": "center_baseline", "fontsize": 10},
])
def test_plain_text_lands_where_agg_draws_it(kw) -> None:
    fast, agg = ink_box(rendered(PanelCanvas, kw)), ink_box(rendered(FigureCanvasAgg, kw))
    assert np.abs(np.subtract(fast, agg)).max() <= 1, (fast, agg)  # a pixel's antialiasing at most


def test_text_takes_its_colour_and_opacity() -> None:
    rgba = rendered(PanelCanvas, {"x": 0.1, "y": 0.5, "s": "IIII", "fontsize": 30, "color": "red", "alpha": 0.5})
    assert rgba[..., 3].min() == 255  # still opaque
    darkest = rgba[..., :3].astype(int).sum(-1).argmin()
    r, g, b = rgba[..., :3].reshape(-1, 3)[darkest]
    assert r == 255 and abs(int(g) - 128) <= 2 and abs(int(b) - 128) <= 2  # half-way to red over white


def test_mathtext_and_clipped_text_are_agg_s_own() -> None:
    math_text = {"x": 0.2, "y": 0.5, "s": r"$\alpha^2$ of $x$", "fontsize": 12}
    assert np.array_equal(rendered(PanelCanvas, math_text), rendered(FigureCanvasAgg, math_text))
    canvases = []
    for canvas_class in (PanelCanvas, FigureCanvasAgg):
        fig = Figure(figsize=(3, 2), dpi=100)
        canvas = canvas_class(fig)
        ax = fig.add_axes((0.2, 0.2, 0.5, 0.5))
        ax.set_axis_off()  # no tick labels: the clipped text only
        ax.text(0.8, 0.5, "clipped at the axes", clip_on=True, fontsize=12)
        canvas.draw()
        canvases.append(np.asarray(canvas.buffer_rgba()).copy())
    assert np.array_equal(*canvases)
