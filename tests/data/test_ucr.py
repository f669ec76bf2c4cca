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


def test_nan_inside_a_series_is_interpolated_or_a_clear_error(tmp_path):
    _write_archive(tmp_path, rows_train=[[1, 1, 2, float("nan"), 4], [2, 1, 2, 3, 4]])
    dm = UCRDataModule(name="Toy", data_root=str(tmp_path))
    dm.setup()
    # the gap between 2 and 4 filled with 3: the same series as the complete second row
    torch.testing.assert_close(dm.data_train.x[0], dm.data_train.x[1])
    strict = UCRDataModule(name="Toy", data_root=str(tmp_path), missing="error")
    with pytest.raises(ValueError, match=r"Toy_TRAIN.tsv row 1 \(line 1\) has a missing value "
                       r"\(channel 1, step 3\)"):
        strict.setup()


def test_nan_padded_variable_length_rows(tmp_path):
    """The UCR 2018 convention: trailing NaN pad a shorter series."""
    nan = float("nan")
    _write_archive(tmp_path, rows_train=[[1, 0, 2, 4, nan, nan], [2, 0, 1, 2, 3, 4]],
                   rows_test=[[1, 4, 2, 0, nan, nan], [2, 1, 2, 3, 4, 5]])
    dm = UCRDataModule(name="Toy", data_root=str(tmp_path))
    dm.setup()
    assert dm.input_shape == (1, 5)
    # [0, 2, 4] resampled to 5 steps is the line [0, 1, 2, 3, 4]: the second series
    torch.testing.assert_close(dm.data_train.x[0], dm.data_train.x[1])
    pad = UCRDataModule(name="Toy", data_root=str(tmp_path), variable_length="pad")
    pad.setup()
    x = pad.data_train.x[0, 0]
    assert x[3:].tolist() == [0.0, 0.0]
    expected = (np.array([0.0, 2.0, 4.0]) - 2) / np.sqrt(8 / 3)
    np.testing.assert_allclose(x[:3].numpy(), expected, rtol=1e-6)
    cut = UCRDataModule(name="Toy", data_root=str(tmp_path), variable_length="truncate")
    cut.setup()
    assert cut.input_shape == (1, 3)
    np.testing.assert_allclose(cut.data_train.x[1, 0].numpy(), expected, rtol=1e-6)  # 0, 1, 2


def test_malformed_tsv_row_names_file_row_and_column(tmp_path):
    folder = _write_archive(tmp_path)
    (folder / "Toy_TEST.tsv").write_text("1\t1\t1\t1\t2\n2\t5\t4\tx3\t2\n")
    with pytest.raises(ValueError, match=r"Toy_TEST.tsv: row 2, column 4 \(value 3 of the series\) "
                       r"is 'x3', not a number"):
        UCRDataModule(name="Toy", data_root=str(tmp_path)).setup()
    (folder / "Toy_TEST.tsv").write_text("1\t1\t1\t1\t2\n\t5\t4\t3\t2\n")
    with pytest.raises(ValueError, match=r"row 2, column 1 \(the class label\) is ''"):
        UCRDataModule(name="Toy", data_root=str(tmp_path)).setup()
    (folder / "Toy_TEST.tsv").write_text("1\t1\t1\t1\t2\n2\t5\t4\n")
    with pytest.raises(ValueError, match=r"row 2 has 3 columns but row 1 has 5 \(pad shorter"):
        UCRDataModule(name="Toy", data_root=str(tmp_path)).setup()
    (folder / "Toy_TEST.tsv").write_text("1\t1\t1\t1\t2\nnan\t5\t4\t3\t2\n")
    with pytest.raises(ValueError, match=r"row 2 has no class label"):
        UCRDataModule(name="Toy", data_root=str(tmp_path)).setup()


def test_labels_are_ordered_by_value_not_by_text(tmp_path):
    rows = [[10, 1, 2, 3], [2, 3, 2, 1], [1, 1, 3, 2]]
    _write_archive(tmp_path, rows_train=rows, rows_test=rows)
    dm = UCRDataModule(name="Toy", data_root=str(tmp_path))
    dm.setup()
    assert dm.classes.tolist() == ["1", "2", "10"]
    assert dm.data_train.y.tolist() == [2, 1, 0]


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="unknown variable_length 'stretch'"):
        UCRDataModule(name="Trace", variable_length="stretch")
    with pytest.raises(ValueError, match="unknown missing 'drop'"):
        UCRDataModule(name="Trace", missing="drop")


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
    assert f"{tmp_path}/Adiac/Adiac_TRAIN.ts" in msg and "Adiac_TRAIN.tsv" in msg
    assert "Trace (tslearn)" in msg and "BasicMotions" in msg and "download" in msg


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


def test_download_extracts_the_ts_files_of_the_zip_once(tmp_path, monkeypatch):
    import io
    import zipfile

    head = "@problemName Zipped\n@univariate true\n@equalLength true\n@classLabel true 1 2\n@data\n"
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as zf:
        zf.writestr("Zipped/Zipped_TRAIN.ts", head + "1,2,3,4:1\n4,3,2,1:2\n")
        zf.writestr("Zipped/Zipped_TEST.ts", head + "1,1,2,2:2\n")
        zf.writestr("Zipped/Zipped_TRAIN.arff", "not read")
    calls = []

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(url, timeout):
        calls.append(url)
        return Response(payload.getvalue())

    monkeypatch.setattr(ucr.urllib.request, "urlopen", fake_urlopen)
    dm = UCRDataModule(name="Zipped", data_root=str(tmp_path), source="download")
    dm.setup()
    assert calls == ["https://www.timeseriesclassification.com/aeon-toolkit/Zipped.zip"]
    assert sorted(p.name for p in (tmp_path / "Zipped").iterdir()) == ["Zipped_TEST.ts", "Zipped_TRAIN.ts"]
    assert dm.sources["train"].startswith("download ") and dm.input_shape == (1, 4)
    assert dm.data_train.y.tolist() == [0, 1] and dm.data_eval.y.tolist() == [1]
    UCRDataModule(name="Zipped", data_root=str(tmp_path), source="download").setup()
    assert len(calls) == 1  # the files from the first download are used
