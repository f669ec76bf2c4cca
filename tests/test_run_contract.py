"""The outputs contract end to end: a tiny concept run written through the concept callback
(per-image and class-level concepts, fidelity, part masks, figures) is read back by the
studies' aggregators, every file and column found through the contract's names only."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from clustercam import outputs
from clustercam.callbacks.concept_explain import ConceptExplainCallback
from clustercam.explain.concepts import ConceptSettings
from clustercam.explain.concepts.classes.coassociation import ClassConceptSettings
from clustercam.outputs.concept_results import class_results
from clustercam.studies import figures
from clustercam.studies.concept_summary import write_summary
from clustercam.studies.reproduce import concept_source

N, C, SIZE, CLASSES = 8, 16, 6, 2


class TinyNet(nn.Module):
    """g: 1x1 conv + ReLU on 3 x 6 x 6 inputs; h: average pooling + linear (2 classes)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.g, self.h = nn.Conv2d(3, C, 1), nn.Linear(C, CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.g(x))

    def head(self, a: torch.Tensor) -> torch.Tensor:
        return self.h(a.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def describe(self) -> dict:
        return {"model": "tinynet", "pretrained": False, "weights": "none"}


class Images(Dataset):
    """Eight random images of two classes, with part masks and an object-free background."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(1)
        self.x = torch.rand(N, 3, SIZE, SIZE, generator=gen)
        self.y = torch.arange(N) % CLASSES
        self.masks = torch.zeros(N, 3, SIZE, SIZE, dtype=torch.bool)
        self.masks[:, 0, :3, :3] = self.masks[:, 1, 3:, 3:] = self.masks[:, 2, :3, 3:] = True

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], torch.tensor(i)


class Data:
    """What the concept callback reads from a datamodule."""

    def __init__(self, ds: Images) -> None:
        self.ds, self.class_names = ds, [f"class{int(t)}" for t in ds.y]

    def display_image(self, i: int) -> torch.Tensor:
        return self.ds.x[i]

    def image_name(self, i: int) -> str:
        return f"img{i}"

    def eval_part_masks(self) -> torch.Tensor:
        return self.ds.masks

    def eval_backgrounds(self) -> torch.Tensor:
        return torch.zeros_like(self.ds.x)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("concept_run")
    ds, net = Images(), TinyNet().eval()
    loader = DataLoader(ds, batch_size=3)
    trainer = SimpleNamespace(world_size=1, num_devices=1, global_rank=0, is_global_zero=True, predicting=False,
                              datamodule=Data(ds), loggers=[], logger=None, test_dataloaders=loader,
                              default_root_dir=str(out), global_step=0,
                              strategy=SimpleNamespace(batch_to_device=lambda b: b))
    cb = ConceptExplainCallback(
        out, ConceptSettings(n_concepts=3, sub_concepts=2, n_init=2, control_repeats=2),
        max_figures=1, class_concepts=True, class_figures=1,
        class_settings=ClassConceptSettings(n_random=1, gallery_size=2, nmf_max_images=4, scope="both"))
    cb.on_test_epoch_start(trainer, net)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            x, y, idx = batch
            a = net.features(x)
            cb.on_test_batch_end(trainer, net, {"activations": a, "logits": net.head(a), "y": y, "idx": idx},
                                 batch, i)
        cb.on_test_epoch_end(trainer, net)
    return out


def test_every_table_has_the_contract_columns(run: Path) -> None:
    tables = {outputs.CONCEPTS: outputs.CONCEPT_COLUMNS, outputs.SUB_CONCEPTS: outputs.SUB_CONCEPT_COLUMNS,
              outputs.CONCEPT_METRICS: outputs.CONCEPT_METRIC_COLUMNS,
              outputs.CONCEPT_FIDELITY: outputs.CONCEPT_FIDELITY_COLUMNS,
              outputs.CONCEPT_TRUTH: outputs.CONCEPT_TRUTH_COLUMNS,
              outputs.CLASS_CONCEPTS: outputs.CLASS_CONCEPT_COLUMNS,
              outputs.CLASS_CONCEPTS_TRUTH: outputs.CLASS_CONCEPTS_TRUTH_COLUMNS}
    for name, columns in tables.items():
        rows = _csv(run / name)
        assert rows and list(rows[0]) == list(columns), name
    # 8 images x 2 configurations (cgap, cpha) x 3 concepts; fidelity: x 3 orders
    assert len(_csv(run / outputs.CONCEPTS)) == N * 2 * 3
    assert len(_csv(run / outputs.CONCEPT_FIDELITY)) == N * 2 * 3
    with np.load(run / outputs.CLASS_CONCEPT_CHANNELS) as z:
        for method in ("cgap", "cpha"):
            member = outputs.class_channels_member((method, "kmeans", 3), "coassociation")
            assert z[member].shape == (CLASSES + 1, C)  # both classes and all images (scope both)


def test_the_summary_aggregator_reads_the_run_and_agrees_with_metrics_json(run: Path, tmp_path: Path) -> None:
    path = write_summary([run], tmp_path / outputs.CONCEPT_SUMMARY)
    text = path.read_text()
    assert f"{N * 2} rows, {CLASSES} classes" in text and "| CGAP | kmeans |" in text
    metrics = json.loads((run / outputs.METRICS).read_text())
    df = pd.read_csv(run / outputs.CONCEPT_METRICS)
    for method in ("cgap", "cpha"):
        per_class = df[df["method"] == method].groupby("class")["silhouette"].mean()
        want = metrics[f"concepts/{method}_kmeans_n3/silhouette"]
        assert per_class.mean() == pytest.approx(want, rel=1e-12, nan_ok=True)
    assert concept_source(run) == "tinynet, random weights"


def test_fidelity_and_class_concepts_read_back_give_the_logged_means(run: Path) -> None:
    metrics = json.loads((run / outputs.METRICS).read_text())
    fid = pd.read_csv(run / outputs.CONCEPT_FIDELITY)
    sel = fid[(fid["method"] == "cpha") & (fid["order"] == "importance")]["deletion_auc"].dropna()
    assert sel.mean() == pytest.approx(metrics["fidelity/cpha_kmeans_n3/importance/deletion_auc"], rel=1e-12)
    assert 0 < metrics["paint_out/p_target"] < 1
    from_files = class_results(_csv(run / outputs.CLASS_CONCEPTS), _csv(run / outputs.CLASS_CONCEPTS_TRUTH))
    assert from_files and all(k in metrics for k in from_files)
    for key, value in from_files.items():
        assert (math.isnan(value) and metrics[key] is None) or value == pytest.approx(metrics[key], rel=1e-12), key


def test_the_paper_figures_find_the_run_figures_through_the_contract(run: Path) -> None:
    assert (run / outputs.CONCEPT_FIDELITY_FIGURE).is_file()
    assert (run / outputs.concept_figure_path("img0", ("cgap", "kmeans", 3))).is_file()
    assert list((run / outputs.CLASS_CONCEPT_FIGURES).glob("*.png"))
    _, caption = figures.concept_boxplots(run, "tiny")
    assert f"{N * 2} rows" in caption
    _, caption = figures.concept_cgap_vs_cpha(run, "tiny")
    assert "img0" in caption
    _, caption = figures.concept_subconcepts(run, "tiny")
    assert "sub-concepts" in caption
