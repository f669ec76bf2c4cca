"""The motifs dataset: motifs inside the series and apart, masks on the motifs, classes are
pairs, the background is the series without them, seeds repeat, splits differ."""

import numpy as np
import pytest
import torch

from clustercam.data.motifs import (
    CLASSES,
    MOTIFS,
    PAIRS,
    SyntheticMotifsDataModule,
    make_motifs,
    motif_shape,
)
from clustercam.exceptions import UserError


@pytest.fixture(scope="module")
def motifs():
    return make_motifs(120, seed=3)


def spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of the runs of True in a 1-D mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def test_classes_are_balanced_pairs_in_combinations_order(motifs):
    _, y, _, _ = motifs
    assert np.bincount(y, minlength=6).tolist() == [20] * 6
    assert CLASSES == ("bump+plateau", "bump+sawtooth", "bump+chirp", "plateau+sawtooth",
                       "plateau+chirp", "sawtooth+chirp")
    assert PAIRS == ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def test_each_region_is_one_span_inside_the_series_and_at_least_4_steps_apart(motifs):
    x, _, masks, _ = motifs
    assert x.shape == (120, 1, 256) and masks.shape == (120, 3, 256) and masks.dtype == bool
    for m in masks:
        runs = [spans(m[r]) for r in range(3)]
        assert all(len(r) == 1 for r in runs)  # one contiguous span each
        (a, b, d) = (r[0] for r in runs)
        assert 24 <= a[1] - a[0] <= 40 and 24 <= b[1] - b[0] <= 40 and 16 <= d[1] - d[0] <= 24
        ordered = sorted([a, b, d])
        assert ordered[0][0] >= 0 and ordered[-1][1] <= 256
        for (_, end), (start, _) in zip(ordered, ordered[1:]):
            assert start - end >= 4  # at least 4 background steps between two regions


def test_the_series_equals_its_background_outside_the_masks(motifs):
    x, _, masks, bg = motifs
    outside = ~masks.any(1)
    assert bg.shape == x.shape
    assert np.array_equal(x[:, 0][outside], bg[:, 0][outside])
    # and differs inside every motif span: the motif is added there
    for r in (0, 1):
        assert (np.abs(x[:, 0] - bg[:, 0])[masks[:, r]] > 0).mean() > 0.9


def test_masks_match_the_motifs_added(motifs):
    x, y, masks, bg = motifs
    for i in range(len(x)):
        added = x[i, 0] - bg[i, 0]
        scale = bg[i, 0].std()
        for r in (0, 1):
            s, e = spans(masks[i, r])[0]
            shape = motif_shape(MOTIFS[PAIRS[y[i]][r]], e - s)
            amp = added[s:e] @ shape / (shape @ shape)  # least squares: added = amp * shape
            np.testing.assert_allclose(added[s:e], amp * shape, atol=1e-5 * max(1, abs(amp)))
            assert 2.0 - 1e-4 <= abs(amp) / scale <= 3.0 + 1e-4
        s, e = spans(masks[i, 2])[0]  # 3-5 single-step spikes, the first and last at the ends
        spikes = np.flatnonzero(added[s:e])
        assert 3 <= len(spikes) <= 5 and spikes[0] == 0 and spikes[-1] == e - s - 1
        assert np.all((np.abs(added[s:e][spikes]) / scale >= 2.0 - 1e-4)
                      & (np.abs(added[s:e][spikes]) / scale <= 3.0 + 1e-4))


def test_motif_shapes_are_the_four_named_ones():
    t = 32
    assert motif_shape("bump", t).argmax() in (15, 16) and motif_shape("bump", t).min() > 0
    plateau = motif_shape("plateau", t)
    assert (plateau[1:-1] == 1).all() and plateau[0] == plateau[-1] == 0.5
    saw = motif_shape("sawtooth", t)
    assert (np.diff(saw) < 0).sum() == 1 and (np.diff(saw) > 0).sum() == t - 2  # two ramps
    chirp = motif_shape("chirp", t)
    crossings = np.flatnonzero(np.diff(np.sign(chirp)) != 0)
    gaps = np.diff(crossings)
    assert gaps[0] > gaps[-1]  # the frequency rises over the motif
    with pytest.raises(UserError, match="unknown motif"):
        motif_shape("zigzag", t)


