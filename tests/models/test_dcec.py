"""DCEC as one run: pretrain -> k-means initialisation -> clustering with the target
distribution, the tol stop, checkpoints that carry the centroids, and clear errors."""

import json
import warnings

import numpy as np
import pytest
import torch
from lightning import Callback, Trainer

from clustercam.data.base import ClusterDataModule
from clustercam.exceptions import UserError
from clustercam.explain.assignments import nearest
from clustercam.explain.clustering import clustering_scores, fit_kmeans
from clustercam.models.components.cae import ConvAutoencoder
from clustercam.models.components.dcec import DeepClusteringNet, default_autoencoder
from clustercam.models.components.resnet_cae import ResNetCAE
from clustercam.models.dcec_module import DCECModule
from clustercam.runtime.errors import user_error_message
from tests.helpers.run import read_csv, train

TINY = ["logger=none", "model.net.filters=[4,4]", "data.max_samples=30",
        "callbacks.cluster_explain.n_init=2", "callbacks.cluster_explain.figures=false",
        "callbacks.cluster_explain.compare_targets=[]"]


class TinyImages(ClusterDataModule):
    """12 tiny images in 3 classes; no BatchNorm in the net, so lr = 0 freezes the embedding."""

    name = "tiny"

    def load_split(self, split):
        gen = torch.Generator().manual_seed(0 if split == "train" else 1)
        y = torch.arange(12) % 3
        return torch.rand(12, 1, 6, 6, generator=gen) * 0.3 + y[:, None, None, None] / 3, y


def _net():
    torch.manual_seed(0)
    return ConvAutoencoder((1, 6, 6), filters=(4,), kernels=(3,), strides=(2,), embedding_dim=2)


def _quiet_trainer(**kw):
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    return Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                   accelerator="cpu", devices=1, **kw)


def test_the_stop_rule_fires_once_labels_stop_changing():
    # lr = 0: the embeddings never move, so the second target update sees 0 changed labels
    model = DCECModule(_net(), n_clusters=3, clustering={"update_interval": 2, "n_init": 2},
                       optimizer=lambda params: torch.optim.Adam(params, lr=0.0))
    trainer = _quiet_trainer(max_epochs=20)
    trainer.fit(model, datamodule=TinyImages(batch_size=3))
    assert np.isnan(model.history[0]["changed"])  # nothing to compare the first update with
    assert [h["changed"] for h in model.history[1:]] == [0.0]
    assert trainer.global_step == 2 and trainer.current_epoch == 1  # stopped in epoch 0: 2 of 80 steps
    assert model.targets.shape == (12, 3) and torch.allclose(model.targets.sum(1), torch.ones(12))
    with torch.no_grad():
        q = model.net.clustering(model.embed_all(trainer.datamodule.split("train").x))
    torch.testing.assert_close(model.frequencies, q.sum(0))


