"""The parts dataset: masks sit exactly on the drawn parts, classes are pairs, seeds repeat."""

import numpy as np
import pytest
import torch

from clustercam.data.parts import (
    CLASSES,
    PAIRS,
    PARTS,
    SyntheticPartsDataModule,
    dilate,
    make_parts,
    part_mask,
)


@pytest.fixture(scope="module")
def parts():
    return make_parts(120, seed=3)


def test_masks_match_the_drawn_pixels(parts):
    x, y, masks, bg = parts
    assert x.shape == (120, 3, 64, 64) and masks.shape == (120, 3, 64, 64) and masks.dtype == bool
    assert 0 <= x.min() and x.max() <= 1 and bg.shape == x.shape
    changed = (x != bg).any(1)  # where the image differs from its object-free background
    drawn = masks.any(1)
    assert (changed == drawn).all()
    for i in range(len(x)):
        for r in range(3):  # every region is one flat colour that differs from its background
            pix = x[i][:, masks[i, r]]
            assert pix.shape[1] > 20
            assert np.ptp(pix, axis=1).max() == 0
            local = bg[i][:, masks[i, r]].mean(1)  # luminance contrast to the background
            assert abs(pix[:, 0].mean() - local.mean()) >= 0.3 - 1e-6


def test_parts_never_overlap_and_keep_their_distance(parts):
    _, _, masks, _ = parts
    for m in masks:
        a, b, d = m
        assert not (dilate(a, 2) & b).any()
        assert not (dilate(a | b, 2) & d).any()
        for region in (a, b):  # bounding box 12-20 px (a disc's drawn extent can be 1 px less)
            rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
            assert 11 <= rows[-1] - rows[0] + 1 <= 20 and 11 <= cols[-1] - cols[0] + 1 <= 20
        pix = np.argwhere(d).astype(float)  # the bar: 14-22 px long, 4 px wide
        span = np.sqrt(((pix[:, None] - pix[None]) ** 2).sum(-1)).max()
        assert 13 <= span <= np.hypot(23, 4) and 40 <= len(pix) <= 22 * 5


def test_classes_are_balanced_pairs_of_parts(parts):
    _, y, masks, _ = parts
    assert np.bincount(y, minlength=6).tolist() == [20] * 6
    assert len(CLASSES) == 6 and CLASSES[0] == "disc+square" and CLASSES[-1] == "triangle+cross"
    assert all(a < b for a, b in PAIRS)
    # part A is the class's first part: its mask equals one of that kind drawn in its bbox
    for i in range(10):
        a = masks[i, 0]
        rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
        kind = PARTS[PAIRS[y[i]][0]]
        candidates = [part_mask(kind, 64, t, le, s) for s in range(12, 21)
                      for t in range(rows[0] - 1, rows[0] + 1) for le in range(cols[0] - 1, cols[0] + 1)
                      if t >= 0 and le >= 0]
        assert any((c == a).all() for c in candidates)


def test_part_shapes_differ():
    masks = {k: part_mask(k, 32, 4, 4, 18) for k in PARTS}
    sizes = {k: int(m.sum()) for k, m in masks.items()}
    assert sizes["square"] == 18 * 18
    assert sizes["triangle"] < sizes["disc"] < sizes["square"]
    assert sizes["cross"] < sizes["disc"]
    with pytest.raises(ValueError, match="unknown part 'star'"):
        part_mask("star", 32, 0, 0, 12)


def test_same_seed_same_images_and_streams_differ():
    a = make_parts(6, seed=1)
    b = make_parts(6, seed=1)
    c = make_parts(6, seed=2)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    dm = SyntheticPartsDataModule(n_train=12, n_test=6, seed=1)
    train, test = dm.split("train").x, dm.split("test").x
    assert not torch.equal(train[:6], test)
    dm2 = SyntheticPartsDataModule(n_train=12, n_test=6, seed=1)
    assert torch.equal(dm2.split("test").x, test)


def test_datamodule_interface():
    dm = SyntheticPartsDataModule(n_train=24, n_test=12, seed=0, batch_size=8, max_samples=10)
    dm.setup()
    x, y, idx = next(iter(dm.test_dataloader()))
    assert x.shape == (10, 3, 64, 64) and y.dtype == torch.long and idx.tolist() == list(range(10))
    assert dm.input_shape == (3, 64, 64) and dm.num_classes == 6
    parts = dm.eval_part_masks()
    assert parts.shape == (10, 3, 64, 64) and parts.dtype == torch.bool
    assert torch.equal(dm.eval_masks(), parts[:, 0] | parts[:, 1])
    bg = dm.eval_backgrounds()
    ex, _ = dm.eval_tensors()
    assert torch.equal((ex != bg).any(1), parts.any(1))
    # backgrounds of a split that was not kept are regenerated from the same stream
    assert torch.equal(dm.backgrounds("train")[:3] != dm.split("train").x[:3],
                       dm.part_masks("train")[:3].any(1, keepdim=True).expand(3, 3, 64, 64))
    assert torch.equal(dm.display_image(2), ex[2])
    assert dm.image_name(2) == "syntheticparts_test_00002"
    assert dm.class_names == [CLASSES[int(t)] for t in dm.eval_tensors()[1]]


@pytest.mark.parametrize("kwargs, match", [
    ({"size": 32}, "size must be >= 48"),
    ({"n_train": 0}, "n_train and n_test must be >= 1"),
    ({"min_contrast": 0.9}, "min_contrast must be in"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticPartsDataModule(**kwargs)
