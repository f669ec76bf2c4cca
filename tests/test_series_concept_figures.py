"""Concept figures of series: the concepts side by side in importance order, each panel the
series (every channel) coloured by the concept's map; sub-concepts; class galleries; and the
run's figure code choosing them for N x C x L inputs while images keep their figures."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection, PathCollection
from PIL import Image

from clustercam import outputs
from clustercam.callbacks.concept_figures import class_gallery_figures, concept_figures
from clustercam.explain.concepts.classes.passes import ClassGallery
from clustercam.explain.concepts.image.batch import figure_maps
from clustercam.explain.concepts.image.settings import ConceptSettings
from clustercam.explain.concepts.vocabulary import ConceptConfig
from clustercam.explain.plots.class_concepts import class_concept_figure
from clustercam.explain.plots.concepts import concept_figure, sub_concept_figure
from clustercam.explain.plots.series_concepts import (
    PLAIN,
    as_series_maps,
    concept_drawers,
    series_class_concept_figure,
    series_concept_figure,
    series_sub_concept_figure,
)

JET = plt.get_cmap("jet")
L = 40


def series(c: int = 1, length: int = L) -> np.ndarray:
    t = np.arange(length)
    return np.stack([np.sin(t / (3 + ch)) + ch for ch in range(c)])


def panel_artists(artists) -> list:
    """The panels' own artists (figure-level, in panel order): the colour bar's left out."""
    return [a for a in artists if not (a.get_gid() or "").startswith("colourbar")]


def titles(fig) -> list[str]:
    return [t.get_text() for t in panel_artists(fig.texts) if t is not fig._suptitle]


def frames(fig) -> list[tuple[float, float, float, float]]:
    """The panels' frames, (x0, y0, x1, y1) in figure fraction, in panel order."""
    line = [a for a in fig.lines if a.get_gid() == "frames"][0]
    xy = np.stack(line.get_data(), 1).reshape(-1, 6, 2)[:, :5]  # 5 points a frame, then NaN
    return [(*p.min(0), *p.max(0)) for p in xy]


def lines(fig) -> list:
    return [a for a in panel_artists(fig.artists) if isinstance(a, (LineCollection, PathCollection))]


def segment_colours(fig, panel: int, length: int = L) -> tuple[np.ndarray, np.ndarray]:
    """Panel ``panel``'s segments as (left time step, RGBA), read back from its collection:
    the x of a segment's midpoint, mapped through the panel's frame, is t + 0.5 of t -> t+1."""
    x0, _, x1, _ = frames(fig)[panel]
    width = x1 - x0
    coll = lines(fig)[panel]
    steps, colours = [], []
    for path, rgba in zip(coll.get_paths(), coll.get_edgecolor()):
        seg = path.vertices.reshape(-1, 2, 2)
        mid = seg[:, :, 0].mean(1)
        steps.append(np.rint((mid - x0) / width * length - 1).astype(int))
        colours.append(np.repeat(rgba[None], len(seg), 0))
    return np.concatenate(steps), np.concatenate(colours)


def planted() -> tuple[np.ndarray, list[int], list[float]]:
    """Four concepts: 0 on steps 10-19, 1 on 25-34, 2 empty, 3 a ramp."""
    maps = np.zeros((4, L))
    maps[0, 10:20] = 1
    maps[1, 25:35] = 1
    maps[3] = np.linspace(0, 1, L)
    return maps, [3, 5, 0, 2], [12.0, 40.0, float("nan"), 3.5]


def test_panels_are_the_concepts_in_importance_order_with_the_image_figures_titles() -> None:
    maps, channels, importance = planted()
    fig = series_concept_figure(series(), maps, channels, importance, title="s")
    panel_titles = [t for t in titles(fig) if "I=" in t]
    assert panel_titles == ["C1  n=5\nI=40.00%", "C0  n=3\nI=12.00%", "C3  n=2\nI=3.50%", "C2  n=0\nI=nan"]
    assert titles(fig)[0] == "input" and len(frames(fig)) == 5  # input + 4 frames
    xs = [box[0] for box in frames(fig)]
    assert xs == sorted(xs)  # side by side, left to right
    assert [t.get_text() for t in fig.texts if t.get_gid() == "colourbar-label"] == ["concept map (min-max)"]
    assert not fig.axes  # no axes: every panel and the colour bar are figure-level artists


