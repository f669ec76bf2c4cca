"""DCEC under DDP: the target distribution P, the cluster sizes f_k, the k-means
initialisation and the evaluation with 2 CPU processes equal one process's."""

import json

import pytest
import torch

from tests.helpers.run import cli as run_cli
from tests.helpers.run import read_csv, train

pytestmark = pytest.mark.slow  # five runs, two of them with 2 processes (~1-2 min)

SMALL = ["logger=none", "model.net.filters=[8,8]", "callbacks.cluster_explain.figures=false",
         "callbacks.cluster_explain.compare_modes=[]"]
# SyncBatchNorm trains on GPUs only: CPU processes keep their own BatchNorm statistics
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    out = tmp_path_factory.mktemp("ae")
    train(["experiment=trace", "trainer.max_epochs=2", *SMALL], out)
    return out / "checkpoints" / "last.ckpt"


def _first_targets(out, ae, *extra):
    """One clustering step from the same pretrained weights: P is computed before it."""
    run_cli("experiment=trace_dcec", *SMALL, f"model.pretrained={ae}", "model.pretrain_epochs=0",
            "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "test=false", "optimized_metric=null",
            f"paths.output_dir={out}", *extra)
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["dcec"], ckpt["state_dict"]


def test_target_distribution_with_two_processes_equals_one(tmp_path, autoencoder):
    one, s1 = _first_targets(tmp_path / "one", autoencoder)
    two, s2 = _first_targets(tmp_path / "two", autoencoder, *DDP)
    assert one["targets"].shape == (100, 4)  # the whole training split, not a rank's half
    torch.testing.assert_close(two["targets"], one["targets"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(two["frequencies"], one["frequencies"], atol=1e-5, rtol=1e-6)
    assert torch.equal(two["labels"], one["labels"])
    assert two["pretrain_scores"] == pytest.approx(one["pretrain_scores"])
    # the k-means initialisation saw the same embeddings (the centroids then took one step)
    assert one["history"][0]["step"] == two["history"][0]["step"] == 0
    assert s1["net.clustering.centroids"].shape == s2["net.clustering.centroids"].shape


def _evaluate(out, ckpt, *extra):
    run_cli("experiment=trace_dcec", *SMALL, "train=false", f"ckpt_path={ckpt}",
            "data.eval_batch_size=32", f"paths.output_dir={out}", *extra)
    return (json.loads((out / "metrics.json").read_text()), read_csv(out / "cardinality.csv"),
            read_csv(out / "assignments.csv"))


def test_evaluating_a_dcec_checkpoint_with_two_processes_equals_one(tmp_path, autoencoder):
    fit = tmp_path / "fit"
    train(["experiment=trace_dcec", *SMALL, f"model.pretrained={autoencoder}",
           "model.pretrain_epochs=0", "trainer.max_epochs=2"], fit)
    ckpt = fit / "checkpoints" / "last.ckpt"
    m1, card1, a1 = _evaluate(tmp_path / "one", ckpt)
    m2, card2, a2 = _evaluate(tmp_path / "two", ckpt, *DDP)
    for key in ("nmi", "ari", "acc", "n_samples", "pretrain_nmi", "cardinality_median"):
        assert m1[key] == m2[key], key
    assert card1 == card2 and a1 == a2
