"""Ground-truth datasets: the masks sit where the series and images carry their class."""

import logging

import numpy as np
import pytest
import torch

from clustercam.data import ucr
from clustercam.data.synthetic import (
    SHAPES,
    SyntheticCBFDataModule,
    SyntheticShapesDataModule,
    make_cbf,
    make_shapes,
)


def test_cbf_masks_line_up_with_the_events():
    x, y, masks = make_cbf(300, random_state=0, normalise=False)
    assert x.shape == (300, 1, 128) and masks.shape == (300, 128) and masks.dtype == bool
    assert np.bincount(y).tolist() == [100, 100, 100]
    # one window [a, b] per series: t = 1..128, a in [16, 32], b - a in [32, 96]
    starts = masks.argmax(1)
    lengths = masks.sum(1)
    ends = starts + lengths
    assert all(masks[i, starts[i] : ends[i]].all() for i in range(len(masks)))  # contiguous
    assert starts.min() >= 15 and starts.max() <= 31
    assert lengths.min() >= 33 and lengths.max() <= 97
    s = x[:, 0]
    outside = s[~masks]
    # outside the window: the noise alone, N(0, 1)
    assert abs(outside.mean()) < 0.05 and abs(outside.std() - 1) < 0.05
    for label, level in ((0, 6.0), (1, 3.0), (2, 3.0)):  # plateau 6 + eta, ramps half on average
        inside = s[y == label][masks[y == label]]
        assert abs(inside.mean() - level) < 0.6, (label, inside.mean())
    # the shape inside the window: the bell rises, the funnel falls, the cylinder is flat
    def halves(label):
        first = [s[i, starts[i] : starts[i] + lengths[i] // 2].mean() for i in np.flatnonzero(y == label)]
        last = [s[i, ends[i] - lengths[i] // 2 : ends[i]].mean() for i in np.flatnonzero(y == label)]
        return np.mean(first), np.mean(last)

    c, b, f = halves(0), halves(1), halves(2)
    assert abs(c[0] - c[1]) < 0.5 and b[1] - b[0] > 2 and f[0] - f[1] > 2
    # shifting the mask by 40 steps loses most of the event: the real window is the right one
    shifted = np.roll(masks, 40, axis=1)
    assert s[y == 0][shifted[y == 0]].mean() < s[y == 0][masks[y == 0]].mean() - 2


def test_cbf_is_the_offline_ucr_cbf_plus_masks():
    dm = SyntheticCBFDataModule(seed=1, max_samples=50)
    x, y = dm.eval_tensors()
    ux, uy = ucr._pyts_cbf("test", 1)
    np.testing.assert_allclose(x.numpy(), ucr.znormalise(ux[:50]), rtol=1e-5, atol=1e-6)
    assert y.tolist() == uy[:50].tolist()
    # z-normalised, masks aligned with eval_tensors and capped like them
    assert x.mean(-1).abs().max() < 1e-5
    m = dm.eval_masks()
    assert m.shape == (50, 128) and m.dtype == torch.bool
    _, _, raw_masks = make_cbf(900, random_state=3)
    assert torch.equal(m, torch.from_numpy(raw_masks[:50]))
    assert dm.input_shape == (1, 128) and dm.num_classes == 3
    assert dm.masks("train").shape == (30, 128)


def test_cbf_datamodule_ignores_a_ucr_name(caplog):
    with caplog.at_level(logging.WARNING):
        dm = SyntheticCBFDataModule(name="Trace", max_samples=4)
    assert "ignored" in caplog.text and dm.name == "SyntheticCBF"
    with pytest.raises(ValueError, match="n_train"):
        SyntheticCBFDataModule(n_train=0)


def test_shapes_masks_are_the_shapes():
    x, y, masks = make_shapes(60, size=32, seed=0)
    assert x.shape == (60, 1, 32, 32) and masks.shape == (60, 32, 32)
    assert x.min() >= 0 and x.max() <= 1 and np.bincount(y).tolist() == [20, 20, 20]
    img = x[:, 0]
    # the shape is bright (0.85 + noise), the texture darker (0.35 +- 0.1 + noise)
    assert abs(img[masks].mean() - 0.85) < 0.02 and img[~masks].mean() < 0.45
    for i in range(60):  # in every image, not only on average
        assert img[i][masks[i]].mean() > img[i][~masks[i]].mean() + 0.3
    # the distractor: a bar as bright as the shape, outside the mask and not touching it
    clean, _, clean_masks = make_shapes(60, size=32, seed=0, noise=0.0)
    np.testing.assert_array_equal(clean_masks, masks)
    for i in range(60):
        bar = (clean[i, 0] > 0.8) & ~clean_masks[i]
        assert 2 * 8 <= bar.sum() <= 2 * 16, bar.sum()
        rows, cols = np.nonzero(bar)
        assert min(np.ptp(rows), np.ptp(cols)) == 1  # 2 px thick
        near = np.zeros_like(bar)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            near |= np.roll(clean_masks[i], (dy, dx), axis=(0, 1))
        assert not (bar & near).any()
    plain, _, plain_masks = make_shapes(60, size=32, seed=0, noise=0.0, distractor=False)
    assert ((plain[:, 0] > 0.8) == plain_masks).all()  # without it, bright is the shape
    for i in range(60):
        rows, cols = np.nonzero(masks[i])
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        fill = masks[i].sum() / box
        # a square fills its bounding box, a disc about pi/4 of it, a triangle about half
        expected = {"square": 1.0, "disc": np.pi / 4, "triangle": 0.5}[SHAPES[y[i]]]
        assert abs(fill - expected) < 0.12, (SHAPES[y[i]], fill)


def test_shapes_datamodule():
    dm = SyntheticShapesDataModule(n_train=9, n_test=6, size=16, max_samples=5)
    dm.setup()
    x, _ = dm.eval_tensors()
    assert x.shape == (5, 1, 16, 16) and dm.eval_masks().shape == (5, 16, 16)
    assert dm.num_classes == 3
