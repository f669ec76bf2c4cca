"""The LightningModule for deep clustering (DEC / IDEC / DCEC) as one run.

Phases, in ``trainer.max_epochs`` epochs in all:

1. **pretrain** (``pretrain_epochs``): the autoencoder alone, MSE (skipped with a
   ``pretrained`` autoencoder checkpoint and ``pretrain_epochs: 0``);
2. **k-means initialisation** at the first batch after it: k-means (``n_init`` restarts) on
   the embeddings of the whole training split sets the clustering layer's centroids; their
   NMI / ARI / accuracy on the evaluated split are kept as ``pretrain_*``;
3. **clustering**: every ``update_interval`` training steps (default once per epoch) the
   target distribution P is recomputed from q of the whole training split and held fixed
   until the next update; the loss is ``L_rec + gamma KL(P || Q)`` (``idec``, DCEC on a conv
   AE) or ``KL(P || Q)`` (``dec``, the decoder unused). Training stops when the share of
   training samples whose cluster (argmax q) changed since the last update is below ``tol``.

Under DDP each rank embeds every ``world``-th training sample and the shares are gathered,
so q, the cluster sizes f_k, P and the changed share are those of the whole split, the same
on every rank (and equal to one process's). A checkpoint carries the centroids, P, the last
labels and the ``pretrain_*`` scores.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.assignments import kl_divergence, nearest, target_distribution
from clustercam.explain.clustering import clustering_scores, fit_kmeans
from clustercam.explain.hooks import embed
from clustercam.models.components.dcec import DeepClusteringNet, build_autoencoder
from clustercam.models.optim import check_optimizer

log = logging.getLogger(__name__)
LOSSES = ("idec", "dec")


@dataclass(frozen=True)
class ClusteringSettings:
    """``model.clustering``: the loss (``idec`` | ``dec``), the Student-t ``alpha``, the KL
    weight ``gamma`` (idec), ``update_interval`` (training steps between target updates;
    None: once per epoch), the stop threshold ``tol`` and k-means' ``n_init``."""

    loss: str = "idec"
    alpha: float = 1.0
    gamma: float = 0.1
    update_interval: int | None = None
    tol: float = 0.001
    n_init: int = 20

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise UserError(f"model.clustering.loss must be one of {LOSSES}, got {self.loss!r}")
        if not self.alpha > 0:
            raise UserError(f"model.clustering.alpha must be > 0, got {self.alpha}")
        if not self.gamma >= 0:
            raise UserError(f"model.clustering.gamma must be >= 0, got {self.gamma}")
        if self.update_interval is not None and (
                not isinstance(self.update_interval, int) or self.update_interval < 1):
            raise UserError(f"model.clustering.update_interval must be an integer >= 1 or null, "
                            f"got {self.update_interval!r}")
        if not 0 < self.tol < 1:
            raise UserError(f"model.clustering.tol must be in (0, 1), got {self.tol}")
        if not isinstance(self.n_init, int) or self.n_init < 1:
            raise UserError(f"model.clustering.n_init must be an integer >= 1, got {self.n_init!r}")


