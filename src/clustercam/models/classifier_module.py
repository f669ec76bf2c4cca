"""A frozen timm classifier split into ``g`` (features) and ``h`` (head) for concepts (concepts paper § 3).

``g = forward_features`` (for ``nf_resnet50``: 2048 x 8 x 8, non-negative), ``h =
forward_head`` (average pool + linear); or ``g`` = any layer's output, read as channels at
grid positions (tokens and channels-last maps included, :mod:`clustercam.explain.layouts`),
and ``h`` = the rest of the network from that layer. Weights are resolved by
:mod:`clustercam.models.timm_weights` (a local file, the cache, the hub; random only with
``pretrained: false``, recorded as ``weights_source == "random"``). ``num_classes`` /
``model_kwargs`` (e.g. ``output_stride: 8``, ``in_chans: 1``) go to ``timm.create_model``.
Given the input shape, the layer's grid must have at least 2 positions (CGAP clusters
them), checked at construction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning import LightningModule
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.concepts.image.ablation import BatchHead, PooledHead, check_pooled
from clustercam.explain.concepts.image.layer import (
    earlier_layer,
    features_head,
    rest_of_network,
    warn_if_unreachable,
)
from clustercam.explain.hooks import hooked, layer_name, resolve_layer
from clustercam.explain.layouts import Layout, LayoutSpec, grid_2d, infer_layout
from clustercam.models.timm_weights import (
    build_timm_model,
    split_model_name,
)

log = logging.getLogger(__name__)


def check_feature_map(net: nn.Module, input_shape: Sequence[int], name: str, layer: str | None = None,
                      layout: LayoutSpec = "auto") -> tuple[int, ...]:
    """C x h x w of the concept layer (``net.forward_features`` for ``layer=None``) for one
    input of ``input_shape`` (C x H x W, or C x L for series: then C x 1 x l), as the layout
    reads it; a clear error when it has fewer than 2 positions (CGAP needs positions to
    cluster) or none at all."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (2, 3):
        raise UserError(f"input_shape must be C x H x W (images) or C x L (series), got {list(shape)}")
    dims = int(getattr(net, "input_dims", 2))  # 1: a series classifier (ts_classifiers)
    if len(shape) - 1 != dims:
        given = "series (C x L)" if len(shape) == 2 else "images (C x H x W)"
        wants, fix = (("series (C x L)", "a series datamodule (data=ucr), or an image classifier "
                       "(model=timm_classifier) for this data") if dims == 1 else
                      ("images (C x H x W)", "an image datamodule, or a series classifier "
                       "(model=fcn_classifier) for this data"))
        raise UserError(f"{name!r} classifies {wants} but the data gives {given} of shape {list(shape)}: use {fix}")
    module = resolve_layer(net, layer) if layer is not None else None
    was_training = net.training
    net.eval()
    x = torch.zeros(1, *shape)
    try:
        with torch.no_grad():
            out = _capture(net, module, x)[0]
    except (RuntimeError, AssertionError) as err:  # timm asserts the input size of fixed-size models
        raise UserError(f"timm model {name!r} cannot take inputs of shape {list(shape)}: "
                         f"{str(err).splitlines()[0][:200]}") from None
    finally:
        net.train(was_training)
    where = f"the feature map of {name!r}" if layer is None else f"layer {layer!r} of {name!r}"
    try:
        lay = infer_layout(out, model=net, layer=module, input_size=shape[1:], layout=layout,
                           name=f"{where} at input {list(shape)}")
    except UserError as err:
        if layer is None and "fewer than 2 positions" in str(err):
            raise UserError(f"{err}. For a CNN's final map: a larger input (data.size) or a smaller "
                            "stride, e.g. model.model_kwargs.output_stride=8") from None
        raise
    return tuple(grid_2d(lay.read(out)).shape[1:])


