"""A frozen timm classifier split into ``g`` (features) and ``h`` (head) for concepts (concepts paper § 3).

``g = forward_features`` (for ``nf_resnet50``: 2048 x 8 x 8, non-negative), ``h =
forward_head`` (average pool + linear). Weights: from a local file when
``checkpoint_path`` is given, else from the Hugging Face cache or hub; only
``pretrained: false`` gives random weights (logged as a warning and recorded as
``weights_source == "random"``). Offline without weights the run ends at once with one
message that says how to provide them (no download retry loop). A weights file is
loaded strictly (every key, every shape), so a file saved for another architecture,
class count or channel count fails with one message listing what does not fit.
``num_classes`` / ``model_kwargs`` (e.g. ``output_stride: 8``, ``in_chans: 1``) go to
``timm.create_model``. Given the input shape, the last feature map must be at least
2 x 2 (CGAP clusters its positions), checked at construction.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from lightning import LightningModule
from torch import Tensor, nn

from clustercam.errors import ResourceUnavailableError
from clustercam.explain.concepts.ablation import PooledHead

log = logging.getLogger(__name__)

HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


class PretrainedWeightsError(ResourceUnavailableError, RuntimeError):
    """Pretrained weights were asked for but cannot be found or downloaded."""


def split_model_name(name: str, pretrained_tag: str | None = None) -> tuple[str, str | None]:
    """``"nf_resnet50.ra2_in1k"`` -> (architecture, tag); an explicit tag wins."""
    arch, _, tag = name.partition(".")
    return arch, pretrained_tag or (tag or None)


def check_model_name(arch: str) -> None:
    """A clear error (with close matches) for a name timm does not know."""
    import timm

    if arch in timm.list_models():
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean one of {close}?" if close else "; see timm.list_models()"
    raise ValueError(f"unknown timm model name {arch!r}{hint}")


def pretrained_cfg(full_name: str) -> Any:
    """timm's pretrained config for ``arch[.tag]``, or None (unknown tag / no weights)."""
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(full_name)
    except RuntimeError:  # invalid tag
        return None


def _hub_reachable(endpoint: str, timeout: float = 1.5) -> bool:
    """One quick TCP connect to the hub (or the configured HTTPS proxy); no retries."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_hub_file(hub_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for filename in HUB_FILENAMES:
        path = try_to_load_from_cache(hub_id, filename)
        if isinstance(path, str) and Path(path).is_file():
            return path
    return None


def _weights_help(full_name: str, reason: str) -> str:
    return (
        f"pretrained weights for {full_name!r} are not available: {reason}. Provide them in "
        f"one of these ways: (1) model.checkpoint_path=/path/to/weights "
        f"(.safetensors / .pth / .bin state dict); (2) fill the Hugging Face cache once on a "
        f"machine with internet: python -c \"import timm; timm.create_model('{full_name}', "
        f"pretrained=True)\" and copy ~/.cache/huggingface (or set HF_HOME); (3) "
        f"model.pretrained=false for random weights (tests only: the concepts mean nothing)."
    )


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file: ``.safetensors``, or a torch file holding a state dict
    (nested under ``state_dict``/``model`` as trainers save it; a Lightning checkpoint of a
    module whose network is ``net`` works too: the ``module.``/``net.`` prefixes go)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - pickles with objects, corrupt files
            raise PretrainedWeightsError(
                f"could not read {str(path)!r} as a state dict: {str(err).splitlines()[0][:200]}"
            ) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise PretrainedWeightsError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict")
    state = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    for prefix in ("module.", "net."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights_file(model: nn.Module, path: str | Path, arch: str) -> None:
    """Load a weights file into ``model`` strictly; one message naming what does not fit."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
              for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} model keys missing from the file (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} file keys the model does not have (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} shapes differ ({'; '.join(shapes[:3])})")
        raise PretrainedWeightsError(
            f"could not load {str(path)!r} into {arch!r}: the checkpoint's keys do not fit the "
            f"model: {', '.join(parts)}. Use the model.name, model.num_classes and "
            "model.model_kwargs (e.g. output_stride, in_chans) the weights were trained with")
    model.load_state_dict(state, strict=True)