def load_autoencoder_weights(autoencoder: nn.Module, path: str | Path) -> None:
    """Load an autoencoder checkpoint (an AutoencoderModule's or a DCEC model's) into
    ``autoencoder``; a file of another architecture is one clear error."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"model.pretrained={str(path)!r} does not exist: give an autoencoder "
                        "checkpoint (<run>/checkpoints/last.ckpt of an autoencoder run)")
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else {}
    prefix = "net.autoencoder." if any(k.startswith("net.autoencoder.") for k in state) else "net."
    own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = autoencoder.load_state_dict(own, strict=False)
    if not own or missing or unexpected:
        raise UserError(f"model.pretrained={str(path)!r} is not a checkpoint of this autoencoder "
                        f"({type(autoencoder).__name__}): {len(missing)} weights missing (e.g. "
                        f"{missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")


class DCECModule(LightningModule):
    """DEC / IDEC / DCEC on any clustercam autoencoder (see the module docstring).

    Args:
        net: the autoencoder: a partial ``net(input_shape=...)``, a module, or None / a
            mapping of settings for the paper's autoencoder of the data's shape.
        n_clusters: K (clustercam.train fills it from the datamodule's classes when null).
        clustering: :class:`ClusteringSettings` as a mapping.
        pretrain_epochs: autoencoder epochs before the k-means initialisation.
        pretrained: an autoencoder checkpoint to start from.
        optimizer: an optimizer partial (default Adam, lr 1e-3), for both phases.
        input_shape: the data's C x L or C x H x W (set by clustercam.train).
        seed: k-means' seed.

    Raises:
        UserError: a setting out of range, or a pretrained file that does not fit.
    """

    def __init__(
        self,
        net: Callable[..., nn.Module] | nn.Module | Mapping[str, Any] | None = None,
        n_clusters: int | None = None,
        clustering: Mapping[str, Any] | None = None,
        pretrain_epochs: int = 0,
        pretrained: str | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        input_shape: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        input_shape = None if input_shape is None else [int(s) for s in input_shape]
        clustering = asdict(ClusteringSettings(**dict(clustering or {})))
        if n_clusters is None:
            raise UserError("model.n_clusters is null and the datamodule has no classes: set it")
        if not isinstance(pretrain_epochs, int) or pretrain_epochs < 0:
            raise UserError(f"model.pretrain_epochs must be an integer >= 0, got {pretrain_epochs!r}")
        self.save_hyperparameters(ignore=["net", "optimizer"])
        self.settings = ClusteringSettings(**clustering)
        autoencoder = build_autoencoder(net, input_shape)
        if pretrained:
            load_autoencoder_weights(autoencoder, pretrained)
        self.net = DeepClusteringNet(autoencoder, int(n_clusters), self.settings.alpha)
        check_optimizer(optimizer)
        self.optimizer_factory = optimizer
        self.pretrain_epochs, self.seed = pretrain_epochs, seed
        self.targets: Tensor | None = None  # P of the training split, N x K
        self.frequencies: Tensor | None = None  # f_k = sum_i q_ik over the training split
        self.labels: Tensor | None = None  # argmax q at the last update
        self.since_update = 0
        self.pretrain_scores: dict[str, float] = {}
        self.history: list[dict[str, float]] = []  # one row per target update

    # -- what the callbacks read ----------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    @property
    def target_layer(self) -> str | None:
        return self.net.target_layer

    @property
    def centroids(self) -> Tensor | None:
        """The clustering layer's centroids, None before the k-means initialisation."""
        layer = self.net.clustering
        return layer.centroids.detach() if bool(layer.initialised) else None

    def clustering_results(self) -> dict[str, Any]:
        """For metrics.json: the k-means initialisation's scores as ``pretrain_*``, the model."""
        out: dict[str, Any] = {f"pretrain_{k}": v for k, v in self.pretrain_scores.items()}
        out.update({"clustering_model": self.settings.loss, "clustering_alpha": self.settings.alpha,
                    "target_updates": len(self.history)})
        if self.history:
            out["last_changed_share"] = self.history[-1]["changed"]
        return out

    # -- checks before training -----------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        train = self._train_set()
        k, n = self.net.clustering.n_clusters, len(train) if train is not None else math.inf
        if k > n:
            raise UserError(f"model.n_clusters = {k} is larger than the {n} samples of the training "
                            "split (k-means initialises the centroids there)")
        epochs = self.trainer.max_epochs
        if (not self.trainer.fast_dev_run and epochs not in (None, -1)
                and self.pretrain_epochs >= epochs and not bool(self.net.clustering.initialised)):
            raise UserError(f"trainer.max_epochs = {epochs} leaves no clustering epoch after "
                            f"model.pretrain_epochs = {self.pretrain_epochs} (max_epochs counts all epochs)")

    def _train_set(self) -> Any:
        """The training split's dataset (None before the loaders exist without a datamodule)."""
        loader = self.trainer.train_dataloader
        if loader is None and getattr(self.trainer, "datamodule", None) is not None:
            loader = self.trainer.datamodule.train_dataloader()
        return getattr(loader, "dataset", None)

    def _train_tensors(self) -> tuple[Tensor, Tensor]:
        ds = self._train_set()
        if ds is None:
            raise UserError("DCEC needs the training split as a dataset of (x, y, index) items")
        if isinstance(getattr(ds, "x", None), Tensor) and isinstance(getattr(ds, "y", None), Tensor):
            return ds.x, ds.y
        items = [ds[i] for i in range(len(ds))]
        return torch.stack([it[0] for it in items]), torch.as_tensor([int(it[1]) for it in items])

    # -- the whole split across ranks -----------------------------------------------------
    def embed_all(self, x: Tensor) -> Tensor:
        """Embeddings of every row of ``x`` in order: rank r embeds rows r, r + world, ...
        (eval mode), and the shares are all-gathered."""
        world, rank = self.trainer.world_size, self.trainer.global_rank
        z = embed(self.net.encoder, x[rank::world], batch_size=512)
        if world == 1:
            return z
        n_max = math.ceil(len(x) / world)
        padded = torch.cat([z, z.new_zeros(n_max - len(z), z.shape[1])]).to(self.device)
        gathered = self.all_gather(padded).cpu()  # world x n_max x m
        out = z.new_empty(len(x), z.shape[1])
        for r in range(world):
            out[r::world] = gathered[r, : len(range(r, len(x), world))]
        return out

    def _pretrain_epochs(self) -> int:
        return 0 if self.trainer.fast_dev_run else self.pretrain_epochs

    def _initialise(self) -> None:
        x, y = self._train_tensors()
        z = self.embed_all(x)
        k = self.net.clustering.n_clusters
        mu = None
        if self.trainer.is_global_zero:
            mu = torch.from_numpy(fit_kmeans(z.double().numpy(), k, self.settings.n_init,
                                             self.seed).centroids).float()
        mu = self.trainer.strategy.broadcast(mu, src=0)
        self.net.clustering.initialise(mu)
        for opt in self.trainer.optimizers:  # no Adam moments from the zero-gradient pretraining
            opt.state.pop(self.net.clustering.centroids, None)
        # every rank holds the whole split: each scores its share, torchmetrics gathers (collective)
        ranks = (self.trainer.global_rank, self.trainer.world_size, self.device)
        scores = {f"train_{k}": v for k, v in clustering_scores(y, nearest(z, mu), *ranks).items()}
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "eval_tensors"):
            xe, ye = dm.eval_tensors()
            scores.update(clustering_scores(ye, nearest(self.embed_all(xe), mu), *ranks))
        self.pretrain_scores = scores
        self._log_now({f"pretrain/{k}": v for k, v in scores.items()})
        log.info("DCEC: k-means initialisation (epoch %d, %d training embeddings): NMI %.3f on the "
                 "evaluated split, %.3f on the training split; clustering phase (%s) begins",
                 self.current_epoch, len(z), scores.get("nmi", math.nan), scores["train_nmi"],
                 self.settings.loss)

    def update_targets(self) -> bool:
        """Recompute P from q of the whole training split; True when training should stop."""
        x, _ = self._train_tensors()
        with torch.no_grad():
            q = self.net.clustering(self.embed_all(x).to(self.net.clustering.centroids)).cpu()
        labels = q.argmax(1)
        changed = math.nan if self.labels is None else float((labels != self.labels).double().mean())
        self.frequencies = q.sum(0)
        self.targets, self.labels = target_distribution(q, self.frequencies), labels
        self.history.append({"step": float(self.global_step), "changed": changed})
        if not math.isnan(changed):
            self.log("train/changed_labels", changed, on_step=True, on_epoch=False, prog_bar=True)
        stop = changed < self.settings.tol  # False for the first update (NaN)
        log.info("DCEC: target distribution updated at step %d: %s of the labels changed%s",
                 self.global_step, "-" if math.isnan(changed) else f"{changed:.4f}",
                 f" < tol {self.settings.tol}: stopping" if stop else "")
        return stop

    def _log_now(self, values: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_metrics(values, step=self.global_step)

    # -- training ---------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        layer = self.net.clustering
        if not bool(layer.initialised) and self.current_epoch >= self._pretrain_epochs():
            self._initialise()
            self.since_update = 0
        if not bool(layer.initialised):
            return None
        interval = self.settings.update_interval or max(1, int(self.trainer.num_training_batches))
        if self.since_update % interval == 0 and self.update_targets():
            self.trainer.should_stop = True
            return -1
        self.since_update += 1
        return None

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, idx = batch[0], batch[2]
        ddp = self.trainer.world_size > 1
        if not bool(self.net.clustering.initialised):
            loss = rec = F.mse_loss(self.net.autoencoder(x), x)
            if ddp:  # DDP needs a gradient (zero) for every parameter, the centroids too
                loss = loss + 0.0 * self.net.clustering.centroids.sum()
            self.log_dict({"train/phase": 0.0, "train/recon": rec}, prog_bar=True, batch_size=len(x))
        else:
            z = self.net.encoder(x)
            kl = kl_divergence(self.targets[idx.cpu()].to(z), self.net.clustering(z))
            if self.settings.loss == "idec":
                rec = F.mse_loss(self.net.decoder(z), x)
                loss = rec + self.settings.gamma * kl
                self.log("train/recon", rec, prog_bar=True, batch_size=len(x))
            else:
                loss = kl
                if ddp:
                    loss = loss + 0.0 * sum(p.sum() for p in self.net.decoder.parameters())
            self.log_dict({"train/phase": 1.0, "train/kl": kl}, prog_bar=True, batch_size=len(x))
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    # -- evaluation ---------------------------------------------------------------------------
    def _eval_step(self, batch: Any, split: str) -> dict[str, Tensor]:
        x, y, idx = batch
        z = self.net.encoder(x)
        if self.settings.loss == "idec" or not bool(self.net.clustering.initialised):
            loss = F.mse_loss(self.net.decoder(z), x)
            self.log(f"{split}/loss", loss, on_epoch=True, prog_bar=split == "val", sync_dist=True,
                     batch_size=len(x))
        return {"z": z.detach(), "y": y, "idx": idx}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.net.clustering(self.net.encoder(batch[0]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            return torch.optim.Adam(self.parameters(), lr=1e-3)
        return self.optimizer_factory(params=self.parameters())

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["dcec"] = {"targets": self.targets, "frequencies": self.frequencies, "labels": self.labels,
                              "since_update": self.since_update, "pretrain_scores": self.pretrain_scores,
                              "history": self.history}

    def check_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        """Raise UserError when ``checkpoint`` is not this DCEC model's (before the run, through
        :func:`clustercam.runtime.checkpoints.check_checkpoint`, and again when it is loaded)."""
        if checkpoint.get("dcec") is None:
            raise UserError("the checkpoint (ckpt_path) is not a DCEC model's (it has no clustering "
                            "layer); to start deep clustering from a trained autoencoder, give it as "
                            "model.pretrained=<file> instead")
        mu = checkpoint.get("state_dict", {}).get("net.clustering.centroids")
        if mu is not None and tuple(mu.shape) != tuple(self.net.clustering.centroids.shape):
            raise UserError(f"the checkpoint's clustering layer has {tuple(mu.shape)} centroids (K x m), "
                            f"this model {tuple(self.net.clustering.centroids.shape)}: set model.n_clusters")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_checkpoint(checkpoint)
        state = checkpoint["dcec"]
        self.targets, self.labels = state["targets"], state["labels"]
        self.frequencies = state.get("frequencies")
        self.since_update = int(state["since_update"])
        self.pretrain_scores = dict(state["pretrain_scores"])
        self.history = list(state["history"])
