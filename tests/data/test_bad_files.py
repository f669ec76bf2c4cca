"""Unreadable inputs: a photo folder's empty, cut-off and non-image files are skipped (one
warning each, listed in skipped_inputs.csv) or refused before the run
(``data.on_bad_file=error``); a series archive's broken row stops the run naming file and row."""

import csv
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clustercam import outputs
from clustercam.data.image_files import check_image_files, image_problem, read_image
from clustercam.data.imagenet_subset import ImageNetSubsetDataModule
from clustercam.exceptions import BadInputFileError
from clustercam.runtime.errors import user_error_message
from tests.helpers.run import cli, train


def write_folder(root: Path, n: int = 3, seed: int = 0) -> dict[str, Path]:
    """Two class folders of ``n`` good 40 px images each (JPEG in a/, PNG in b/), and three
    bad files: a JPEG cut in half, an empty JPEG, a text file named .png."""
    rng = np.random.default_rng(seed)
    for folder, ext in (("a", "jpg"), ("b", "png")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = (rng.random((40, 40, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(root / folder / f"{folder}{i}.{ext}")
    good = (root / "a" / "a0.jpg").read_bytes()
    bad = {"truncated": root / "a" / "img_cut.jpg", "empty": root / "b" / "img_empty.jpg",
           "text": root / "b" / "notes.png"}
    bad["truncated"].write_bytes(good[: len(good) // 2])
    bad["empty"].write_bytes(b"")
    bad["text"].write_text("not an image")
    return bad


def test_each_kind_of_bad_file_is_named_with_its_reason(tmp_path):
    bad = write_folder(tmp_path)
    assert image_problem(tmp_path / "a" / "a0.jpg") is None
    assert image_problem(tmp_path / "b" / "b0.png") is None
    assert image_problem(bad["truncated"]).startswith("truncated or corrupt (image file is truncated")
    assert image_problem(bad["empty"]) == "empty (0 bytes)"
    assert image_problem(bad["text"]).startswith("not an image")
    # a cut-off PNG fails its chunk checks; a JPEG with bytes after its end marker is fine
    png = (tmp_path / "b" / "b0.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    assert image_problem(tmp_path / "cut.png").startswith("truncated or corrupt")
    (tmp_path / "trailer.jpg").write_bytes((tmp_path / "a" / "a0.jpg").read_bytes() + b"\0" * 4000)
    assert image_problem(tmp_path / "trailer.jpg") is None
    # the image a trailer follows decodes as before
    assert read_image(tmp_path / "trailer.jpg").tobytes() == read_image(tmp_path / "a" / "a0.jpg").tobytes()


def test_skip_warns_once_per_file_and_counts_error_names_the_first(tmp_path, caplog):
    bad = write_folder(tmp_path)
    paths = sorted(tmp_path.rglob("*.*"))
    with caplog.at_level(logging.WARNING, logger="clustercam.data.image_files"):
        kept, skipped = check_image_files(paths, "skip")
    assert [paths[i] for i in kept] == sorted(set(paths) - set(bad.values()))
    assert {s.file for s in skipped} == {str(p) for p in bad.values()}
    lines = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("skipping ") for m in lines) == 3
    assert lines[-1] == "3 of 9 image files skipped: they cannot be read"
    with pytest.raises(BadInputFileError, match=r"cannot read image file '.*img_cut.jpg': truncated"):
        check_image_files(paths, "error")
    # max_images: the check stops once enough readable files are found
    kept, skipped = check_image_files(paths, "skip", limit=2)
    assert len(kept) == 2 and len(skipped) <= 1
    with pytest.raises(ValueError, match=r"data.on_bad_file must be one of \('skip', 'error'\), got 'ignore'"):
        check_image_files(paths, "ignore")


def test_the_datamodule_leaves_bad_files_out_and_names_images_apart(tmp_path):
    bad = write_folder(tmp_path)
    dm = ImageNetSubsetDataModule(tmp_path, model_name="test_resnet", class_map={"a": 0, "b": 1},
                                  batch_size=4, preprocessing={"input_size": (3, 32, 32)})
    assert len(dm.image_paths) == 6 and not set(dm.image_paths) & set(bad.values())
    assert dm.targets == [0, 0, 0, 1, 1, 1]
    assert [dm.image_name(i) for i in (0, 3)] == ["a0", "b0"]
    (tmp_path / "b" / "a0.png").write_bytes((tmp_path / "b" / "b0.png").read_bytes())
    same = ImageNetSubsetDataModule(tmp_path, model_name="test_resnet", class_map={"a": 0, "b": 1})
    names = [same.image_name(i) for i in range(len(same.image_paths))]  # a/a0.jpg and b/a0.png
    assert names == ["a_a0", "a1", "a2", "b_a0", "b0", "b1", "b2"] and len(set(names)) == 7
    (tmp_path / "b" / "a0.png").unlink()
    batches = list(dm.test_dataloader())
    assert sum(len(b[0]) for b in batches) == 6
    with pytest.raises(BadInputFileError, match="img_cut.jpg"):
        ImageNetSubsetDataModule(tmp_path, model_name="test_resnet", class_map={"a": 0, "b": 1},
                                 on_bad_file="error")
    # max_images counts readable images: 4 of them although a bad file comes among the first
    dm = ImageNetSubsetDataModule(tmp_path, model_name="test_resnet", class_map={"a": 0, "b": 1},
                                  max_images=4)
    assert len(dm.image_paths) == 4 and bad["truncated"] not in dm.image_paths


# a concept run on the folder: test_resnet at 48 px, nothing slow
CONCEPT_RUN = ["experiment=concepts_imagenet", "logger=none", "model.name=test_resnet",
               "model.pretrained=false", "model.num_classes=2", "+model.model_kwargs.output_stride=8",
               "data.class_map={a:0,b:1}", "data.batch_size=2",
               "data.preprocessing={input_size:[3,48,48],mean:[0,0,0],std:[1,1,1],crop_pct:1.0,"
               "interpolation:bilinear}", "callbacks.concepts.sub_concepts=0",
               "callbacks.concepts.figures=false", "callbacks.concepts.fidelity=false",
               "callbacks.concepts.class_concepts=false"]


def test_a_concept_run_skips_bad_files_and_lists_them(tmp_path):
    folder, out = tmp_path / "images", tmp_path / "run"
    bad = write_folder(folder)
    train([*CONCEPT_RUN, f"data.data_dir={folder}"], out)
    with open(out / outputs.SKIPPED_INPUTS) as fh:
        rows = list(csv.DictReader(fh))
    assert {r["file"] for r in rows} == {str(p) for p in bad.values()}
    assert all(r["reason"] for r in rows)
    assert json.loads((out / outputs.STATUS).read_text())["skipped_inputs"] == 3
    assert json.loads((out / outputs.STATUS).read_text())["status"] == "finished"
    # the same outputs as a run on the folder without the bad files (into the same folder:
    # the earlier list goes, it described the earlier run)
    first = pd.read_csv(out / "concepts_per_image.csv")
    for p in bad.values():
        p.unlink()
    train([*CONCEPT_RUN, f"data.data_dir={folder}"], out)
    assert not (out / outputs.SKIPPED_INPUTS).exists()
    pd.testing.assert_frame_equal(first, pd.read_csv(out / "concepts_per_image.csv"))


def test_on_bad_file_error_stops_the_run_before_it_starts_naming_the_file(tmp_path):
    folder, out = tmp_path / "images", tmp_path / "run"
    write_folder(folder)
    message = f"cannot read image file '{folder / 'a' / 'img_cut.jpg'}': truncated"
    with pytest.raises(Exception, match=re.escape(message)) as err:  # Hydra wraps it
        train([*CONCEPT_RUN, f"data.data_dir={folder}", "data.on_bad_file=error"], out)
    assert user_error_message(err.value).startswith(f"error: {message}")  # one line at the CLI
    assert (out / "config.yaml").is_file()  # what was written stays
    status = json.loads((out / outputs.STATUS).read_text())
    assert status["status"] == "failed" and status["message"].startswith(message)


def test_a_broken_row_of_a_series_archive_stops_the_run_naming_file_and_row(tmp_path):
    archive, out = tmp_path / "archive", tmp_path / "run"
    (archive / "Tiny").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("TRAIN", "TEST"):
        rows = [[1 + i % 2, *rng.normal(size=12).round(3)] for i in range(8)]
        lines = ["\t".join(map(str, r)) for r in rows]
        if split == "TEST":
            fields = lines[4].split("\t")
            lines[4] = "\t".join([fields[0], "abc", *fields[2:]])  # row 5: a value that is not a number
        (archive / "Tiny" / f"Tiny_{split}.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"cannot read .*Tiny_TEST.tsv: row 5, column 2 .* is 'abc', not a number"):
        train(["experiment=trace", "logger=none", "data.name=Tiny", f"data.data_root={archive}",
               "data.source=archive", "trainer.max_epochs=1"], out)
    assert (out / "config.yaml").is_file()
    status = json.loads((out / outputs.STATUS).read_text())
    assert status["status"] == "failed" and "Tiny_TEST.tsv: row 5" in status["message"]


@pytest.mark.slow
def test_ddp_ranks_skip_the_same_files_and_gather_the_one_process_results(tmp_path):
    folder, one, two = tmp_path / "images", tmp_path / "one", tmp_path / "two"
    write_folder(folder, n=4)  # 8 readable images over 2 ranks, 3 bad ones among them
    cli(*CONCEPT_RUN, f"data.data_dir={folder}", f"paths.output_dir={one}",
        f"hydra.run.dir={tmp_path / 'h1'}")
    cli(*CONCEPT_RUN, f"data.data_dir={folder}", f"paths.output_dir={two}", "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false",
        f"hydra.run.dir={tmp_path / 'h2'}", timeout=400)
    assert (one / outputs.SKIPPED_INPUTS).read_text() == (two / outputs.SKIPPED_INPUTS).read_text()
    a, b = pd.read_csv(one / "concepts_per_image.csv"), pd.read_csv(two / "concepts_per_image.csv")
    assert a["image"].nunique() == 8
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