def build_timm_model(
    name: str = "nf_resnet50",
    pretrained: bool = True,
    checkpoint_path: str | Path | None = None,
    pretrained_tag: str | None = None,
    warn_random: bool = True,
    **model_kwargs: Any,
) -> tuple[nn.Module, str]:
    """Create the timm model and load its weights; returns (model, where the weights came from).

    Order: ``checkpoint_path`` if given (must exist; loaded strictly, even with
    ``pretrained=False``), else the local Hugging Face cache, else the hub if it answers
    within ~1.5 s (and ``HF_HUB_OFFLINE`` is not set), else one
    :class:`PretrainedWeightsError`. ``pretrained=False``: random weights, a warning
    (unless ``warn_random`` is off: a network about to be trained). ``model_kwargs`` (``num_classes``, ``in_chans``, ``output_stride``...) go to timm.
    """
    import timm

    arch, tag = split_model_name(name, pretrained_tag)
    check_model_name(arch)
    full = f"{arch}.{tag}" if tag else arch
    kwargs = {k: v for k, v in model_kwargs.items() if v is not None}
    if checkpoint_path:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"model.checkpoint_path {str(path)!r} does not exist (weights for {full!r}); "
                "give an existing .safetensors/.pth file, or leave it null to use the hub"
            )
        model = _create(arch, kwargs)
        load_weights_file(model, path, arch)
        log.info("Loaded %s weights from %s", arch, path)
        return model, f"file:{path}"
    if not pretrained:
        (log.warning if warn_random else log.debug)(
            "MODEL %s HAS RANDOM WEIGHTS (model.pretrained=false): concepts and importances "
            "describe an untrained network; use this for tests only", arch)
        return _create(arch, kwargs), "random"
    cfg = pretrained_cfg(full)
    if cfg is None:
        raise PretrainedWeightsError(_weights_help(full, f"timm has no pretrained tag {full!r}"))
    hub_id = getattr(cfg, "hf_hub_id", None)
    cached = _cached_hub_file(hub_id) if hub_id else None
    if cached:
        model = timm.create_model(full, pretrained=True, **kwargs,
                                  pretrained_cfg_overlay={"file": cached, "hf_hub_id": None})
        log.info("Loaded %s weights from the Hugging Face cache (%s)", full, cached)
        return model, f"hub:{hub_id}"
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise PretrainedWeightsError(_weights_help(full, "HF_HUB_OFFLINE is set and they are not in the local cache"))
    if not _hub_reachable(constants.ENDPOINT):
        raise PretrainedWeightsError(_weights_help(full, f"{constants.ENDPOINT} cannot be reached and they are not in the local cache"))
    try:
        model = timm.create_model(full, pretrained=True, **kwargs)
    except Exception as err:  # noqa: BLE001 - any download failure gets the same help
        raise PretrainedWeightsError(_weights_help(full, f"the download failed ({type(err).__name__})")) from None
    return model, f"hub:{hub_id or full}"


def _create(arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
    import timm

    try:
        return timm.create_model(arch, pretrained=False, **kwargs)
    except TypeError as err:
        raise ValueError(f"timm model {arch!r} does not take model_kwargs {dict(kwargs)}: {err}") from None


def check_feature_map(net: nn.Module, input_shape: Sequence[int], name: str) -> tuple[int, ...]:
    """C x H x W of ``net.forward_features`` for one input of ``input_shape`` (C x H x W);
    a clear error when the map is smaller than 2 x 2 (CGAP needs positions to cluster)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be C x H x W, got {list(shape)}")
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            a = net.forward_features(torch.zeros(1, *shape))
    except RuntimeError as err:
        raise ValueError(f"timm model {name!r} cannot take inputs of shape {list(shape)}: "
                         f"{str(err).splitlines()[0][:200]}") from None
    finally:
        net.train(was_training)
    if a.dim() != 4 or min(a.shape[-2:]) < 2:
        raise ValueError(
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
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
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