class Snapshot(Callback):
    """The centroids and decoder weights right after the k-means initialisation."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.centroids is not None and not hasattr(self, "centroids"):
            self.epoch = trainer.current_epoch
            self.centroids = pl_module.centroids.clone()
            self.decoder = [p.detach().clone() for p in pl_module.net.decoder.parameters()]


def test_dec_phases_train_encoder_and_centroids_and_leave_the_decoder():
    model = DCECModule(_net(), n_clusters=3, pretrain_epochs=1,
                       clustering={"loss": "dec", "n_init": 2, "update_interval": 1000})
    snap = Snapshot()
    trainer = _quiet_trainer(max_epochs=3, callbacks=[snap])
    trainer.fit(model, datamodule=TinyImages(batch_size=4))
    assert snap.epoch == 1  # no centroids during the pretraining epoch
    assert model.pretrain_scores.keys() >= {"nmi", "ari", "acc", "train_nmi"}
    assert not torch.allclose(snap.centroids, model.centroids)  # KL moves the centroids
    for before, after in zip(snap.decoder, model.net.decoder.parameters()):
        assert torch.equal(before, after)  # dec: the decoder is out of the loss


def test_net_parts_and_the_default_autoencoder():
    series = default_autoencoder((2, 32), filters=(4,))
    image = default_autoencoder((1, 12, 12), filters=(4,), kernels=(3,), strides=(2,))
    assert type(series).__name__ == "ResNetCAE" and type(image).__name__ == "ConvAutoencoder"
    net = DeepClusteringNet(series, 4, alpha=2.0)
    assert net.encoder is series.encoder and net.target_layer == "features"
    assert net.clustering.centroids.shape == (4, 10) and not bool(net.clustering.initialised)
    with pytest.raises(UserError, match="no 'encoder' module"):
        DeepClusteringNet(torch.nn.Module(), 2)


BAD = [
    (["model.n_clusters=500"], ["n_clusters = 500", "30 samples of the training split"]),
    (["model.clustering.alpha=0"], ["model.clustering.alpha must be > 0, got 0"]),
    (["model.clustering.gamma=-0.1"], ["model.clustering.gamma must be >= 0, got -0.1"]),
    (["model.clustering.tol=0"], ["model.clustering.tol must be in (0, 1), got 0"]),
    (["model.clustering.tol=1.5"], ["model.clustering.tol must be in (0, 1), got 1.5"]),
    (["model.clustering.update_interval=0"], ["update_interval must be an integer >= 1", "got 0"]),
    (["model.clustering.loss=kl"], ["model.clustering.loss must be one of", "'kl'"]),
    (["model.pretrain_epochs=5", "trainer.max_epochs=5"], ["max_epochs = 5 leaves no clustering epoch"]),
    (["model.pretrained=/no/such.ckpt"], ["model.pretrained='/no/such.ckpt' does not exist"]),
]


@pytest.mark.parametrize("overrides, words", BAD, ids=[o[0] for o, _ in BAD])
def test_bad_settings_are_one_clear_message_before_training(overrides, words, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Exception) as info:  # noqa: B017 - the type is checked below
        train(["experiment=trace_dcec", *TINY, *overrides], out)
    message = user_error_message(info.value)
    assert message is not None, repr(info.value)
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    assert not (out / "checkpoints").exists()


@pytest.fixture(scope="module")
def autoencoder_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("ae")
    train(["experiment=trace", "trainer.max_epochs=1", *TINY[:4], "callbacks.cluster_explain.figures=false"], out)
    return out / "checkpoints" / "last.ckpt"


def test_dcec_run_its_checkpoint_and_an_autoencoder_checkpoint(tmp_path, autoencoder_ckpt):
    # from the pretrained autoencoder: pretrain_* are k-means' on its embeddings, exactly
    out = tmp_path / "dcec"
    train(["experiment=trace_dcec", *TINY, f"model.pretrained={autoencoder_ckpt}",
           "model.pretrain_epochs=0", "trainer.max_epochs=2", "seed=3"], out)
    m = json.loads((out / "metrics.json").read_text())
    ae = ResNetCAE((1, 275), filters=(4, 4)).eval()
    state = torch.load(autoencoder_ckpt, weights_only=True)["state_dict"]
    ae.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    from clustercam.data.ucr import UCRDataModule

    dm = UCRDataModule(name="Trace", max_samples=30)
    with torch.no_grad():
        ztr, zte = ae.encoder(dm.split("train").x), ae.encoder(dm.split("test").x)
    km = fit_kmeans(ztr.double().numpy(), 4, n_init=20, seed=3)
    expect = clustering_scores(dm.split("test").y, nearest(zte, torch.from_numpy(km.centroids)))
    assert m["pretrain_nmi"] == pytest.approx(expect["nmi"], abs=1e-9)
    assert m["pretrain_acc"] == pytest.approx(expect["acc"], abs=1e-9)
    assert {"nmi", "ari", "acc", "pretrain_ari", "cardinality_median"} <= set(m)
    assert m["clustering_model"] == "idec" and m["gradceam_mode"] == "student_t" and m["target_updates"] == 2
    # the assignments are the checkpoint's nearest centroids, not a k-means after training
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    mu = ckpt["state_dict"]["net.clustering.centroids"]
    dcec = ResNetCAE((1, 275), filters=(4, 4)).eval()
    dcec.load_state_dict({k[len("net.autoencoder."):]: v for k, v in ckpt["state_dict"].items()
                          if k.startswith("net.autoencoder.")})
    with torch.no_grad():
        own = nearest(dcec.encoder(dm.split("test").x), mu)
    rows = read_csv(out / "assignments.csv")
    assert [int(r["cluster"]) for r in rows] == own.tolist()
    # explaining the saved model: the same clusters and the k-means initialisation's scores
    again = tmp_path / "eval"
    train(["experiment=trace_dcec", *TINY, "train=false", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"], again)
    m2 = json.loads((again / "metrics.json").read_text())
    assert read_csv(again / "assignments.csv") == rows
    for key in ("nmi", "pretrain_nmi", "cardinality_median"):
        assert m2[key] == pytest.approx(m[key]), key
    # an autoencoder checkpoint where a DCEC model is needed: one clear message
    with pytest.raises(UserError, match="not a DCEC model's .* model.pretrained"):
        train(["experiment=trace_dcec", *TINY, "train=false", f"ckpt_path={autoencoder_ckpt}"],
              tmp_path / "wrong")


def test_debug_fdr_runs_every_phase(tmp_path):
    m = train(["experiment=trace_dcec", "debug=fdr", *TINY], tmp_path)
    assert m["test/clustering_model"] == "idec" and "test/pretrain_nmi" in m
    assert m["test/target_updates"] == 1 and 0 <= m["test/nmi"] <= 1
