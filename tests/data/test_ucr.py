"""UCR loading: the archive TSV layout, the packaged copies, and the clear error offline."""

import numpy as np
import pytest
import torch

from clustercam.data import ucr
from clustercam.data.ucr import DatasetUnavailableError, UCRDataModule, znormalise


def _write_archive(root, name="Toy", rows_train=None, rows_test=None):
    folder = root / name
    folder.mkdir(parents=True)
    rows_train = rows_train or [[2, 1, 2, 3, 4], [1, 4, 3, 2, 1], [2, 0, 1, 0, 1]]
    rows_test = rows_test or [[1, 1, 1, 2, 2], [2, 5, 4, 3, 2]]
    for split, rows in (("TRAIN", rows_train), ("TEST", rows_test)):
        lines = ["\t".join(str(v) for v in r) for r in rows]
        (folder / f"{name}_{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_archive_tsv_layout(tmp_path):
    _write_archive(tmp_path)
    dm = UCRDataModule(name="Toy", data_root=str(tmp_path), batch_size=2)
    dm.setup()
    assert dm.sources["train"].startswith("archive")
    assert dm.input_shape == (1, 4)
    x, y = dm.eval_tensors()
    # labels {1, 2} -> {0, 1}, shared by both splits
    assert y.tolist() == [0, 1]
    assert dm.data_train.y.tolist() == [1, 0, 1]
    # each series z-normalised: [1,2,3,4] -> mean 2.5, std sqrt(1.25)
    expected = (np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25)
    np.testing.assert_allclose(dm.data_train.x[0, 0].numpy(), expected, rtol=1e-6)
    assert dm.num_classes == 2
    xb, yb, idx = next(iter(dm.test_dataloader()))
    assert idx.tolist() == [0, 1] and xb.shape == (2, 1, 4)


def test_nan_in_a_series_is_a_clear_error(tmp_path):
    _write_archive(tmp_path, rows_train=[[1, 1, 2, float("nan"), 4], [2, 1, 2, 3, 4]])
    dm = UCRDataModule(name="Toy", data_root=str(tmp_path))
    with pytest.raises(ValueError, match=r"NaN in 1 series \(rows \[0\]\)"):
        dm.setup()


@pytest.mark.parametrize(
    "name, shape, classes, n_train, n_test",
    [("Trace", (1, 275), 4, 100, 100), ("Coffee", (1, 286), 2, 28, 28), ("CBF", (1, 128), 3, 30, 900)],
)
def test_packaged_sources(name, shape, classes, n_train, n_test):
    dm = UCRDataModule(name=name)
    dm.setup()
    assert dm.input_shape == shape
    assert dm.num_classes == classes
    assert (len(dm.data_train), len(dm.data_eval)) == (n_train, n_test)
    x = dm.data_eval.x
    torch.testing.assert_close(x.mean(-1), torch.zeros(x.shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(-1, unbiased=False), torch.ones(x.shape[:2]), atol=1e-4, rtol=0)


def test_cbf_generator_is_seeded_and_splits_differ():
    a = UCRDataModule(name="CBF", seed=1).split("train").x
    b = UCRDataModule(name="CBF", seed=1).split("train").x
    c = UCRDataModule(name="CBF", seed=2).split("train").x
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    test = UCRDataModule(name="CBF", seed=1).split("test").x
    assert not torch.equal(a, test[:30])


def test_unavailable_dataset_is_one_clear_message(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(ucr.urllib.request, "urlopen", offline)
    dm = UCRDataModule(name="Adiac", data_root=str(tmp_path))
    with pytest.raises(DatasetUnavailableError) as err:
        dm.setup()
    msg = str(err.value)
    assert "'Adiac' is not available" in msg
    assert f"{tmp_path}/Adiac/Adiac_TRAIN.tsv" in msg
    assert "tslearn" not in msg or "Trace" in msg
    assert "Trace" in msg and "download" in msg


def test_unknown_source_and_archive_without_root():
    with pytest.raises(ValueError, match="unknown UCR source 'ftp'"):
        UCRDataModule(name="Trace", source="ftp")
    with pytest.raises(DatasetUnavailableError, match="data_root is not set"):
        UCRDataModule(name="Trace", source="archive").setup()


def test_znormalise_constant_series_is_zero():
    x = np.array([[[3.0, 3.0, 3.0]], [[1.0, 2.0, 3.0]]])
    out = znormalise(x)
    assert (out[0] == 0).all()
    np.testing.assert_allclose(out[1, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
