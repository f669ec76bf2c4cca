"""timm models and their weights, resolved offline first.

A local file, the Hugging Face cache, then the hub; only ``pretrained: false`` gives random
weights.

Offline without weights a run ends at once with one message that says how to provide them (no
download retry loop). A weights file is loaded strictly (every key, every shape), so a file
saved for another architecture, class count or channel count fails with one message listing
what does not fit. The LightningModules (:mod:`clustercam.models.classifier_module`) and the
data layer (a model's preprocessing) both read from here.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from clustercam.exceptions import MissingFileError, ResourceUnavailableError, UserError
from clustercam.runtime.checkpoints import state_dict_mismatch, torch_file_problem

log = logging.getLogger(__name__)

HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


class PretrainedWeightsError(ResourceUnavailableError, RuntimeError):
    """Pretrained weights were asked for but cannot be found or downloaded."""


def split_model_name(name: str, pretrained_tag: str | None = None) -> tuple[str, str | None]:
    """Split a timm model name into its architecture and pretrained tag.

    Args:
        name: ``arch`` or ``arch.tag`` (e.g. ``nf_resnet50.ra2_in1k``).
        pretrained_tag: a tag that wins over the name's.

    Returns:
        (architecture, tag or None).

    Example:
        >>> from clustercam.models.timm_weights import split_model_name
        >>> split_model_name("nf_resnet50.ra2_in1k"), split_model_name("resnet18", "a1_in1k")
        (('nf_resnet50', 'ra2_in1k'), ('resnet18', 'a1_in1k'))
    """
    arch, _, tag = name.partition(".")
    return arch, pretrained_tag or (tag or None)


def check_model_name(arch: str) -> None:
    """Check that timm knows an architecture.

    Args:
        arch: the architecture's name, without a tag.

    Raises:
        UserError: an unknown name (with the close matches).
    """
    import timm

    if arch in timm.list_models():
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean one of {close}?" if close else "; see timm.list_models()"
    raise UserError(f"unknown timm model name {arch!r}{hint}")


def pretrained_cfg(full_name: str) -> Any:
    """timm's pretrained config for a model.

    Args:
        full_name: ``arch`` or ``arch.tag``.

    Returns:
        timm's ``PretrainedCfg``, or None (an unknown tag, or no weights).
    """
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
    """The tensors of a weights file.

    Args:
        path: a ``.safetensors`` file, or a torch file holding a state dict (nested under
            ``state_dict`` / ``model`` as trainers save it; a Lightning checkpoint of a
            module whose network is ``net`` works too: the ``module.`` / ``net.`` prefixes
            go). Read with ``weights_only=True``.

    Returns:
        Parameter name -> tensor.

    Raises:
        PretrainedWeightsError: a file that cannot be read or holds no state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - safetensors' own error type, a damaged file
            raise PretrainedWeightsError(
                f"could not read {str(path)!r} as safetensors: {str(err).splitlines()[0][:200]}") from None
    else:
        problem = torch_file_problem(path)
        if problem:
            raise PretrainedWeightsError(f"could not read {str(path)!r} as a state dict: {problem}")
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
    """Load a weights file into a model strictly: every key, every shape.

    Args:
        model: the timm model.
        path: the weights file (:func:`read_state_dict`).
        arch: the architecture's name, for the message.

    Raises:
        PretrainedWeightsError: the file cannot be read, or its keys or shapes do not fit
            (one message listing the missing and unexpected keys and the shapes that differ).
    """
    state = read_state_dict(path)
    mismatch = state_dict_mismatch(state, model)
    if mismatch:
        raise PretrainedWeightsError(
            f"could not load {str(path)!r} into {arch!r}: the checkpoint's keys do not fit the "
            f"model: {mismatch}. Use the model.name, model.num_classes and "
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
    """Create a timm model and load its weights, offline first.

    The weights come from ``checkpoint_path`` if given (loaded strictly, even with
    ``pretrained=False``), else the local Hugging Face cache, else the hub if it answers
    within ~1.5 s (and ``HF_HUB_OFFLINE`` is not set).

    Args:
        name: ``arch`` or ``arch.tag`` (e.g. ``nf_resnet50.ra2_in1k``).
        pretrained: load pretrained weights; False: random weights, with a warning.
        checkpoint_path: a weights file (must exist).
        pretrained_tag: a tag that wins over the name's.
        warn_random: warn about random weights (off for a network about to be trained).
        **model_kwargs: for ``timm.create_model`` (``num_classes``, ``in_chans``,
            ``output_stride``, ...; None values are dropped).

    Returns:
        The model and where its weights came from (``file:<path>``, ``hub:<id>`` or
        ``random``).

    Raises:
        UserError: an unknown architecture, or ``model_kwargs`` it does not take.
        MissingFileError: a ``checkpoint_path`` that does not exist.
        PretrainedWeightsError: pretrained weights that cannot be found, downloaded or
            loaded (one message saying how to provide them).
    """
    import timm

    from clustercam.models.components import ts_classifiers, vit_classifier  # noqa: F401  (registers clustercam's timm models)

    arch, tag = split_model_name(name, pretrained_tag)
    check_model_name(arch)
    full = f"{arch}.{tag}" if tag else arch
    kwargs = {k: v for k, v in model_kwargs.items() if v is not None}
    if checkpoint_path:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise MissingFileError(
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
        raise UserError(f"timm model {arch!r} does not take model_kwargs {dict(kwargs)}: {err}") from None
