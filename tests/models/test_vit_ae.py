"""``model=vit_ae``: a vision-transformer autoencoder trained and explained like the CAEs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clustercam.exceptions import UserError
from clustercam.models.components.vit_ae import ViTAutoencoder


@pytest.mark.parametrize(("shape", "grid"), [((1, 28, 28), (7, 7)), ((3, 32, 24), (8, 6))])
def test_the_vit_autoencoder_reconstructs_the_input_shape(shape, grid) -> None:
    net = ViTAutoencoder(shape, patch_size=4, width=16, depth=1, heads=2, embedding_dim=5)
    x = torch.rand(2, *shape)
    assert net(x).shape == x.shape and net.encoder(x).shape == (2, 5)
    assert tuple(net.encoder.patch_embed.grid_size) == grid and net.target_layer == "norm"
    out = net(x).detach()
    assert float(out.min()) >= 0 and float(out.max()) <= 1  # sigmoid


def test_bad_vit_autoencoder_shapes_are_clear_errors() -> None:
    with pytest.raises(UserError, match="power of 2"):
        ViTAutoencoder((1, 28, 28), patch_size=7)
    with pytest.raises(UserError, match="must divide the input size 30 x 30"):
        ViTAutoencoder((1, 30, 30), patch_size=4)
    with pytest.raises(UserError, match="multiple of heads"):
        ViTAutoencoder((1, 28, 28), width=10, heads=4)


@pytest.mark.parametrize("experiment", ["mnist", pytest.param("synthetic_shapes", marks=pytest.mark.slow)])
def test_experiment_with_model_vit_ae_trains_and_explains(experiment: str, tmp_path: Path) -> None:
    from tests.helpers.run import train

    out = tmp_path / "run"
    metrics = train([f"experiment={experiment}", "model=vit_ae", "debug=fdr", "logger=csv",
                     "model.net.width=16", "model.net.depth=1", "model.net.heads=2"], out)
    assert "test/nmi" in metrics and (out / "cardinality.csv").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["gradceam_mode"] == "reference" and 0 <= saved["nmi"] <= 1
    assert (out / "figures" / "sample_all_clusters.png").is_file()
    heat = np.load(out / "figures" / "heatmaps.npz")
    size, grid = ((28, 28), (7, 7)) if experiment == "mnist" else ((32, 32), (8, 8))
    assert heat["heatmaps"].shape[-2:] == size and heat["raw"].shape[-2:] == grid  # the token grid
    assert heat["channel_weights"].shape[-1] == 16  # the width
