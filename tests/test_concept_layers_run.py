"""``experiment=concepts_parts`` with a ViT and ``callbacks.concepts.layer``: the run's outputs
on the layer's token grid, and a bad layer name refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from clustercam.exceptions import UserError
from tests.helpers.run import train

VIT = ["experiment=concepts_parts", "logger=csv", "model.name=vit_tiny_patch16_224",
       "~model.model_kwargs.output_stride", "+model.model_kwargs.dynamic_img_size=true",
       "+model.model_kwargs.depth=2", "data.n_train=24", "data.n_test=4", "data.batch_size=12",
       "data.eval_batch_size=4", "data.size=48", "trainer.max_epochs=1", "callbacks.concepts.n_init=2",
       "callbacks.concepts.sub_concepts=2", "callbacks.concepts.max_figures=1",
       "callbacks.concepts.control_repeats=2", "callbacks.concepts.class_concepts=false"]


@pytest.mark.slow  # ~18 s on 2 cores
def test_a_vit_block_is_explained_on_its_token_grid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train([*VIT, "callbacks.concepts.layer=blocks.0"], out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classifier"]["layer"] == "blocks.0" and metrics["classifier"]["layout"] == "tokens"
    concepts = pd.read_csv(out / "concepts_per_image.csv")
    assert concepts.groupby(["image", "method"])["channels"].sum().eq(192).all()  # signed: all kept
    assert concepts["importance"].notna().all()
    truth = pd.read_csv(out / "concept_truth.csv")
    assert truth["n_images"].between(1, 4).all() and truth["parts_separated"].between(0, 1).all()
    assert pd.read_csv(out / "concept_fidelity.csv")[["deletion_auc", "insertion_auc"]].notna().all().all()
    assert any((out / "figures").rglob("*.png"))


def test_a_layer_that_is_not_a_module_is_refused_before_training(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"layer 'blocks\.9' is not a module of VisionTransformer.*'blocks\.0'"):
        train([*VIT, "callbacks.concepts.layer=blocks.9"], out)
    assert not (out / "classifier.safetensors").exists()
