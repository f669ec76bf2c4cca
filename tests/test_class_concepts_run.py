"""Class-level concepts in a concept run (``callbacks.concepts.class_concepts=true``).

A tiny ``experiment=concepts_parts`` run in-process checks the files (columns, the channel
ids behind the CSV, one gallery, the summary and metrics.json) and that degenerate classes
(one image) come out as NaN with a warning; a slow test checks 2 DDP processes against 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from clustercam.callbacks import concept_figures
from clustercam.callbacks.gather import unpadded
from clustercam.data.parts import CLASSES
from clustercam.explain.concepts.classes.coassociation import ClassConceptWarning
from clustercam.outputs import CLASS_CONCEPT_COLUMNS, CONCEPT_FIDELITY_FIGURE, figure_jobs
from clustercam.outputs import CLASS_CONCEPTS_TRUTH_COLUMNS as TRUTH_COLUMNS
from tests.helpers import require_imagenet11
from tests.helpers.run import cli, train
from tests.test_concepts_parts import TINY

# 8 test images: classes 0 and 1 have two, the others one (the degenerate case)
CLASS_TINY = [*TINY, "data.n_test=8", "data.eval_batch_size=3", "callbacks.concepts.class_concepts=true",
              "callbacks.concepts.class_random=1", "callbacks.concepts.gallery_size=2",
              "callbacks.concepts.class_figures=1", "callbacks.concepts.nmf_max_images=4"]
N_CHANNELS = 96  # timm test_resnet


POOLS: list[dict] = []  # each figure pool of the fixture's run: its jobs' costs and paths
LOGGED: dict[str, list[Path]] = {}  # the figures handed to the loggers, by key


@pytest.fixture(scope="module")
def class_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("classes") / "run"

    def pool(jobs, workers=None, costs=None, progress=None):
        POOLS.append({"costs": list(costs), "paths": figure_jobs.figure_job_paths(jobs, workers, costs, progress)})
        return POOLS[-1]["paths"]
    with pytest.warns(ClassConceptWarning, match="has one image"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(concept_figures, "figure_job_paths", pool)
        mp.setattr(concept_figures, "log_images", lambda trainer, key, paths, captions: LOGGED.update({key: paths}))
        train(CLASS_TINY, out)
    return out


def test_the_figures_and_the_galleries_are_drawn_in_one_pool(class_run) -> None:
    """max_figures=0 and class_figures=1: the fidelity figure (2 configurations x 50) and one
    class's galleries (2 methods x 2 sources x 5 concepts x gallery_size 2 panels), in one pool;
    each kind logged under its own key."""
    [drawn] = POOLS
    assert drawn["costs"] == [100.0, 40.0]
    assert json.loads((class_run / "metrics.json").read_text())["concepts/seconds/figures"] > 0  # the stage, timed
    fidelity, galleries = drawn["paths"]
    assert fidelity == [class_run / CONCEPT_FIDELITY_FIGURE]
    assert sorted(p.relative_to(class_run).as_posix() for p in galleries) == [
        f"figures/class_concepts/disc+square_{name}.png" for name in ("cgap", "cpha", "nmf-cgap", "nmf-cpha")]
    assert all(p.is_file() for p in fidelity + galleries)
    assert LOGGED == {"figures/concepts": fidelity, "figures/class_concepts": galleries}


def test_class_concepts_csv_and_channel_ids(class_run) -> None:
    rows = pd.read_csv(class_run / "class_concepts.csv")
    assert list(rows.columns) == list(CLASS_CONCEPT_COLUMNS)
    assert set(zip(rows["method"], rows["algorithm"])) == {
        ("cgap", "kmeans"), ("cpha", "kmeans"), ("nmf", "cgap/kmeans"), ("nmf", "cpha/kmeans")}
    assert sorted(rows["class"].unique()) == [-1, 0, 1, 2, 3, 4, 5]  # every class + all images
    assert (rows.groupby(["class", "method", "algorithm"]).size() == 5).all()  # n_concepts
    names = dict(zip(rows["class"], rows["class_name"]))
    assert names == {**dict(enumerate(CLASSES)), -1: "all"}
    per_class = rows[rows["method"] == "cgap"].groupby("class")["n_images"].first()
    assert per_class.to_dict() == {-1: 8, 0: 2, 1: 2, 2: 1, 3: 1, 4: 1, 5: 1}
    ok = rows["stability"].dropna()
    assert ok.between(0, 1).all() and len(ok) > 0
    single = rows[rows["n_images"] == 1]
    assert single["stability"].isna().all() and single["importance_std"].isna().all()
    # the npz holds the channel ids behind the channel counts of the CSV
    npz = np.load(class_run / "class_concepts.npz")
    assert npz["classes"].tolist() == [0, 1, 2, 3, 4, 5, -1]
    for method in ("cgap", "cpha"):
        for src, key in (("coassociation", (method, "kmeans")), ("nmf", ("nmf", f"{method}/kmeans"))):
            labels = npz[f"{method}_kmeans_n5_{src}"]
            assert labels.shape == (7, N_CHANNELS) and labels.max() < 5
            sel = rows[(rows["method"] == key[0]) & (rows["algorithm"] == key[1])]
            for r, g in enumerate(npz["classes"]):
                counts = np.bincount(labels[r][labels[r] >= 0], minlength=5)
                assert counts.tolist() == sel[sel["class"] == g].sort_values("concept")["channels"].tolist()


def test_class_truth_gallery_summary_and_metrics(class_run) -> None:
    truth = pd.read_csv(class_run / "class_concepts_truth.csv")
    assert list(truth.columns) == list(TRUTH_COLUMNS)
    assert set(truth["source"]) == {"coassociation", "nmf", "random"}
    assert len(truth) == 7 * 2 * 3  # groups x methods x sources
    masses = truth[["part_a_mass", "part_b_mass", "distractor_mass"]].stack()
    assert masses.between(0, 1).all()
    found = truth[truth["source"] != "random"]["parts_in_top2"].dropna()  # random: a mean over draws
    assert len(found) > 0 and found.isin([0, 1]).all()
    figures = sorted(p.name for p in (class_run / "figures" / "class_concepts").glob("*.png"))
    assert figures == ["disc+square_cgap.png", "disc+square_cpha.png", "disc+square_nmf-cgap.png",
                       "disc+square_nmf-cpha.png"]  # class_figures=1: the first class only
    assert "## Class concepts" in (class_run / "concept_summary.md").read_text()
    metrics = json.loads((class_run / "metrics.json").read_text())
    rows = pd.read_csv(class_run / "class_concepts.csv")
    cgap = rows[(rows["method"] == "cgap") & (rows["class"] >= 0)]["stability"].dropna().mean()
    assert metrics["class_concepts/cgap/coassociation/stability"] == pytest.approx(cgap)
    assert 0 <= metrics["class_concepts/cgap/truth/random/part_a_mass"] <= 1


def test_class_concepts_are_off_by_default_outside_the_experiments(tmp_path) -> None:
    from clustercam.runtime.configs import compose

    assert compose(["experiment=concepts_parts"]).callbacks.concepts.class_concepts is True
    assert compose(["experiment=concepts_imagenet"]).callbacks.concepts.class_concepts is True
    assert compose(["callbacks=concepts"]).callbacks.concepts.class_concepts is False


def test_a_run_the_machine_cannot_hold_stops_at_its_first_batch(tmp_path, monkeypatch) -> None:
    """With less memory available than the class concepts would keep (here 2 x 6 classes of
    96 x 96 int32 counts, 436 KiB, and the NMF samples), the run ends with the numbers and the
    settings that fit, before the first batch is counted; the image concepts' files are not
    started either."""
    from clustercam.callbacks import memory
    from clustercam.exceptions import UserError

    monkeypatch.setattr(memory, "least_available_memory", lambda trainer: 700_000)
    with pytest.raises(UserError, match=r"class concepts of 6 classes \(2 configurations, 96 channels x 64 positions\) "
                                        r"keep .*co-association counts 436 KiB.* more than the 684 KiB of memory "
                                        r"available: set callbacks.concepts.scope=dataset \("):
        train(CLASS_TINY, tmp_path / "run")
    assert not (tmp_path / "run" / "concepts.csv").exists()


@pytest.mark.parametrize("world, n, batch", [(2, 13, 4), (3, 10, 3), (4, 10, 2)])
def test_unpadded_drops_exactly_the_sampler_repeats(world, n, batch) -> None:
    from torch.utils.data import DistributedSampler

    seen = torch.zeros(n, dtype=torch.long)
    for rank in range(world):
        order = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))
        trainer = SimpleNamespace(world_size=world, global_rank=rank, predicting=False)
        for start in range(0, len(order), batch):
            ids = torch.tensor(order[start: start + batch])
            kept = ids[unpadded(trainer, start, len(ids), n)]
            seen.index_add_(0, kept, torch.ones_like(kept))
    assert seen.tolist() == [1] * n


@pytest.mark.slow
def test_ddp_two_processes_give_the_one_process_class_concepts(tmp_path) -> None:
    """13 images over 2 ranks: the sampler repeats one; counts summed, scores gathered.

    Partitions, class concepts, counts and galleries are equal exactly; the float scores to
    1e-5: a rank's batches hold other images than the single process's, and the float32
    activations of the same image differ in the last bits with the batch (measured 3e-7
    relative on importance; the merge itself is exact to 1e-12, tests/explain)."""
    trained = tmp_path / "trained"
    train([*CLASS_TINY, "callbacks.concepts.class_concepts=false"], trained)
    common = [*CLASS_TINY, "data.n_test=13", "data.eval_batch_size=4", "train=false",
              f"model.checkpoint_path={trained / 'classifier.safetensors'}", "callbacks.concepts.figures=false",
              "print_config=false"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    cli(*common, f"paths.output_dir={single}", f"hydra.run.dir={tmp_path / 'h1'}", timeout=500)
    cli(*common, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false",
        f"paths.output_dir={ddp}", f"hydra.run.dir={tmp_path / 'h2'}", timeout=500)
    for name in ("class_concepts.csv", "class_concepts_truth.csv"):
        a, b = pd.read_csv(single / name), pd.read_csv(ddp / name)
        assert a.shape == b.shape and len(a) > 0
        floats = [c for c in a.columns if a[c].dtype == float]
        exact = [c for c in a.columns if c not in floats]
        pd.testing.assert_frame_equal(a[exact], b[exact])
        for c in floats:
            for x, y in zip(a[c], b[c]):
                assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-5, abs=1e-6), (name, c)
    na, nb = np.load(single / "class_concepts.npz"), np.load(ddp / "class_concepts.npz")
    assert sorted(na) == sorted(nb) and all(np.array_equal(na[k], nb[k]) for k in na)


@pytest.mark.slow
def test_ddp_figures_show_the_one_process_figure_images(tmp_path) -> None:
    """Each rank keeps the maps of its lowest-index images only; gathered, they are the
    single process's first ``max_figures`` images (13 images over 2 ranks, one repeated)."""
    from PIL import Image

    trained = tmp_path / "trained"
    train([*TINY, "callbacks.concepts.class_concepts=false"], trained)
    common = [*TINY, "data.n_test=13", "data.eval_batch_size=4", "train=false", "callbacks.concepts.max_figures=5",
              "callbacks.concepts.sub_concepts=3", f"model.checkpoint_path={trained / 'classifier.safetensors'}",
              "print_config=false"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    cli(*common, f"paths.output_dir={single}", f"hydra.run.dir={tmp_path / 'h1'}", timeout=500)
    cli(*common, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false",
        f"paths.output_dir={ddp}", f"hydra.run.dir={tmp_path / 'h2'}", timeout=500)
    names = sorted(p.name for p in (single / "figures" / "concepts").glob("*.png"))
    assert len([n for n in names if not n.endswith("_sub.png")]) == 5 * 2  # 5 images x CGAP, CPHA
    assert names == sorted(p.name for p in (ddp / "figures" / "concepts").glob("*.png"))
    for name in names:
        a, b = (np.asarray(Image.open(d / "figures" / "concepts" / name).convert("RGB"), dtype=int)
                for d in (single, ddp))
        assert a.shape == b.shape and np.abs(a - b).mean() < 0.5, name


def test_a_run_limited_to_some_test_batches_scores_those_batches(tmp_path) -> None:
    """Pass 2 visits the batches pass 1 saw: limit_test_batches / fast_dev_run evaluate fewer
    than the loader holds (the --quick reproduction runs with fast_dev_run)."""
    out = tmp_path / "run"
    train([*CLASS_TINY, "+trainer.limit_test_batches=1"], out)
    rows = pd.read_csv(out / "class_concepts.csv")
    assert len(rows) > 0 and pd.read_csv(out / "concepts_per_image.csv")["image"].nunique() == 3


def _same_table(one: Path, two: Path, atol: float) -> None:
    """Two runs' CSVs: every column but the floats equal, the floats to ``atol``."""
    a, b = pd.read_csv(one), pd.read_csv(two)
    floats = [c for c in a.columns if a[c].dtype == float]
    pd.testing.assert_frame_equal(a.drop(columns=floats), b.drop(columns=floats))
    np.testing.assert_allclose(a[floats].to_numpy(), b[floats].to_numpy(), rtol=1e-6, atol=atol)


def _same_class_concepts(one: Path, two: Path, exact: bool) -> None:
    """The class-concept files of two runs: class_concepts.csv byte for byte (``exact``), or
    the concepts, channels and stability exactly and the importances (percent) to 1e-5 (the
    pooled closed form and the ablated forward may round float32 in their own order: 1.6e-6
    apart at most on the shared photos, 2026-12-07); the truth table to float rounding, the
    channel ids and the gallery figures."""
    from PIL import Image

    if exact:
        assert (one / "class_concepts.csv").read_bytes() == (two / "class_concepts.csv").read_bytes()
    _same_table(one / "class_concepts.csv", two / "class_concepts.csv", atol=1e-5)
    if (two / "class_concepts_truth.csv").is_file():
        _same_table(one / "class_concepts_truth.csv", two / "class_concepts_truth.csv", atol=1e-9)
    na, nb = np.load(one / "class_concepts.npz"), np.load(two / "class_concepts.npz")
    assert sorted(na) == sorted(nb) and all(np.array_equal(na[k], nb[k]) for k in na)
    figures = sorted(p.name for p in (two / "figures" / "class_concepts").glob("*.png"))
    assert len(figures) >= 4 and figures == sorted(p.name for p in (one / "figures" / "class_concepts").glob("*.png"))
    for name in figures:
        x, y = (np.asarray(Image.open(d / "figures" / "class_concepts" / name).convert("RGB"), dtype=int)
                for d in (one, two))
        assert x.shape == y.shape and np.abs(x - y).mean() < 0.5, name


def test_one_pass_gives_the_two_pass_class_concepts(class_run, tmp_path, monkeypatch) -> None:
    """The small trained model's pooled head scores the class concepts from pass 1; its saved
    weights with the head declared not pooled + linear take the second pass: the same CSVs
    (class_concepts.csv byte for byte: average pool + linear, the same arithmetic), the same
    truth table to float rounding, the same channel ids and the same gallery figures."""

    from clustercam.models.classifier_module import ClassifierModule

    one, two = class_run, tmp_path / "two"  # the fixture's run: trained, then explained in one pass
    monkeypatch.setattr(ClassifierModule, "pooled_head", property(lambda self: None))
    with pytest.warns(ClassConceptWarning):
        train([*CLASS_TINY, "train=false", f"model.checkpoint_path={one / 'classifier.safetensors'}"], two)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (one, two)]
    assert [m["class_concepts/passes"] for m in metrics] == [1, 2]
    assert metrics[0]["class_concepts/gallery_images_recomputed"] == 0  # all in the NMF sample (4 a class)
    _same_class_concepts(one, two, exact=True)


