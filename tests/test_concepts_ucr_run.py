"""``experiment=concepts_ucr`` end to end on a multivariate, variable-length set shipped
offline (UEA JapaneseVowels: 12 channels, 7-29 steps resampled to 29, 9 classes): a small
FCN trained for one epoch, concepts over time with class concepts and figures, then the
saved weights explained again with ``train=false model.checkpoint_path=``."""

import json
import math

import pytest

from tests.helpers.run import read_csv, train

DEBUG = ["experiment=concepts_ucr", "data.name=JapaneseVowels", "logger=none", "trainer.max_epochs=1",
         "model.model_kwargs={widths:[16,16,12]}", "callbacks.concepts.n_init=2",
         "callbacks.concepts.control_repeats=2", "callbacks.concepts.sub_concepts=2",
         "callbacks.concepts.max_figures=2", "callbacks.concepts.nmf_max_images=20",
         "callbacks.concepts.class_figures=1"]


def test_japanese_vowels_small_debug_run_explains_multivariate_series(tmp_path):
    out = tmp_path / "run"
    train([*DEBUG, "data.max_samples=24", "model.num_classes=9", "callbacks.concepts.fidelity=false", "callbacks.concepts.sub_concepts=0",
           "callbacks.concepts.class_concepts=false", "callbacks.concepts.figures=false"], out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 24 and metrics["classifier"]["layout"] == "ncl"
    rows = read_csv(out / "concepts_per_image.csv")
    assert {r["method"] for r in rows} == {"cgap", "cpha"} and len(rows) == 24 * 2 * 5


@pytest.mark.slow
def test_japanese_vowels_trains_and_explains_over_time_then_reloads(tmp_path):
    out = tmp_path / "run"
    train(DEBUG, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 370 and 0.0 <= metrics["top1"] <= 1.0
    assert metrics["classifier"]["layout"] == "ncl" and metrics["classifier"]["model"] == "clustercam_fcn"
    rows = read_csv(out / "concepts_per_image.csv")
    assert {r["method"] for r in rows} == {"cgap", "cpha"}
    assert {int(r["index"]) for r in rows} == set(range(370))
    assert any(math.isfinite(float(r["importance"])) for r in rows)
    assert (out / "concept_fidelity.csv").is_file() and (out / "class_concepts.csv").is_file()
    assert len({r["class"] for r in read_csv(out / "class_concepts.csv")}) >= 2
    # figures: the series drawn with each concept's map, and the class galleries
    drawn = sorted(p.name for p in (out / "figures" / "concepts").glob("*.png"))
    assert [d for d in drawn if not d.endswith("_sub.png")] == [
        f"japanesevowels_test_0000{i}_{m}_kmeans_n5.png" for i in (0, 1) for m in ("cgap", "cpha")]
    assert list((out / "figures" / "class_concepts").glob("*.png"))
    again = tmp_path / "again"
    train([*DEBUG, "train=false", f"model.checkpoint_path={out / 'classifier.safetensors'}"], again)
    second = json.loads((again / "metrics.json").read_text())
    assert second["top1"] == metrics["top1"] and second["classifier"]["weights"].startswith("file:")
