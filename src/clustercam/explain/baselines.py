"""What a removed input position is replaced by, for the deletion / insertion curves."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from clustercam.exceptions import UserError

BASELINES: tuple[str, ...] = ("zero", "mean", "blur")


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur over the spatial axes (reflect padding).

    Args:
        x: N x C x L or N x C x H x W.
        sigma: the standard deviation in positions (> 0); the kernel reaches 3 sigma.

    Returns:
        The blurred copy, the shape of x.

    Raises:
        UserError: a sigma that is not > 0.
    """
    if not sigma > 0:
        raise UserError(f"blur sigma must be > 0, got {sigma}")
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, c = x.shape[:2]
    out = x
    for axis in range(2, x.dim()):
        moved = out.movedim(axis, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        pad_mode = "reflect" if radius < shape[-1] else "replicate"
        flat = F.pad(flat, (radius, radius), mode=pad_mode)
        flat = F.conv1d(flat, kernel.view(1, 1, -1))
        out = flat.reshape(shape).movedim(-1, axis)
    return out.reshape(n, c, *x.shape[2:])


def make_baseline(x: Tensor, baseline: str | float = "zero", blur_sigma: float | None = None) -> Tensor:
    """What a removed position is replaced by, for the deletion / insertion curves.

    Args:
        x: N x C x L or N x C x H x W.
        baseline: ``zero`` (the mean of a z-normalised series); ``mean`` (each sample's
            per-channel mean over positions); ``blur`` (a Gaussian-blurred copy: the usual
            choice for images, because a constant patch is itself a strong,
            out-of-distribution feature); or a number (that constant).
        blur_sigma: of ``blur`` (None: a tenth of the shortest spatial side, at least 1).

    Returns:
        The baseline, the shape of x.

    Raises:
        UserError: an unknown baseline name.

    Example:
        >>> import torch
        >>> from clustercam.explain.baselines import make_baseline
        >>> x = torch.tensor([[[1.0, 2.0, 6.0]]])
        >>> make_baseline(x, "mean"), make_baseline(x, 0.5)
        (tensor([[[3., 3., 3.]]]), tensor([[[0.5000, 0.5000, 0.5000]]]))
    """
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=tuple(range(2, x.dim())), keepdim=True).expand_as(x).clone()
    if baseline == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(1.0, min(x.shape[2:]) / 10)
        return gaussian_blur(x, sigma)
    raise UserError(f"unknown baseline {baseline!r}; choose one of {BASELINES} or a number")