@pytest.mark.slow
def test_one_pass_gives_the_two_pass_class_concepts_on_the_shared_photos(tmp_path, monkeypatch) -> None:
    """The same on real photos: three versions of each of the 11 shared photos (itself, its
    mirror, a centre crop) through timm's ``test_resnet`` (random weights, average pool +
    fc), one pass against the second pass, explaining the predicted classes."""
    from PIL import Image, ImageOps

    from clustercam.models.classifier_module import ClassifierModule

    photos = require_imagenet11("real photos for the one-pass class concepts")
    folder = tmp_path / "photos"
    for f in sorted(photos.glob("n*/*.JPEG")):
        (folder / f.parent.name).mkdir(parents=True, exist_ok=True)
        with Image.open(f) as im:
            im = im.convert("RGB")
            w, h = im.size
            versions = (im, ImageOps.mirror(im), im.crop((w // 8, h // 8, w - w // 8, h - h // 8)))
            for j, v in enumerate(versions):
                v.save(folder / f.parent.name / f"{f.stem}_{j}.JPEG", quality=90)
    common = ["experiment=concepts_imagenet", f"data.data_dir={folder}", "model.pretrained=false",
              "model.name=test_resnet", "data.model_name=nf_resnet50.ra2_in1k", "logger=none",
              "callbacks.concepts.max_figures=0", "callbacks.concepts.class_figures=2",
              "callbacks.concepts.nmf_max_images=1", "callbacks.concepts.n_init=2", "data.batch_size=8",
              "callbacks.concepts.target=predicted"]  # the importance of the predicted class: pass 1's
    one, two = tmp_path / "one", tmp_path / "two"
    train(common, one)
    monkeypatch.setattr(ClassifierModule, "pooled_head", property(lambda self: None))
    train(common, two)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (one, two)]
    assert [m["class_concepts/passes"] for m in metrics] == [1, 2]
    assert metrics[0]["class_concepts/gallery_images_recomputed"] > 0  # not in the NMF sample of 1 a class
    assert pd.read_csv(one / "class_concepts.csv")["stability"].notna().any()
    _same_class_concepts(one, two, exact=False)
