"""Shared helpers for hooking a target layer of an encoder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def resolve_layer(encoder: nn.Module, target_layer: nn.Module | str) -> nn.Module:
    """Return the module ``target_layer`` names inside ``encoder`` (or check it is one of its modules)."""
    if isinstance(target_layer, str):
        modules = dict(encoder.named_modules())
        if target_layer not in modules:
            names = [n for n in modules if n][:20]
            raise ValueError(
                f"target_layer {target_layer!r} is not a module of the encoder; "
                f"available names include {names}"
            )
        return modules[target_layer]
    if not isinstance(target_layer, nn.Module) or not any(
        m is target_layer for m in encoder.modules()
    ):
        raise ValueError(
            f"target_layer {type(target_layer).__name__} is not a module of the encoder "
            f"{type(encoder).__name__}"
        )
    return target_layer


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run in eval mode (running BatchNorm statistics, no dropout), then restore every submodule."""
    states = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in states:
            m.training = training


@contextmanager
def hooked(layer: nn.Module, fn: Callable[[Tensor], Tensor | None]) -> Iterator[None]:
    """Call ``fn`` on the layer's output during forward; a returned tensor replaces the output."""

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor | None:
        if not isinstance(output, Tensor):
            raise TypeError(
                f"the target layer must output a single tensor, got {type(output).__name__}"
            )
        return fn(output)

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def module_device(module: nn.Module, fallback: torch.device) -> torch.device:
    for p in module.parameters():
        return p.device
    return fallback


def check_inputs(x: Tensor, centroids: Tensor) -> None:
    """Early, named errors for the input batch and the centroids."""
    if not isinstance(x, Tensor) or x.dim() not in (3, 4):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"x must be a batch N x C x L (series) or N x C x H x W (images), got shape {shape}"
        )
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (N = 0)")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"x contains NaN or infinite values (samples {bad} ...)")
    if not isinstance(centroids, Tensor) or centroids.dim() != 2:
        shape = tuple(centroids.shape) if isinstance(centroids, Tensor) else type(centroids)
        raise ValueError(f"centroids must be a K x m matrix, got shape {shape}")
    if centroids.shape[0] < 2:
        raise ValueError(f"need at least K = 2 centroids, got K = {centroids.shape[0]}")
    if not torch.isfinite(centroids).all():
        raise ValueError("centroids contain NaN or infinite values")


def check_embedding(z: Tensor, centroids: Tensor) -> None:
    if z.dim() != 2 or z.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"the encoder's embedding has shape {tuple(z.shape)} but the centroids are "
            f"{tuple(centroids.shape)}: the embedding dimension m must match the centroids' "
            f"{centroids.shape[1]}"
        )
