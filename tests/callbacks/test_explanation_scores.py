"""The scores callback: switched on from the command line, and on its own (own k-means)."""

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning import Trainer

from clustercam.callbacks.explanation_scores import (
    ExplanationScoresCallback,
)
from clustercam.data.synthetic import SyntheticCBFDataModule
from clustercam.explain.scores import (
    DEFAULT_MAP_METHODS,
    LOCALISATION_COLUMNS,
    SCORES_COLUMNS,
    ScoreSettings,
)
from clustercam.models.autoencoder_module import AutoencoderModule
from clustercam.models.components.resnet_cae import ResNetCAE
from tests.helpers.run import train

REPO = Path(__file__).resolve().parents[2]
CONF = str(REPO / "conf")


def _read(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_synthetic_cbf_end_to_end(tmp_path):
    out = tmp_path / "run"
    train(["experiment=synthetic_cbf", "trainer.max_epochs=1", "data.max_samples=30", "logger=csv",
           "callbacks.explanation_scores.steps=4", "callbacks.cluster_explain.n_init=2",
           "callbacks.cluster_explain.figures=false", "model.net.filters=[8,16]"], out)
    rows = _read(out / "explanation_scores.csv")
    assert list(rows[0]) == list(SCORES_COLUMNS)
    assert [r["method"] for r in rows if r["cluster"] == "all"] == list(DEFAULT_MAP_METHODS)
    for r in rows:
        for key in ("deletion_auc", "insertion_auc", "deletion_hard_auc", "insertion_hard_auc"):
            assert 0 <= float(r[key]) <= 1
    per_cluster = [r for r in rows if r["cluster"].isdigit() and r["method"] == "random"]
    assert sum(int(r["n_samples"]) for r in per_cluster) == 30
    loc = _read(out / "localisation_scores.csv")
    assert list(loc[0]) == list(LOCALISATION_COLUMNS)
    assert [r["method"] for r in loc] == list(DEFAULT_MAP_METHODS)
    for r in loc:
        assert 0 <= float(r["pointing_game"]) <= 1 and 0 <= float(r["auroc"]) <= 1
        assert int(r["n_samples"]) == 30
    assert (out / "figures" / "deletion_insertion.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    assert "scores/gradceam_reference/deletion_auc" in metrics and "nmi" in metrics
    assert "scores/gradceam_paper/pointing_game" in metrics


def test_hydra_switches():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        for override in ("callbacks=default_with_scores", "callbacks=[default,scores]"):
            cfg = compose("train.yaml", overrides=["experiment=trace", override])
            assert {"cluster_explain", "explanation_scores"} <= set(cfg.callbacks), override
        cfg = compose("train.yaml", overrides=["experiment=trace", "data=synthetic_cbf"])
        assert cfg.data._target_.endswith("SyntheticCBFDataModule")
        cfg = compose("train.yaml", overrides=["experiment=trace"])
        assert "explanation_scores" not in cfg.callbacks  # off by default


def test_own_kmeans_without_cluster_explain(tmp_path):
    torch.manual_seed(0)
    dm = SyntheticCBFDataModule(max_samples=24, batch_size=8)
    net = ResNetCAE((1, 128), filters=(4, 4), embedding_dim=3)
    model = AutoencoderModule(net)
    cb = ExplanationScoresCallback(tmp_path, methods=["random", "gradceam_assignment"], steps=3,
                                   n_init=2, max_samples=20, figures=False)
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      inference_mode=False, callbacks=[cb])
    trainer.test(model, datamodule=dm)
    rows = _read(tmp_path / "explanation_scores.csv")
    assert {r["method"] for r in rows} == {"random", "gradceam_assignment"}
    assert [int(r["n_samples"]) for r in rows if r["cluster"] == "all"] == [20, 20]
    assert len(_read(tmp_path / "localisation_scores.csv")) == 2
    assert cb.results["scores/n_samples"] == 20 and cb.results["scores/temperature"] > 0


def test_the_yaml_lists_the_settings_fields_with_their_defaults():
    """conf/callbacks/scores.yaml passes ScoreSettings' fields through: the same names and
    defaults (seed is the run's), the rest are the callback's own parameters."""
    import inspect
    from dataclasses import fields

    from omegaconf import OmegaConf

    node = OmegaConf.load(REPO / "conf" / "callbacks" / "scores.yaml").explanation_scores
    own = set(inspect.signature(ExplanationScoresCallback).parameters) - {"settings", "options"}
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                for f in fields(ScoreSettings)}
    assert set(node) - {"_target_", "_convert_"} == own | set(defaults)
    for name, value in defaults.items():
        if name != "seed":
            got = OmegaConf.to_container(node)[name]
            assert (tuple(got) if isinstance(got, list) else got) == value, name


def test_settings_built_by_hydra_or_as_options_are_the_same(tmp_path):
    from hydra.utils import instantiate

    from clustercam.exceptions import UserError

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train.yaml", overrides=["experiment=trace", "callbacks=default_with_scores",
                                               "callbacks.explanation_scores.steps=3",
                                               f"paths.output_dir={tmp_path}"])
    flat = instantiate(cfg.callbacks.explanation_scores)
    assert isinstance(flat.settings, ScoreSettings) and flat.settings.steps == 3
    on_top = ExplanationScoresCallback(tmp_path, settings=ScoreSettings(steps=5, seed=flat.settings.seed),
                                       steps=3)  # keyword options on top of the object
    assert on_top.settings == flat.settings
    built = instantiate({"_target_": "clustercam.callbacks.explanation_scores.ExplanationScoresCallback",
                         "output_dir": str(tmp_path),
                         "settings": {"_target_": "clustercam.explain.ScoreSettings", "steps": 3,
                                      "seed": flat.settings.seed}})
    assert built.settings == flat.settings
    with pytest.raises(UserError, match=r"callbacks.explanation_scores: unknown settings \['stepz'\]"):
        ExplanationScoresCallback(tmp_path, stepz=3)
    with pytest.raises(UserError, match="steps must be >= 1"):
        ExplanationScoresCallback(tmp_path, steps=0)