def test_line_colours_follow_each_concepts_map() -> None:
    """Concept 1 (the most important, panel 1) is planted on steps 25-34: the segments inside
    take the colour map's top colour, those outside its bottom one, the two that straddle an
    edge the middle one; the ramp's segments run through the colour map in time order."""
    maps, channels, importance = planted()
    fig = series_concept_figure(series(), maps, channels, importance)
    assert isinstance(lines(fig)[1], PathCollection)
    steps, colours = segment_colours(fig, 1)
    assert sorted(steps) == list(range(L - 1))  # every segment once
    for t, rgba in zip(steps, colours):
        value = 1.0 if 25 <= t <= 33 else 0.5 if t in (24, 34) else 0.0
        np.testing.assert_allclose(rgba, JET(value), err_msg=f"step {t}")
    steps, colours = segment_colours(fig, 3)  # the ramp (3rd by importance)
    expected = JET(np.linspace(0, 1, L)[:-1] + 0.5 / (L - 1))
    np.testing.assert_allclose(colours[np.argsort(steps)], expected)
    # the empty concept: a plain line, no band; every other panel has its band
    assert isinstance(lines(fig)[4], LineCollection)
    np.testing.assert_allclose(lines(fig)[4].get_color()[0][:3], [float(PLAIN)] * 3)
    bands = fig.artists[0].panels
    assert len(bands) == 3 and bands[0][1].pixels().shape == (1, L, 3)
    band = bands[0][1].pixels()[0].astype(int)  # concept 1 over white: white outside, coloured inside
    assert (band[:20] == 255).all() and (band[27:33] < 200).any(-1).all()


def test_multivariate_series_draw_every_channel_in_its_own_strip() -> None:
    maps, channels, importance = planted()
    fig = series_concept_figure(series(3), maps, channels, importance)
    strips = lines(fig)[0].get_segments()  # the input: one polyline per channel
    assert len(strips) == 3 and all(len(seg) == L for seg in strips)
    assert [t for t in titles(fig) if t.startswith("ch ")] == ["ch 0", "ch 1", "ch 2"]
    ranges = [(seg[:, 1].min(), seg[:, 1].max()) for seg in strips]
    assert ranges[0][0] > ranges[1][1] and ranges[1][0] > ranges[2][1]  # channel 0 on top, apart
    for panel in (1, 2, 3):  # C x (L - 1) segments, each channel coloured by the same map
        steps, colours = segment_colours(fig, panel)
        assert len(steps) == 3 * (L - 1)
        for t in (5, 30):
            assert len({tuple(c) for c in colours[steps == t]}) == 1


def test_many_channels_are_capped_and_said_so() -> None:
    x = np.random.default_rng(0).standard_normal((15, L))
    maps, channels, importance = planted()
    fig = series_concept_figure(x, maps, channels, importance, title="t", max_channels=4)
    assert len(lines(fig)[0].get_segments()) == 4
    assert len([t for t in titles(fig) if t.startswith("ch ")]) == 4
    assert "4 of 15 channels" in fig._suptitle.get_text()


def test_maps_are_resized_to_the_series_and_raw_ones_normalised() -> None:
    np.testing.assert_allclose(as_series_maps(torch.tensor([[0.0, 1.0]]), 4), [[0, 0.25, 0.75, 1]])
    np.testing.assert_allclose(as_series_maps(np.array([[2.0, 12.0, 7.0]]), 3), [[0, 1, 0.5]])
    kept = np.array([[0.1, 0.3, 0.2]])  # already in [0, 1] (a sub-concept at its parent's scale)
    np.testing.assert_allclose(as_series_maps(kept, 3), kept, rtol=1e-6)
    assert as_series_maps(np.full((1, 3), 5.0), 3).tolist() == [[0.0, 0.0, 0.0]]