def test_signs_are_random(motifs):
    x, _, masks, bg = motifs
    signs = [np.sign((x[i, 0] - bg[i, 0])[masks[i, 0]].sum()) for i in range(len(x))]
    assert 20 < sum(s > 0 for s in signs) < 100


def test_seeded_and_train_test_from_different_streams():
    a = SyntheticMotifsDataModule(n_train=12, n_test=12, seed=5)
    b = SyntheticMotifsDataModule(n_train=12, n_test=12, seed=5)
    c = SyntheticMotifsDataModule(n_train=12, n_test=12, seed=6)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.split("train").x, b.split("train").x)
    assert torch.equal(a.eval_part_masks(), b.eval_part_masks())
    assert not torch.equal(a.split("train").x, a.split("test").x)
    assert not torch.equal(a.split("train").x, c.split("train").x)


def test_the_datamodule_interface(tmp_path):
    dm = SyntheticMotifsDataModule(n_train=12, n_test=9, batch_size=4, max_samples=7)
    dm.setup()
    assert dm.input_shape == (1, 256) and dm.num_classes == 6
    x, y = dm.eval_tensors()
    parts = dm.eval_part_masks()
    assert parts.shape == (7, 3, 256) and dm.eval_backgrounds().shape == (7, 1, 256)
    assert torch.equal(dm.eval_masks(), parts[:, 0] | parts[:, 1])
    outside = ~parts.any(1, keepdim=True)
    assert torch.equal(x[outside], dm.eval_backgrounds()[outside])
    xb, yb, idx = next(iter(dm.train_dataloader()))
    assert xb.shape == (4, 1, 256) and yb.dtype == torch.long and len(idx) == 4
    assert dm.class_names[0] == CLASSES[int(y[0])]


def test_bad_arguments_are_refused():
    with pytest.raises(UserError, match="n_train"):
        SyntheticMotifsDataModule(n_train=0)
    with pytest.raises(UserError, match="length must be >= 112"):
        SyntheticMotifsDataModule(length=100)
    with pytest.raises(UserError, match="gap"):
        make_motifs(3, gap=-1)


TINY = ["experiment=concepts_motifs", "logger=csv", "data.n_train=60", "data.n_test=12", "data.batch_size=20",
        "data.eval_batch_size=6", "trainer.max_epochs=1", "callbacks.concepts.sub_concepts=0",
        "callbacks.concepts.max_figures=0", "callbacks.concepts.control_repeats=3", "callbacks.concepts.n_init=2",
        "callbacks.concepts.class_figures=0", "model.model_kwargs={widths: [8, 16, 8]}"]


def test_concepts_motifs_writes_the_truth_tables(tmp_path):
    import json

    import pandas as pd

    from tests.helpers.run import train

    out = tmp_path / "run"
    train(TINY, out)
    truth = pd.read_csv(out / "concept_truth.csv")
    assert set(truth["partition"]) == {"concepts", "random"} and set(truth["method"]) == {"cgap", "cpha"}
    assert (truth["n_images"] == 12).all()
    # the area share of the class region is |A u B| / L of the test series
    from omegaconf import OmegaConf

    dm = SyntheticMotifsDataModule(n_train=60, n_test=12, seed=OmegaConf.load(out / "config.yaml").data.seed)
    area = dm.eval_masks().double().mean().item()
    assert truth["class_part_area"].tolist() == pytest.approx([area] * len(truth))
    assert {"deletion_auc", "insertion_auc"} <= set(pd.read_csv(out / "concept_fidelity.csv").columns)
    classes = pd.read_csv(out / "class_concepts_truth.csv")
    assert {"coassociation", "random"} <= set(classes["source"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"paint_out/drop_part_a", "paint_out/drop_part_b", "paint_out/drop_distractor"} <= set(metrics)
