"""The ``.ts`` path (aeon's loader) on small files written here, the sets aeon ships, and
every bad-input case as one clear message naming the file and row."""

import logging

import numpy as np
import pytest
import torch

from clustercam.data.ts_files import read_ts
from clustercam.data.ts_prepare import interpolate_missing, resample_linear
from clustercam.data.ts_sources import aeon_shipped
from clustercam.data.ucr import UCRDataModule


def _header(name, labels, channels=1, equal=True, missing=False, length=None):
    lines = [f"# a test file for {name}", f"@problemName {name}", "@timeStamps false",
             f"@missing {str(missing).lower()}", f"@univariate {str(channels == 1).lower()}"]
    if channels > 1:
        lines.append(f"@dimensions {channels}")
    lines.append(f"@equalLength {str(equal).lower()}")
    if length is not None:
        lines.append(f"@seriesLength {length}")
    lines += [f"@classLabel true {' '.join(labels)}", "@data"]
    return lines


def _row(channels, label):
    return ":".join(",".join(str(v) for v in ch) for ch in channels) + f":{label}"


def write_ts(root, name, train, test, labels=("a", "b"), **header):
    """``train``/``test``: lists of (channels, label); channels a list of value lists."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("TRAIN", train), ("TEST", test)):
        body = [r if isinstance(r, str) else _row(*r) for r in rows]
        (folder / f"{name}_{split}.ts").write_text("\n".join(_header(name, labels, **header) + body) + "\n")
    return folder


def _dm(root, name, **kw):
    dm = UCRDataModule(name=name, data_root=str(root), batch_size=2, **kw)
    dm.setup()
    return dm


def test_univariate_equal_length(tmp_path):
    write_ts(tmp_path, "Uni", [([[1, 2, 3, 4]], "b"), ([[4, 3, 2, 1]], "a")], [([[0, 0, 1, 1]], "a")])
    dm = _dm(tmp_path, "Uni")
    assert dm.input_shape == (1, 4) and dm.sources["train"].endswith("Uni_TRAIN.ts")
    assert dm.data_train.y.tolist() == [1, 0] and dm.data_eval.y.tolist() == [0]
    expected = (np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25)
    np.testing.assert_allclose(dm.data_train.x[0, 0].numpy(), expected, rtol=1e-6)


def test_multivariate_each_channel_normalised_on_its_own(tmp_path):
    # channel 2 is channel 1 x 100 + 7: after per-channel z-normalisation they are equal
    a, b = [1, 2, 3, 5], [5, 1, 0, 2]
    rows = [([a, [100 * v + 7 for v in a], [3, 3, 3, 3]], "a"), ([b, [100 * v + 7 for v in b], b], "b")]
    write_ts(tmp_path, "Multi", rows, rows[:1], channels=3)
    dm = _dm(tmp_path, "Multi")
    x = dm.data_train.x
    assert dm.input_shape == (3, 4)
    torch.testing.assert_close(x[:, 0], x[:, 1])
    assert (x[0, 2] == 0).all()  # a constant channel becomes zeros
    torch.testing.assert_close(x[1, 2], x[1, 0])
    torch.testing.assert_close(x[:, :2].mean(-1), torch.zeros(2, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(x[:, :2].std(-1, unbiased=False), torch.ones(2, 2), atol=1e-5, rtol=0)


def test_unequal_lengths_resampled_by_default_and_said_in_the_log(tmp_path, caplog):
    train = [([[0, 2, 4], [4, 2, 0]], "a"), ([[0, 1, 2, 3, 4], [1, 1, 2, 2, 3]], "b")]
    test = [([[5, 1, 3, 0], [0, 1, 0, 1]], "b")]
    write_ts(tmp_path, "Var", train, test, channels=2, equal=False)
    with caplog.at_level(logging.INFO):
        dm = _dm(tmp_path, "Var")
    assert dm.input_shape == (2, 5)
    assert "lengths 3 to 5 over train and test" in caplog.text and "resampled linearly" in caplog.text
    # [0, 2, 4] stretched to 5 steps is [0, 1, 2, 3, 4]; the reversed channel too
    torch.testing.assert_close(dm.data_train.x[0, 0], dm.data_train.x[1, 0])
    torch.testing.assert_close(dm.data_train.x[0, 1], dm.data_train.x[1, 0].flip(0))
    assert _dm(tmp_path, "Var", variable_length="pad").data_train.x[0, :, 3:].abs().sum() == 0
    assert _dm(tmp_path, "Var", variable_length="truncate").input_shape == (2, 3)
    with pytest.raises(ValueError, match=r"Var has series of different lengths \(3 to 5: "
                       r".*Var_TRAIN.ts row 1 \(line 10\) has 3, .*Var_TRAIN.ts row 2 \(line 11\) has 5\)"):
        _dm(tmp_path, "Var", variable_length="error")


def test_missing_values_filled_linearly(tmp_path):
    train = [([[1, "?", 3, 4], [2, 2, "?", "?"]], "a"), ([[1, 2, 3, 4], [2, 2, 2, 2]], "b")]
    write_ts(tmp_path, "Gaps", train, train[1:], channels=2, missing=True)
    dm = _dm(tmp_path, "Gaps")
    torch.testing.assert_close(dm.data_train.x[0], dm.data_train.x[1])  # 1,2,3,4 and 2,2,2,2
    with pytest.raises(ValueError, match=r"Gaps_TRAIN.ts row 1 \(line 10\) has a missing value "
                       r"\(channel 1, step 2\)"):
        _dm(tmp_path, "Gaps", missing="error")


def test_interpolation_and_resampling_helpers_by_hand():
    s = np.array([[np.nan, 1.0, np.nan, 3.0, np.nan], [np.nan] * 5])
    np.testing.assert_allclose(interpolate_missing(s), [[1, 1, 2, 3, 3], [0, 0, 0, 0, 0]])
    np.testing.assert_allclose(resample_linear(np.array([[0.0, 3.0]]), 4), [[0, 1, 2, 3]])
    np.testing.assert_allclose(resample_linear(np.array([[2.0]]), 3), [[2, 2, 2]])


def test_aeon_shipped_basicmotions_offline():
    assert {"basicmotions", "japanesevowels", "arrowhead", "italypowerdemand"} <= set(aeon_shipped())
    dm = UCRDataModule(name="BasicMotions", source="package")
    dm.setup()
    assert dm.sources["train"].startswith("aeon ") and dm.sources["train"].endswith("BasicMotions_TRAIN.ts")
    assert dm.input_shape == (6, 100) and dm.num_classes == 4
    assert (len(dm.data_train), len(dm.data_eval)) == (40, 40)
    assert dm.classes.tolist() == ["badminton", "running", "standing", "walking"]
    assert torch.bincount(dm.data_train.y).tolist() == [10, 10, 10, 10]
    x = dm.data_eval.x
    torch.testing.assert_close(x.std(-1, unbiased=False), torch.ones(40, 6), atol=1e-4, rtol=0)


# -- bad input: one ValueError naming the file and the row -----------------------------
def test_dimensions_differ_between_train_and_test(tmp_path):
    folder = write_ts(tmp_path, "Dims", [([[1, 2, 3], [3, 2, 1]], "a")], [([[1, 2, 3], [3, 2, 1]], "b")],
                      channels=2)
    (folder / "Dims_TEST.ts").write_text("\n".join(_header("Dims", ["a", "b"]) + ["1,2,3:b"]) + "\n")
    with pytest.raises(ValueError, match=r"different dimensions: .*Dims_TRAIN.ts has 2 channels; "
                       r".*Dims_TEST.ts has 1 channel$"):
        _dm(tmp_path, "Dims")


def test_missing_class_label(tmp_path):
    write_ts(tmp_path, "NoLab", [([[1, 2, 3], [3, 2, 1]], "a"), "4,5,6:6,5,4"], [([[1, 2, 3], [1, 1, 1]], "b")],
             channels=2)
    with pytest.raises(ValueError, match=r"cannot read .*NoLab_TRAIN.ts: row 2 \(line 11\) has 1 channel, "
                       r"expected 2 \(is the class label missing\?\)"):
        _dm(tmp_path, "NoLab")
    write_ts(tmp_path, "Empty", [([[1, 2, 3]], "a"), "4,5,6:"], [([[1, 2, 3]], "b")])
    with pytest.raises(ValueError, match=r"Empty_TRAIN.ts row 2 \(line 10\) has no class label"):
        _dm(tmp_path, "Empty")
    write_ts(tmp_path, "Unknown", [([[1, 2, 3]], "a"), ([[1, 2, 4]], "c")], [([[1, 2, 3]], "b")])
    with pytest.raises(ValueError, match=r"Unknown_TRAIN.ts row 2 \(line 10\) has class label 'c', "
                       r"which the header's @classLabel list \['a', 'b'\] does not name"):
        _dm(tmp_path, "Unknown")


def test_channels_of_different_lengths_within_one_series(tmp_path):
    write_ts(tmp_path, "Ragged", [([[1, 2, 3], [3, 2, 1]], "a"), ([[1, 2, 3, 4], [3, 2]], "b")],
             [([[1, 2, 3], [1, 1, 1]], "b")], channels=2, equal=False)
    with pytest.raises(ValueError, match=r"Ragged_TRAIN.ts: row 2 \(line 11\): its channels have "
                       r"different lengths \[4, 2\]"):
        _dm(tmp_path, "Ragged")


def test_a_value_that_is_not_a_number(tmp_path):
    write_ts(tmp_path, "Text", [([[1, 2, 3], [3, 2, 1]], "a"), ([[1, 2, 3], [3, "oops", 1]], "b")],
             [([[1, 2, 3], [1, 1, 1]], "b")], channels=2)
    with pytest.raises(ValueError, match=r"Text_TRAIN.ts: row 2 \(line 11\), channel 2, value 2 is 'oops', "
                       r"not a number"):
        _dm(tmp_path, "Text")


def test_regression_file_is_refused(tmp_path):
    folder = tmp_path / "Reg"
    folder.mkdir()
    for split in ("TRAIN", "TEST"):
        (folder / f"Reg_{split}.ts").write_text(
            "@problemName Reg\n@univariate true\n@equalLength true\n@targetLabel true\n@data\n1,2,3:0.5\n")
    with pytest.raises(ValueError, match=r"Reg_TRAIN.ts: the header has no '@classLabel true"):
        read_ts(folder / "Reg_TRAIN.ts")
