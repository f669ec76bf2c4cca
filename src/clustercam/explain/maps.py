"""Maps on a grid: resize to the input, min-max normalise, smooth. The one copy of each.

Every method in :mod:`clustercam.explain` (Grad-CeAM, concepts, the scores' baselines)
draws its maps through these, so a Grad-CeAM map and a concept map of the same values are
resized and normalised the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from clustercam.exceptions import UserError


def as_size(size: int | Sequence[int], dims: int = 2) -> tuple[int, ...]:
    """``size`` as a tuple of ints.

    Args:
        size: an int (a length, or a square's side) or a sequence of ints.
        dims: how many entries an int becomes.

    Returns:
        The size as a tuple.
    """
    if isinstance(size, int):
        return (int(size),) * dims
    return tuple(int(s) for s in size)


def interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The weights of 1-D linear interpolation, ``align_corners=False`` (as ``F.interpolate``).

    Args:
        n_in: the input length.
        n_out: the output length.
        dtype: of the result.
        device: of the result.

    Returns:
        n_out x n_in: ``m @ v`` resizes a vector v of length n_in.
    """
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    lam = (src - i0).clamp(0, 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    rows = torch.arange(n_out)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.index_put_((rows, i0), 1 - lam, accumulate=True)
    m.index_put_((rows, i1), lam, accumulate=True)
    return m.to(dtype=dtype, device=device)


def _bilinear(maps: Tensor, size: tuple[int, int], out: Tensor) -> Tensor:
    """Bilinear resize (``align_corners=False``) of ... x h x w maps into ``out``.

    The weights of ``F.interpolate``, applied as two small matrix products per map (equal
    to float rounding); several times faster than the CPU upsampling kernel on the small
    maps of a target layer, and it writes straight into ``out``.
    """
    h, w = maps.shape[-2:]
    big_h, big_w = size
    rows = interpolation_matrix(h, big_h, maps.dtype, maps.device)  # H x h
    cols_t = interpolation_matrix(w, big_w, maps.dtype, maps.device).T  # w x W
    src = maps.reshape(-1, h, w)
    dst = out.view(-1, big_h, big_w)
    block = max(1, 2**20 // (big_h * w))  # bounds the H x w temporary to ~4 MiB of floats
    for s in range(0, src.shape[0], block):
        torch.matmul(torch.matmul(rows, src[s : s + block]), cols_t, out=dst[s : s + block])
    return out


def resize_maps(maps: Tensor, size: int | Sequence[int], out: Tensor | None = None) -> Tensor:
    """Resize maps: linear for series, bilinear for images (``align_corners=False``).

    Args:
        maps: ... x L (series) or ... x h x w (images).
        size: the new spatial size; ``len(size)`` says how many trailing axes are spatial
            (an int: 2, a square).
        out: a contiguous tensor of the output shape that receives the result (None: a new
            one; maps of the right size are then returned as they are).

    Returns:
        ... x L' or ... x H x W.

    Raises:
        UserError: a size with other than 1 or 2 entries.

    Example:
        >>> import torch
        >>> from clustercam.explain.maps import resize_maps
        >>> resize_maps(torch.tensor([[0.0, 1.0]]), (4,))
        tensor([[0.0000, 0.2500, 0.7500, 1.0000]])
    """
    size = as_size(size)
    if len(size) not in (1, 2):
        raise UserError(f"size must have 1 (series) or 2 (images) entries, got {size}")
    lead = maps.shape[: maps.dim() - len(size)]
    if out is None:
        if tuple(maps.shape[-len(size) :]) == size:
            return maps
        out = torch.empty((*lead, *size), dtype=maps.dtype, device=maps.device)
    if tuple(maps.shape[-len(size) :]) == size:
        return out.copy_(maps)
    if len(size) == 2:
        return _bilinear(maps, size, out)
    flat = maps.reshape(-1, 1, maps.shape[-1])
    res = F.interpolate(flat, size=size, mode="linear", align_corners=False)
    return out.copy_(res.view(*lead, *size))


def minmax_normalise(
    maps: Tensor,
    dims: int,
    lo: Tensor | None = None,
    hi: Tensor | None = None,
    constant: float = 0.0,
    out: Tensor | None = None,
) -> Tensor:
    """``(M - lo) / (hi - lo)`` over the last ``dims`` axes.

    Args:
        maps: ... x spatial.
        dims: how many trailing axes one map spans.
        lo: the lower bound per map (default: the map's minimum).
        hi: the upper bound per map (default: the map's maximum). With given bounds (e.g. a
            parent concept's) the values are clamped to [0, 1].
        constant: what a constant map (``hi == lo``, or NaN bounds) becomes.
        out: a contiguous tensor of the shape of ``maps`` (may be ``maps`` itself) that
            receives the result.

    Returns:
        The normalised maps, the shape of ``maps``.

    Example:
        >>> import torch
        >>> from clustercam.explain.maps import minmax_normalise
        >>> minmax_normalise(torch.tensor([[2.0, 4.0, 3.0], [5.0, 5.0, 5.0]]), 1)
        tensor([[0.0000, 1.0000, 0.5000],
                [0.0000, 0.0000, 0.0000]])
    """
    flat = maps.flatten(-dims) if dims > 0 else maps.unsqueeze(-1)
    given = lo is not None or hi is not None
    lo = flat.amin(-1, keepdim=True) if lo is None else lo.reshape(*flat.shape[:-1], 1)
    hi = flat.amax(-1, keepdim=True) if hi is None else hi.reshape(*flat.shape[:-1], 1)
    span = hi - lo
    if out is None:
        out = torch.empty_like(maps, memory_format=torch.contiguous_format)
    res = out.view(flat.shape)
    torch.sub(flat, lo, out=res)
    res.div_(span.clamp_min(torch.finfo(flat.dtype).tiny))
    if given:
        res.clamp_(0, 1)
    degenerate = ~(span > 0)
    if bool(degenerate.any()):
        res.masked_fill_(degenerate, constant)
    return out


def smooth_series(maps: Tensor, radius: int | None = None) -> Tensor:
    """Moving average along the last axis (time-series maps).

    Args:
        maps: ... x L.
        radius: positions on each side (None: ``ceil(L / 20)``); the window shrinks at the ends.

    Returns:
        The smoothed maps, the shape of ``maps``.
    """
    length = maps.shape[-1]
    radius = math.ceil(length / 20) if radius is None else radius
    flat = maps.reshape(-1, 1, length)
    out = F.avg_pool1d(flat, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return out.reshape(maps.shape)


def input_maps(raw: Tensor, size: Sequence[int], smooth: bool = False, out: Tensor | None = None) -> Tensor:
    """Raw maps as every map method shows them: at the input's size, in [0, 1].

    Resized to the input, optionally smoothed (series), min-max normalised per sample and
    cluster (a constant map becomes 0). ``raw`` is never modified.

    Args:
        raw: N x K x target-layer spatial size.
        size: the input's spatial size, (L,) or (H, W).
        smooth: moving average of series maps (:func:`smooth_series`).
        out: N x K x ``size``, receives the result (None: a new tensor).

    Returns:
        N x K x ``size`` in [0, 1].
    """
    size = tuple(int(s) for s in size)
    if out is None:
        out = torch.empty((*raw.shape[: raw.dim() - len(size)], *size), dtype=raw.dtype,
                          device=raw.device)
    src = resize_maps(raw, size, out=out)
    if smooth and len(size) == 1:
        src = smooth_series(src)
    return minmax_normalise(src, len(size), out=out)