def _capture(net: nn.Module, module: nn.Module | None, x: Tensor) -> tuple[Tensor, Tensor]:
    """(the concept layer's output, the logits) of one forward pass: ``forward_features`` /
    ``forward_head`` for the final features (``module=None``), else the layer's output
    caught by a hook during ``net(x)``."""
    if module is None:
        raw = net.forward_features(x)
        return raw, net.forward_head(raw)
    caught: dict[str, Tensor] = {}

    def keep(output: Tensor) -> None:
        caught["out"] = output

    with hooked(module, keep):
        logits = net(x)
    if "out" not in caught:
        raise UserError(f"layer {layer_name(net, module)!r} is not called by the network's forward pass")
    return caught["out"], logits


class ClassifierModule(LightningModule):
    """A frozen timm classifier whose test/predict steps return a layer's activations per batch.

    ``name``: any timm model, optionally with its pretrained tag (``nf_resnet50.ra2_in1k``;
    ``pretrained_tag`` overrides the tag). ``num_classes`` and ``model_kwargs`` go to
    ``timm.create_model`` (they must match a weights file's); ``input_shape`` (C x H x W,
    set from the datamodule by ``clustercam.train`` where known) checks the layer's grid.
    ``layer``: the module (dotted name) whose output the concepts cluster (None: the final
    features, ``forward_features``); ``layout``: how its output is read (``auto``: from the
    model, see :func:`~clustercam.explain.layouts.infer_layout`; ``nchw``, ``nhwc``,
    ``tokens``, ``ncl`` or a callable). Batches are ``(x, y, index, ...)``; steps return
    ``{"activations", "y", "idx", "logits", "layer_output"}`` for the concept callback,
    which asks :meth:`concept_head` for the head of the batch's ablations.
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
        layer: str | None = None,
        layout: LayoutSpec = "auto",
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
        self.feature_shape = None
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.set_concept_layer(layer, layout)
        self.freeze_net()

    def set_concept_layer(self, layer: str | None, layout: LayoutSpec = "auto") -> None:
        """Cluster the output of ``layer`` (None: the final features), read with ``layout``.

        Raises:
            UserError: a name that is not a module of the network (the message lists its
                modules, closest first), a layer with no positions, a bad layout.
        """
        self.layer_name = layer or None
        if self.layer_name:
            resolve_layer(self.net, self.layer_name)
        self.layout_spec = layout if layout is not None else "auto"
        self._layout: Layout | None = None
        self._reach_checked = False
        self._pooled_ok: bool | None = None  # the pooled head reproduces the head (None: not checked)
        if self.input_shape is not None:
            self.feature_shape = check_feature_map(self.net, self.input_shape, self.full_name,
                                                   self.layer_name, self.layout_spec)

    @property
    def layer(self) -> nn.Module | None:
        """The concept layer's module (None: the final features); not registered as a child,
        so the state dict stays the network's."""
        return resolve_layer(self.net, self.layer_name) if self.layer_name else None

    def freeze_net(self) -> None:
        """Eval mode and no gradients for the classifier's parameters."""
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def setup(self, stage: str) -> None:
        """Check the layer's grid on the datamodule's input size where __init__ could not."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self.feature_shape is None and dm is not None:
            shape = getattr(dm, "input_shape", None)
            if shape is None and getattr(dm, "input_size", None) is not None:
                shape = (int(getattr(self.net, "in_chans", 3) or 3), *dm.input_size)
            if shape is not None:
                self.input_shape = tuple(shape)
                self.feature_shape = check_feature_map(self.net, shape, self.full_name, self.layer_name,
                                                       self.layout_spec)

    def train(self, mode: bool = True) -> ClassifierModule:
        """Always eval: the classifier is frozen (no dropout, fixed statistics)."""
        return super().train(False)

    def layer_output(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(the concept layer's output in its own layout, the logits) of one forward pass.

        On CUDA the backbone runs under bf16 autocast (where the GPU supports bf16; set
        ``autocast_dtype = None`` on the module for float32) in channels_last memory format,
        and both come back as float32. On CPU: plain float32.
        """
        if x.device.type != "cuda" or x.dim() != 4:  # series: no channels_last for 3-D inputs
            return _capture(self.net, self.layer, x)
        if not getattr(self, "_channels_last", False):
            self.net.to(memory_format=torch.channels_last)
            self._channels_last = True
        dtype = getattr(self, "autocast_dtype", torch.bfloat16)
        enabled = dtype is not None and (dtype != torch.bfloat16 or torch.cuda.is_bf16_supported())
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=enabled):
            raw, logits = _capture(self.net, self.layer, x.contiguous(memory_format=torch.channels_last))
        return raw.float(), logits.float()

    def layout_of(self, output: Tensor, x: Tensor) -> Layout:
        """The layout of the concept layer's ``output`` for the inputs ``x``."""
        lay = infer_layout(output, model=self.net, layer=self.layer, input_size=tuple(x.shape[2:]),
                           layout=self.layout_spec, name=self.describe_layer())
        self._layout = lay
        return lay

    def describe_layer(self) -> str:
        """The concept layer, for messages."""
        return f"layer {self.layer_name!r}" if self.layer_name else f"the final features of {self.full_name!r}"

    def features(self, x: Tensor) -> Tensor:
        """g: the concept layer's output as B x C x h x w (channels at grid positions), float32."""
        raw, _ = self.layer_output(x)
        return grid_2d(self.layout_of(raw, x).read(raw)).float().contiguous()

    def _own_layout(self, activations: Tensor) -> Tensor | None:
        """Final features in the model's own layout from their grid, where the grid is all
        there is (NCHW, channels-last, tokens without prefix tokens); else None."""
        lay = self._layout
        if self.layer is not None:
            return None
        if lay is None or lay.kind == "nchw":
            return activations
        if lay.kind == "ncl":
            return activations.flatten(2)
        if lay.kind == "nhwc":
            return activations.permute(0, 2, 3, 1)
        if lay.kind == "tokens" and lay.prefix == 0:
            return activations.flatten(2).transpose(1, 2)
        return None

    def head(self, activations: Tensor) -> Tensor:
        """h: logits from (possibly ablated) final features, for heads that need nothing else
        (NCHW, channels-last, tokens without prefix tokens); see :meth:`concept_head` for
        the others and for intermediate layers."""
        own = self._own_layout(activations)
        if own is None:
            kind = self._layout.kind if self._layout is not None else "unread"
            raise UserError(f"the head of {self.describe_layer()} ({kind} layout) needs the batch's inputs: "
                            "use concept_head(x, step_output) or concept_batch(x)")
        return self.net.forward_head(own)

    def concept_head(self, x: Tensor, out: Mapping[str, Any]) -> Callable[[Tensor], Tensor] | BatchHead:
        """The head of the batch ``x``'s ablations, given its step output ``out``: :meth:`head`
        for the final features of a CNN (or channels-last), the head on the tokens written
        back (prefix tokens kept) for a token model's final features, and the rest of the
        network from the layer (a forward hook on ``net(x)``) for any other layer. The first
        call warns if ablating the layer cannot change the logits (:meth:`check_reach`)."""
        raw = out["layer_output"]
        lay = self.layout_of(raw, x)
        if self.layer is None and (lay.kind in ("nchw", "nhwc", "ncl") or (lay.kind == "tokens" and not lay.prefix)):
            head = self.head
        elif self.layer is None:
            head = features_head(self.net.forward_head, lay, raw)
        else:
            head = rest_of_network(self.net, self.layer, lay, x)
        if "logits" in out:
            self.check_reach(head, out["activations"], out["logits"])
        if self._pooled_ok is None and self.layer is None:  # once: does the pooled form hold?
            candidate = self.pooled_head
            self._pooled_ok = candidate is not None and bool(check_pooled(head, candidate, out["activations"]))
        return head

    def check_reach(self, head: Callable[[Tensor], Tensor], activations: Tensor, logits: Tensor) -> None:
        """Once per run: warn when the layer's ablation cannot change the logits."""
        if self._reach_checked:
            return
        self._reach_checked = True
        warn_if_unreachable(head, activations, logits, layer=self.layer_name or "final features",
                            earlier=earlier_layer(self.net, self.layer_name))

    @property
    def pooled_head(self) -> PooledHead | None:
        """``h = linear(pool(A))`` when the concept layer is the final features and timm's head
        pools per channel first: concept ablations are then pooled rows (masking channels
        commutes with the pooling), no copies of the activations. Affine (rows of the linear
        layer, fidelity as sums of shares) when the head is pooling + one linear layer
        (ResNets, NF-ResNets, Swin, a mean-pooled ViT with ``fc_norm=False``); a mean over the
        grid followed by the rest of the head on a 1 x 1 grid when a norm sits between them
        (ConvNeXt, timm's default mean-pooled ViT). None for an intermediate layer, or when
        the first batch showed the form does not reproduce the head (a class token)."""
        if self.layer is not None or self._pooled_ok is False:  # no layout read yet: NCHW, as timm's CNNs
            return None
        fc = self.net.get_classifier() if hasattr(self.net, "get_classifier") else None
        if not isinstance(fc, nn.Linear):
            return None
        head = getattr(self.net, "head", None)
        norms = [n for n in (getattr(head, "norm", None), getattr(self.net, "fc_norm", None))
                 if n is not None and not isinstance(n, nn.Identity)]
        checked = bool(self._pooled_ok)
        if not norms and self._own_layout(torch.zeros(1, 1, 1, 1)) is not None:
            return PooledHead(pool=self.head_pre_logits, linear=fc, checked=checked)
        return PooledHead(pool=lambda a: a.mean((2, 3)), linear=self._head_of_pooled, checked=checked, affine=False)

    def _head_of_pooled(self, pooled: Tensor) -> Tensor:
        """The head on a 1 x 1 grid holding ``pooled`` (N x C): the rest of a head that
        starts with a mean over the grid (prefix tokens zero: a mean-pooled ViT skips them)."""
        lay, grid = self._layout or Layout("nchw"), pooled[:, :, None, None]
        if lay.kind == "tokens":
            prefix = pooled.new_zeros(len(pooled), lay.prefix, pooled.shape[1])
            return self.net.forward_head(torch.cat([prefix, grid.flatten(2).transpose(1, 2)], 1))
        return self.net.forward_head(grid.permute(0, 2, 3, 1) if lay.kind == "nhwc" else grid)

    def head_pre_logits(self, activations: Tensor) -> Tensor:
        """The pooled features (timm's ``forward_head(pre_logits=True)``) of final features."""
        return self.net.forward_head(self._own_layout(activations), pre_logits=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer_output(x)[1]

    @torch.no_grad()
    def _step(self, batch: Any) -> dict[str, Tensor]:
        """The concept layer's grid and the logits of a batch, on the batch's device (the
        concept callback clusters them there: on a GPU the whole concept loop stays on it)."""
        x, y, idx = batch[0], batch[1], batch[2]
        raw, logits = self.layer_output(x)
        a = grid_2d(self.layout_of(raw, x).read(raw)).float().contiguous()
        return {"activations": a, "logits": logits, "y": y, "idx": idx, "layer_output": raw}

    @torch.no_grad()
    def concept_batch(self, x: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor] | BatchHead, Tensor]:
        """(activations, :meth:`concept_head`, logits) of the inputs ``x``: what a second pass
        over the images (class concepts) needs."""
        out = self._step((x, None, None))
        return out["activations"], self.concept_head(x, out), out["logits"]

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._step(batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        return self._step(batch)

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the classifier."""
        return {"model": self.full_name, "pretrained": self.pretrained,
                "weights": self.weights_source, "layer": self.layer_name or "final features",
                "layout": self._layout.kind if self._layout is not None
                else self.layout_spec if isinstance(self.layout_spec, str) else "custom"}
