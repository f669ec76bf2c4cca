"""The concept pipeline as a user runs it: classifier weights, ImageNet folders, configs, CLI.

The end-to-end test runs exactly ``python -m clustercam.train experiment=concepts_imagenet
model.pretrained=false logger=csv`` on the 11 real images and checks every output file.
No network: ``HF_HUB_OFFLINE=1``; weights are random or saved by the test itself.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from clustercam.callbacks.concept_explain import ConceptExplainCallback
from clustercam.data.imagenet_subset import PAPER_CLASSES, ImageNetSubsetDataModule, synset_class
from clustercam.models.classifier_module import ClassifierModule
from clustercam.models.timm_weights import PretrainedWeightsError, _hub_reachable, build_timm_model
from tests.helpers import IMAGENET11 as IMAGES
from tests.helpers import needs_imagenet11
from tests.helpers.run import cli, train

needs_images = needs_imagenet11("the ImageNet experiment on the paper's 11 classes: synset folders "
                                 "mapped to ImageNet indices, real photos through nf_resnet50")

CONTRACT_COLUMNS = {
    "concepts_per_image.csv": ["image", "class", "method", "algorithm", "n_concepts", "concept",
                               "channels", "importance"],
    "concept_metrics.csv": ["image", "class", "method", "algorithm", "n_concepts", "silhouette",
                            "calinski_harabasz", "davies_bouldin", "seconds"],
    "sub_concepts_per_image.csv": ["image", "class", "method", "algorithm", "n_concepts", "concept",
                                   "sub_concept", "channels", "importance"],
}


# ---------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------
def test_unknown_model_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown timm model name 'nf_resnet5O'.*'nf_resnet50'"):
        ClassifierModule("nf_resnet5O", pretrained=False)


def test_missing_checkpoint_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match=r"model.checkpoint_path .*nope.safetensors' does not exist"):
        ClassifierModule("test_resnet", pretrained=True, checkpoint_path=str(missing))


def test_offline_without_weights_fails_fast_with_one_message(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(PretrainedWeightsError) as err:
        build_timm_model("nf_resnet50.ra2_in1k", pretrained=True)
    assert time.perf_counter() - t0 < 2.0
    msg = str(err.value)
    assert "'nf_resnet50.ra2_in1k'" in msg and "HF_HUB_OFFLINE" in msg
    for way in ("model.checkpoint_path=", "timm.create_model('nf_resnet50.ra2_in1k', pretrained=True)",
                "model.pretrained=false"):
        assert way in msg
    # no HF_HUB_OFFLINE but no network: one quick probe, the same single message
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
    t0 = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match="https://hub.invalid cannot be reached"):
        build_timm_model("nf_resnet50.ra2_in1k", pretrained=True)
    assert time.perf_counter() - t0 < 3.0
    assert _hub_reachable("https://hub.invalid") is False


def test_checkpoint_file_loads_into_any_timm_model(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(1)
    ref = timm.create_model("test_resnet")
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": ref.state_dict()}, path)  # a nested state dict, as trainers save
    model = ClassifierModule("test_resnet", pretrained=True, checkpoint_path=str(path))
    assert model.weights_source == f"file:{path}" and model.pretrained
    for (k, v), (k2, v2) in zip(ref.state_dict().items(), model.net.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(PretrainedWeightsError, match="could not load"):
        ClassifierModule("test_resnet", pretrained=True, checkpoint_path=str(bad))


def test_random_weights_are_loud_frozen_and_split_into_g_and_h(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        model = ClassifierModule("test_resnet", pretrained=False)
    assert "RANDOM WEIGHTS" in caplog.text
    assert model.describe() == {"model": "test_resnet", "pretrained": False, "weights": "random",
                                "layer": "final features", "layout": "auto"}
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.net.training  # stays in eval mode
    x = torch.rand(2, 3, 64, 64)
    a = model.features(x)
    assert a.shape == (2, 96, 2, 2)
    assert torch.allclose(model.head(a), model.net(x), atol=1e-5)
    out = model.test_step((x, torch.tensor([1, 2]), torch.tensor([0, 1])), 0)
    assert set(out) == {"activations", "logits", "y", "idx", "layer_output"} and out["logits"].shape == (2, 1000)
    assert model.describe()["layout"] == "nchw"


# ---------------------------------------------------------------------------------------
# ImageNet folders
# ---------------------------------------------------------------------------------------
@needs_images
def test_imagenet_subset_preprocessing_and_batches() -> None:
    from torchvision import transforms as T

    dm = ImageNetSubsetDataModule(IMAGES, model_name="nf_resnet50.ra2_in1k", batch_size=4)
    steps = dm.transform.transforms
    assert isinstance(steps[0], T.Resize) and steps[0].size == 272
    assert steps[0].interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(steps[1], T.CenterCrop) and tuple(steps[1].size) == (256, 256)
    assert isinstance(steps[-1], T.Normalize)
    assert tuple(steps[-1].mean.tolist()) == pytest.approx((0.485, 0.456, 0.406))
    assert tuple(steps[-1].std.tolist()) == pytest.approx((0.229, 0.224, 0.225))
    assert sorted(dm.targets) == sorted(i for i, _ in PAPER_CLASSES.values())
    x, y, idx = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, 256, 256) and idx.tolist() == [0, 1, 2, 3]
    assert y.tolist() == [PAPER_CLASSES[dm.image_paths[i].parent.name][0] for i in range(4)]
    img = dm.display_image(0)
    assert img.shape == (3, 256, 256) and 0 <= img.min() and img.max() <= 1
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose((img - mean[:, None, None]) / std[:, None, None], x[0], atol=1e-5)


def test_synsets_map_to_imagenet_indices() -> None:
    assert synset_class("n03417042") == (569, "garbage truck")
    assert synset_class("n01443537")[0] == 1  # goldfish, from timm's full table
    with pytest.raises(ValueError, match=r"'cats' is not an ImageNet-1k synset.*class_map"):
        synset_class("cats")
    assert synset_class("cats", {"cats": 281}) == (281, "cats")


def test_missing_empty_and_unknown_image_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageNetSubsetDataModule(tmp_path / "missing")
    (tmp_path / "n01440764").mkdir()
    with pytest.raises(ValueError, match=r"no images found in .*1 sub-folders"):
        ImageNetSubsetDataModule(tmp_path)
    Image.new("RGB", (40, 30)).save(tmp_path / "n01440764" / "a.JPEG")
    (tmp_path / "mystery").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "mystery" / "b.png")
    with pytest.raises(ValueError, match="'mystery' is not an ImageNet-1k synset"):
        ImageNetSubsetDataModule(tmp_path)
    dm = ImageNetSubsetDataModule(tmp_path, class_map={"mystery": 5})
    assert dm.targets == [5, 0]  # folders in sorted order: mystery, n01440764


# ---------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------
def compose(overrides: list[str]):
    from clustercam.runtime.configs import compose as compose_config

    return compose_config([f"data.data_dir={IMAGES}", *overrides])


def test_concept_settings_live_under_callbacks_concepts_and_reach_the_callback(tmp_path: Path) -> None:
    import hydra

    cfg = compose(["experiment=concepts_imagenet", "model.pretrained=false", "logger=csv",
                   f"paths.output_dir={tmp_path}", "callbacks.concepts.algorithm=agglomerative",
                   "callbacks.concepts.n_concepts=[3,5]", "callbacks.concepts.backend=sklearn"])
    assert cfg.train is False and cfg.test is True and cfg.optimized_metric is None
    assert "model_checkpoint" not in cfg.callbacks and "rich_progress_bar" in cfg.callbacks
    cb = hydra.utils.instantiate(cfg.callbacks.concepts)
    assert isinstance(cb, ConceptExplainCallback)
    s = cb.settings
    assert s.methods == ["cgap", "cpha"] and s.algorithms == ["agglomerative"]
    assert s.n_list == [3, 5] and s.backend == "sklearn" and s.seed == cfg.seed
    assert cb.output_dir == tmp_path
    assert cfg.data.model_name == cfg.model.name == "nf_resnet50.ra2_in1k"
    with pytest.raises(ValueError, match="'dbscan'"):
        ConceptExplainCallback(tmp_path, algorithm="dbscan")
    with pytest.raises(ValueError, match="n_concepts must be >= 2, got 1"):
        ConceptExplainCallback(tmp_path, n_concepts=[1, 5])


def test_the_old_model_concepts_key_still_works_with_a_warning(tmp_path: Path) -> None:
    from clustercam.runtime.configs import move_deprecated_keys

    with pytest.warns(FutureWarning, match=r"model.concepts.\* is deprecated.*\['algorithm'\]"):
        cfg = compose(["experiment=concepts_imagenet", "model.pretrained=false",
                       f"paths.output_dir={tmp_path}", "model.concepts.algorithm=birch"])
    assert cfg.callbacks.concepts.algorithm == "birch" and "concepts" not in cfg.model
    # unset old keys change nothing and say nothing
    cfg = compose(["experiment=concepts_imagenet", f"paths.output_dir={tmp_path}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = move_deprecated_keys(cfg)
    assert cfg.callbacks.concepts.algorithm == "kmeans" and "concepts" not in cfg.model


# ---------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------
def run_train(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    return cli(f"data.data_dir={IMAGES}", *args, timeout=timeout, check=False)


@needs_images
def test_concepts_experiment_end_to_end_on_real_images(tmp_path: Path, caplog) -> None:
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        train([f"data.data_dir={IMAGES}", "experiment=concepts_imagenet", "model.pretrained=false",
               "logger=csv", "callbacks.concepts.max_figures=1", "data.batch_size=6",
               "callbacks.concepts.class_figures=1", "callbacks.concepts.nmf_max_images=0"], out)
    assert "RANDOM WEIGHTS" in caplog.text
    # class concepts (on in this experiment): the classes are the ImageNet indices, one image each
    classes = pd.read_csv(out / "class_concepts.csv")["class"]
    assert set(classes) == {i for i, _ in PAPER_CLASSES.values()} | {-1}

    for name, cols in CONTRACT_COLUMNS.items():
        df = pd.read_csv(out / name)
        assert list(df.columns[: len(cols)]) == cols, name
    concepts = pd.read_csv(out / "concepts_per_image.csv")
    metrics = pd.read_csv(out / "concept_metrics.csv")
    subs = pd.read_csv(out / "sub_concepts_per_image.csv")

    # 11 images x {cgap, cpha} x kmeans x n_concepts 5
    assert len(metrics) == 22 and metrics["image"].nunique() == 11
    assert set(metrics["class"]) == {i for i, _ in PAPER_CLASSES.values()}
    assert set(metrics["method"]) == {"cgap", "cpha"} and set(metrics["algorithm"]) == {"kmeans"}
    assert metrics["silhouette"].between(-1, 1).all() and (metrics["calinski_harabasz"] > 0).all()
    assert (metrics["davies_bouldin"] > 0).all() and (metrics["seconds"] >= 0).all()
    assert len(concepts) == 22 * 5 and set(concepts["concept"]) == set(range(5))
    assert concepts["importance"].notna().all()
    # every kept channel is in exactly one concept
    per_image = concepts.groupby(["image", "method"])["channels"].sum()
    kept = metrics.set_index(["image", "method"])["kept_channels"]
    assert (per_image.sort_index() == kept.sort_index()).all()
    assert (kept <= 2048).all() and (kept > 1500).all()
    # sub-concepts: a split parent's channels are all in its sub-concepts (up to 3)
    assert len(subs) > 0 and subs["sub_concept"].between(0, 2).all()
    split = subs.groupby(["image", "method", "concept"]).agg(ch=("channels", "sum"), parent=("parent_channels", "first"))
    assert (split["ch"] == split["parent"]).all()

    summary = (out / "concept_summary.md").read_text()
    assert "## Table 1: method x algorithm, n_concepts = 5" in summary
    assert "## Table 2: kmeans, method x n_concepts" in summary
    assert "| CGAP | kmeans |" in summary and "| CPHA | kmeans |" in summary

    result = json.loads((out / "metrics.json").read_text())
    assert result["pretrained"] is False and result["weights"] == "random"
    assert result["model"] == "nf_resnet50.ra2_in1k" and result["n_images"] == 11
    ss = result["concepts/cgap_kmeans_n5/silhouette"]
    assert ss == pytest.approx(metrics[metrics["method"] == "cgap"]["silhouette"].mean())

    figures = sorted(p.name for p in (out / "figures" / "concepts").glob("*.png"))
    first = concepts["image"].iloc[0]
    assert figures == sorted([f"{first}_cgap_kmeans_n5.png", f"{first}_cgap_kmeans_n5_sub.png",
                              f"{first}_cpha_kmeans_n5.png", f"{first}_cpha_kmeans_n5_sub.png"])
    logged = pd.read_csv(next((out / "csv").rglob("metrics.csv")))
    assert "test/concepts/cgap/silhouette" in logged.columns
    assert (out / "config.yaml").is_file()


@pytest.mark.slow
@needs_images
def test_multirun_over_algorithms_then_one_summary(tmp_path: Path) -> None:
    from clustercam.studies.concept_summary import write_summary

    sweep = tmp_path / "sweep"
    proc = run_train(["-m", "experiment=concepts_imagenet", "model.pretrained=false", "logger=none",
                      "callbacks.concepts.algorithm=kmeans,agglomerative", "callbacks.concepts.n_concepts=3",
                      "callbacks.concepts.sub_concepts=0", "callbacks.concepts.figures=false",
                      "data.max_images=3", f"hydra.sweep.dir={sweep}",
                      "paths.output_dir=${hydra:runtime.output_dir}", "print_config=false"], timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = write_summary([sweep]).read_text()
    assert "(2 runs)" in md
    assert "| CGAP | agglomerative |" in md and "| CGAP | kmeans |" in md


@pytest.mark.slow
@needs_images
def test_ddp_on_two_cpu_processes_gives_the_single_process_results(tmp_path: Path) -> None:
    """The DistributedSampler pads and splits the 5 images; the gathered outputs must not show it."""
    common = ["experiment=concepts_imagenet", "model.pretrained=false", "logger=none",
              "data.max_images=5", "callbacks.concepts.figures=false", "print_config=false"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    proc = run_train([*common, "data.batch_size=5", f"paths.output_dir={single}",
                      f"hydra.run.dir={tmp_path / 'h1'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_train([*common, "data.batch_size=2", "trainer=ddp", "trainer.accelerator=cpu",
                      "trainer.devices=2", "trainer.sync_batchnorm=false", f"paths.output_dir={ddp}",
                      f"hydra.run.dir={tmp_path / 'h2'}"], timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("concepts_per_image.csv", "sub_concepts_per_image.csv"):
        a, b = pd.read_csv(single / name), pd.read_csv(ddp / name)
        assert len(a) == len(b) and a["image"].nunique() == 5
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    a, b = pd.read_csv(single / "concept_metrics.csv"), pd.read_csv(ddp / "concept_metrics.csv")
    cols = ["image", "method", "silhouette", "calinski_harabasz", "davies_bouldin", "kept_channels"]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=False, rtol=1e-6)
