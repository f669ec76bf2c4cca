"""``data.on_bad_file=skip`` for series archives: the rows of a ``.ts`` or UCR table file that
cannot be read are left out, each named (file, row, line) with its reason in
``skipped_inputs.csv``; the default stays ``error``."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from clustercam import outputs
from clustercam.data.ts_files import read_table, read_ts
from clustercam.data.ucr import UCRDataModule
from clustercam.exceptions import UserError
from clustercam.runtime.status import record_skipped_inputs
from tests.data.test_ts_files import write_ts

GOOD = [([[1, 2, 3], [3, 2, 1]], "a"), ([[4, 5, 6], [6, 5, 4]], "b"), ([[1, 1, 2], [2, 1, 1]], "b")]
BAD = [([[1, 2, 3], [3, "oops", 1]], "a"),  # row 2: not a number
       "4,5,6:6,5,4",  # row 3: one channel (the label missing)
       ([[1, 2, 4], [4, 2, 1]], "c"),  # row 5: a label the header does not list
       ([[1, 2, 3, 4], [4, 3, 2, 1]], "a")]  # row 7: length 4, the header says equal lengths (3)
ROWS = [GOOD[0], BAD[0], BAD[1], GOOD[1], BAD[2], GOOD[2], BAD[3]]


def test_a_ts_file_keeps_its_good_rows_and_names_the_others(tmp_path) -> None:
    folder = write_ts(tmp_path, "Mixed", ROWS, GOOD, channels=2)
    split = read_ts(folder / "Mixed_TRAIN.ts", on_bad_file="skip")
    assert split.labels.tolist() == ["a", "b", "b"]
    np.testing.assert_array_equal(split.series[1], [[4, 5, 6], [6, 5, 4]])
    assert split.first_line == 10 and split.lines == [10, 13, 15]  # 9 header lines: row r is line 9 + r
    assert split.row(1) == f"{folder / 'Mixed_TRAIN.ts'} row 4 (line 13)"
    found = {where.split(" ", 1)[1]: why for where, why in split.skipped}
    assert sorted(found) == ["row 2 (line 11)", "row 3 (line 12)", "row 5 (line 14)", "row 7 (line 16)"]
    assert "'oops', not a number" in found["row 2 (line 11)"]
    assert "is the class label missing?" in found["row 3 (line 12)"]
    assert "class label 'c'" in found["row 5 (line 14)"]
    assert "has length 4 but row 1 has 3" in found["row 7 (line 16)"]
    with pytest.raises(ValueError, match=r"Mixed_TRAIN.ts: row 2 \(line 11\), channel 2, value 2 is 'oops'"):
        read_ts(folder / "Mixed_TRAIN.ts")  # the default: the first bad row fails
    clean = read_ts(tmp_path / "Mixed" / "Mixed_TEST.ts", on_bad_file="skip")
    assert clean.skipped == [] and clean.lines is None and len(clean) == 3


def test_a_ucr_table_keeps_its_good_rows_and_names_the_others(tmp_path) -> None:
    path = tmp_path / "T_TRAIN.tsv"
    path.write_text("1\t0.5\t0.25\t1\n2\t1\tabc\t3\nnan\t1\t2\t3\n\n2\t3\t2\t1\n1\t1\t1\n")
    split = read_table(path, on_bad_file="skip")
    assert split.labels.tolist() == ["1", "2"] and split.lines == [1, 5]
    np.testing.assert_array_equal(split.series[1], [[3, 2, 1]])
    assert split.row(1) == f"{path} row 5 (line 5)"
    assert [w for w, _ in split.skipped] == [f"{path} row {r}" for r in (2, 3, 6)]
    reasons = [r for _, r in split.skipped]
    assert "'abc', not a number" in reasons[0] and "no class label" in reasons[1] and "3 columns" in reasons[2]
    with pytest.raises(ValueError, match=r"row 2, column 3 \(value 2 of the series\) is 'abc'"):
        read_table(path)
    path.write_text("x\t1\n")
    with pytest.raises(ValueError, match="no row can be read"):
        read_table(path, on_bad_file="skip")


def test_the_datamodule_lists_the_skipped_rows_for_the_run_folder(tmp_path) -> None:
    write_ts(tmp_path / "archive", "Mixed", ROWS, [*GOOD, BAD[0]], channels=2)
    dm = UCRDataModule(name="Mixed", data_root=str(tmp_path / "archive"), batch_size=2, on_bad_file="skip")
    skipped = dm.skipped_inputs  # read before training
    assert len(skipped) == 5 and sum("Mixed_TEST.ts row 4 (line 13)" in s.file for s in skipped) == 1
    record_skipped_inputs(tmp_path / "run", dm)
    with open(tmp_path / "run" / outputs.SKIPPED_INPUTS) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == [s.file for s in skipped] and all(r["reason"] for r in rows)
    dm.setup()
    assert len(dm.data_train) == 3 and len(dm.data_eval) == 3
    with pytest.raises(ValueError, match=r"Mixed_TRAIN.ts: row 2 \(line 11\)"):
        UCRDataModule(name="Mixed", data_root=str(tmp_path / "archive"), batch_size=2).setup()  # default: error
    with pytest.raises(UserError, match="on_bad_file"):
        UCRDataModule(name="Mixed", on_bad_file="ignore")