def test_sub_concept_figure_rows_are_the_split_concepts_by_importance() -> None:
    maps, channels, importance = planted()
    sub_maps = np.random.default_rng(1).random((4, 2, L)) * 0.5
    sub_ch = np.array([[2, 1], [0, 0], [0, 0], [1, 1]])
    sub_imp = np.array([[1.0, 5.0], [0, 0], [0, 0], [2.0, 1.0]])
    fig = series_sub_concept_figure(series(2), maps, channels, importance, sub_maps, sub_ch, sub_imp)
    assert [t.split()[0] for t in titles(fig)] == ["C0", "C01", "C00", "C3", "C30", "C31"]
    steps, colours = segment_colours(fig, 1)  # C01, drawn at its parent's scale
    t = int(steps[0])
    np.testing.assert_allclose(colours[0], JET((sub_maps[0, 1, t] + sub_maps[0, 1, t + 1]) / 2))
    assert series_sub_concept_figure(series(), maps, channels, importance, sub_maps, np.zeros((4, 2)),
                                     sub_imp) is None


def test_class_gallery_rows_by_importance_each_series_coloured_by_its_map() -> None:
    """Row 0 is concept 1 (importance 30): its top series #2 has the map planted on layer
    steps 4-5 of 10 (stride 4), i.e. the input's steps 16-23."""
    index = torch.tensor([[0, 1], [2, -1]])
    maps = torch.zeros(2, 2, 10)
    maps[1, 0, 4:6] = 3.0
    maps[0] = torch.rand(2, 10)
    images = {i: torch.tensor(series(2)) for i in range(3)}
    fig = series_class_concept_figure(index, maps, images, [3, 4], [0.8, 0.5], [10.0, 30.0], [1.0, 2.0],
                                      title="class a")
    texts = titles(fig)
    assert texts[0].startswith("G1  n=4") and texts[1] == "#2" and texts[2].startswith("G0") \
        and texts[3:] == ["#0", "#1"]
    assert len(frames(fig)) == 3  # the empty slot has no frame
    steps, colours = segment_colours(fig, 0)
    top = np.asarray(JET(1.0))
    strong = {int(t) for t, c in zip(steps, colours) if np.allclose(c, top, atol=0.1)}
    assert strong and strong <= set(range(14, 26)) and {18, 19, 20} <= strong
    assert np.allclose(colours[steps == 2][0], JET(0.0))  # far from the concept: the bottom colour
    # the maps as the concept code keeps them for a series layer (n x k x 1 x l): the same colours
    grid = series_class_concept_figure(index, maps[:, :, None], images, [3, 4], [0.8, 0.5], [10.0, 30.0],
                                       [1.0, 2.0], title="class a")
    assert np.array_equal(segment_colours(grid, 0)[1], colours)


def test_the_drawers_follow_the_display_samples_rank() -> None:
    s = concept_drawers(torch.zeros(2, 50))
    assert (s.concept, s.sub_concept, s.class_gallery, s.map_dims) == (
        series_concept_figure, series_sub_concept_figure, series_class_concept_figure, 1)
    for sample in (torch.zeros(3, 8, 8), np.zeros((1, 8, 8)), None):
        i = concept_drawers(sample)
        assert (i.concept, i.sub_concept, i.class_gallery, i.map_dims) == (
            concept_figure, sub_concept_figure, class_concept_figure, 2)


