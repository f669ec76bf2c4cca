"""A frozen timm classifier split into ``g`` (features) and ``h`` (head) for concepts (concepts paper § 3).

``g = forward_features`` (for ``nf_resnet50``: 2048 x 8 x 8, non-negative), ``h =
forward_head`` (average pool + linear). Weights are resolved by
:mod:`clustercam.models.timm_weights` (a local file, the cache, the hub; random only with
``pretrained: false``, recorded as ``weights_source == "random"``). ``num_classes`` /
``model_kwargs`` (e.g. ``output_stride: 8``, ``in_chans: 1``) go to ``timm.create_model``.
Given the input shape, the last feature map must be at least 2 x 2 (CGAP clusters its
positions), checked at construction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.concepts.image.ablation import PooledHead
from clustercam.models.timm_weights import (
    build_timm_model,
    split_model_name,
)

log = logging.getLogger(__name__)


def check_feature_map(net: nn.Module, input_shape: Sequence[int], name: str) -> tuple[int, ...]:
    """C x H x W of ``net.forward_features`` for one input of ``input_shape`` (C x H x W);
    a clear error when the map is smaller than 2 x 2 (CGAP needs positions to cluster)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise UserError(f"input_shape must be C x H x W, got {list(shape)}")
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            a = net.forward_features(torch.zeros(1, *shape))
    except RuntimeError as err:
        raise UserError(f"timm model {name!r} cannot take inputs of shape {list(shape)}: "
                         f"{str(err).splitlines()[0][:200]}") from None
    finally:
        net.train(was_training)
    if a.dim() != 4 or min(a.shape[-2:]) < 2:
        raise UserError(
            f"the feature map of {name!r} at input {list(shape)} is {list(a.shape[1:])}: smaller "
            "than 2 x 2, so concepts have no positions to cluster (CGAP) or locate (CPHA). Use "
            "a larger input (data.size) or a smaller stride, e.g. model.model_kwargs.output_stride=8")
    return tuple(a.shape[1:])


class ClassifierModule(LightningModule):
    """A frozen timm classifier whose test/predict steps return ``g(x)`` for each batch.

    ``name``: any timm model, optionally with its pretrained tag (``nf_resnet50.ra2_in1k``;
    ``pretrained_tag`` overrides the tag). ``num_classes`` and ``model_kwargs`` go to
    ``timm.create_model`` (they must match a weights file's); ``input_shape`` (C x H x W,
    set from the datamodule by ``clustercam.train`` where known) checks the feature map size.
    Batches are ``(x, y, index, ...)``; steps return ``{"activations", "y", "idx",
    "logits"}`` for the concept callback, which calls :meth:`head` (``h``) itself.
    There is no training step: the classifier stays frozen (see
    :class:`~clustercam.models.trainable_classifier.TrainableClassifierModule`).
    """

    warn_random = True  # random weights in a frozen classifier: say so loudly

    def __init__(
        self,
        name: str = "nf_resnet50.ra2_in1k",
        pretrained: bool = True,
        checkpoint_path: str | None = None,
        pretrained_tag: str | None = None,
        num_classes: int | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if num_classes is not None and int(num_classes) < 1:
            raise UserError(f"num_classes must be >= 1, got {num_classes}")
        self.net, self.weights_source = build_timm_model(
            name, pretrained, checkpoint_path, pretrained_tag, self.warn_random,
            num_classes=num_classes, **dict(model_kwargs or {}))
        arch, tag = split_model_name(name, pretrained_tag)
        self.model_name = arch
        self.full_name = f"{arch}.{tag}" if tag else arch
        self.pretrained = self.weights_source != "random"
        self.feature_shape = (check_feature_map(self.net, input_shape, self.full_name)
                              if input_shape is not None else None)
        self.freeze_net()

    def freeze_net(self) -> None:
        """Eval mode and no gradients for the classifier's parameters."""
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def setup(self, stage: str) -> None:
        """Check the feature map on the datamodule's input size where __init__ could not."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.feature_shape is None and dm is not None:
            shape = getattr(dm, "input_shape", None)
            if shape is None and getattr(dm, "input_size", None) is not None:
                shape = (int(getattr(self.net, "in_chans", 3) or 3), *dm.input_size)
            if shape is not None:
                self.feature_shape = check_feature_map(self.net, shape, self.full_name)

    def train(self, mode: bool = True) -> ClassifierModule:
        """Always eval: the classifier is frozen (no dropout, fixed statistics)."""
        return super().train(False)

    def features(self, x: Tensor) -> Tensor:
        """g: the last feature map before pooling (B x C x H x W), float32.

        On CUDA the backbone runs under bf16 autocast (where the GPU supports bf16; set
        ``autocast_dtype = None`` on the module for float32) in channels_last memory format,
        and the activations come back as contiguous float32, so the clustering and the
        metrics that follow run in float32 on the same device. On CPU: plain float32.
        """
        if x.device.type != "cuda":
            return self.net.forward_features(x)
        if not getattr(self, "_channels_last", False):
            self.net.to(memory_format=torch.channels_last)
            self._channels_last = True
        dtype = getattr(self, "autocast_dtype", torch.bfloat16)
        enabled = dtype is not None and (dtype != torch.bfloat16 or torch.cuda.is_bf16_supported())
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=enabled):
            a = self.net.forward_features(x.contiguous(memory_format=torch.channels_last))
        return a.float().contiguous()

    def head(self, activations: Tensor) -> Tensor:
        """h: logits from (possibly ablated) activations."""
        return self.net.forward_head(activations)

    @property
    def pooled_head(self) -> PooledHead | None:
        """``h = linear(pool(A))`` when timm's head is a channel-wise pooling + one linear
        layer (resnets, NF-ResNets...): lets concept fidelity batch ablations as rows of the
        linear layer (masking channels commutes with the pooling). None otherwise."""
        fc = self.net.get_classifier() if hasattr(self.net, "get_classifier") else None
        if not isinstance(fc, nn.Linear):
            return None
        return PooledHead(pool=lambda a: self.net.forward_head(a, pre_logits=True), linear=fc)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def _step(self, batch: Any) -> dict[str, Tensor]:
        """g(x) and h(g(x)) of a batch, on the batch's device (the concept callback clusters
        them there: on a GPU the whole concept loop stays on it)."""
        x, y, idx = batch[0], batch[1], batch[2]
        a = self.features(x)
        return {"activations": a, "logits": self.head(a), "y": y, "idx": idx}

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        return self._step(batch)

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the classifier."""
        return {"model": self.full_name, "pretrained": self.pretrained,
                "weights": self.weights_source}