def gathered(n_images: int, spatial: tuple[int, ...], settings: ConceptSettings) -> SimpleNamespace:
    """What the concept callback gathers, with planted maps: concept j strongest at j."""
    f, c, n, s = len(settings.details), len(settings.configs), settings.l_max, settings.n_sub
    maps = torch.zeros(n_images, f, n, *spatial)
    for j in range(n):
        maps[:, :, j].view(n_images, f, -1)[..., j * 2] = 1.0 + j
    return SimpleNamespace(
        idx=torch.arange(n_images), maps=maps, sub_maps=maps.unsqueeze(3).repeat_interleave(s, 3) / 2,
        channels=torch.full((n_images, c, n), 4), importance=torch.rand(n_images, c, n) * 50,
        p_target=torch.full((n_images,), 0.9), sub_channels=torch.full((n_images, f, n, s), 2),
        sub_importance=torch.rand(n_images, f, n, s))


def test_the_run_draws_series_for_n_x_c_x_l_inputs(tmp_path) -> None:
    """The concept figures of a series datamodule (display samples C x L, maps at layer
    stride 2): every figure and sub-figure written as a PNG, the maps at the input's length."""
    settings = ConceptSettings(method=["cgap", "cpha"], n_concepts=3, sub_concepts=2, n_init=1)
    data = gathered(2, (L // 2,), settings)
    dm = SimpleNamespace(display_image=lambda i: torch.tensor(series(2)))
    maps, sub = figure_maps(data, 0, 0, 3, (L,))
    assert maps.shape == (3, L) and sub.shape == (3, 2, L)
    assert maps.amin(-1).tolist() == [0, 0, 0] and maps.amax(-1).tolist() == [1, 1, 1]
    assert [int(m.argmax()) // 2 for m in maps] == [0, 2, 4]  # layer step 2j -> input steps 4j, 4j+1
    torch.testing.assert_close(sub[:, 0], maps / 2)  # at the parent's bounds: half as strong
    paths = concept_figures(settings, dm, data, ["a", "b"], ["x", "y"], tmp_path, max_figures=None)
    expected = {outputs.concept_figure_path(n, cfg, sub=sb) for n in "ab" for cfg in settings.details
                for sb in (False, True)}
    assert {str(p.relative_to(tmp_path)) for p in paths} == expected
    for p in paths:
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.size[0] > 400


def test_the_run_still_draws_images_for_images(tmp_path) -> None:
    """An image datamodule's figures are the image concept figures, byte for byte."""
    settings = ConceptSettings(method="cgap", n_concepts=3, sub_concepts=0, n_init=1)
    data = gathered(1, (4, 4), settings)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    dm = SimpleNamespace(display_image=lambda i: image)
    [path] = concept_figures(settings, dm, data, ["a"], ["x"], tmp_path / "run", max_figures=1)
    maps, _ = figure_maps(data, 0, 0, 3, (16, 16))
    title = "a (x, p=0.9) - CGAP kmeans n=3"
    ref = outputs.save_figure(concept_figure(image, maps, data.channels[0, 0].tolist(),
                                             data.importance[0, 0].tolist(), title=title), tmp_path / "ref.png",
                              dpi=100)
    assert path.read_bytes() == ref.read_bytes()


@pytest.mark.parametrize("kind", ["series", "image"])
def test_class_galleries_are_drawn_for_series_and_images(tmp_path, kind) -> None:
    shape = (2, L) if kind == "series" else (3, 12, 12)
    index = torch.tensor([[0, 1], [1, -1]])
    spatial = (L // 4,) if kind == "series" else (3, 3)
    figure = {"index": index, "maps": torch.rand(2, 2, *spatial), "channels": [3, 2], "stability": [0.5, 1.0],
              "importance": [5.0, math.nan], "importance_std": [1.0, math.nan], "title": "class x"}
    cfg = ConceptConfig("cgap", "kmeans", 2)
    dm = SimpleNamespace(display_image=lambda i: torch.rand(*shape))
    [path] = class_gallery_figures([ClassGallery(0, cfg, "coassociation", figure)], dm, ["x"], [cfg], tmp_path)
    assert path == tmp_path / outputs.class_gallery_path("x", cfg, "coassociation", [cfg]) and path.is_file()
