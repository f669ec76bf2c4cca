"""Grad-CeAM: which input regions pull a sample's embedding towards each centroid (SPEC § 2).

All K clusters come from one forward pass and one batched backward pass
(``is_grads_batched``), so the cost barely grows with K; samples are processed
in chunks so memory stays bounded on whole test sets. When the encoder says, through a
``linear_head(layer)`` method, that z = fc(pool(A)) exactly (pool = mean over positions or
flatten; clustercam's encoders do), dL/dA follows in closed form from dL/dz (SPEC § 2), so
the batched backward only runs through the K targets, not through the encoder.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clustercam.explain._layers import (
    check_embedding,
    check_inputs,
    eval_mode,
    hooked,
    module_device,
    resolve_layer,
)

Mode = Literal["paper", "reference", "assignment"]
MODES: tuple[str, ...] = ("paper", "reference", "assignment")
PAPER_EPS = 1e-8
REFERENCE_EPS = 1e-3


@dataclass
class GradCeAMResult:
    """Maps for N samples x K clusters.

    ``heatmaps``: N x K x input spatial size, min-max normalised per sample and cluster.
    ``raw``: N x K x target-layer spatial size, unnormalised (keeps which cluster's evidence
    is weaker overall). ``channel_weights``: N x K x C, the weights of eq. 9 before any ReLU.
    ``embeddings``: N x m. ``heatmaps``/``raw`` are None when not requested.
    """

    heatmaps: Tensor | None
    raw: Tensor | None
    channel_weights: Tensor
    embeddings: Tensor
    mode: str


def centroid_weights(centroids: Tensor) -> Tensor:
    """Eq. 5: s_c = sum_k |mu_k - mu_c|, min-max normalised over the m features (all equal -> 1)."""
    s = (centroids[None, :, :] - centroids[:, None, :]).abs().sum(1)  # K x m
    lo = s.min(1, keepdim=True).values
    hi = s.max(1, keepdim=True).values
    span = hi - lo
    return torch.where(span > 0, (s - lo) / span.clamp_min(torch.finfo(s.dtype).tiny), 1.0)


def cluster_losses(
    z: Tensor, centroids: Tensor, mode: str, temperature: float = 1.0
) -> Tensor:
    """The per-cluster targets L_c(z) of eq. 7-8 (or the assignment target): N x K."""
    if mode == "assignment":
        sq = (z[:, None, :] - centroids[None]).pow(2).sum(-1)
        return torch.log_softmax(-sq / temperature, dim=1)
    s = centroid_weights(centroids)  # K x m
    d = (centroids[None] - z[:, None, :]).abs()  # N x K x m
    dmin = d.min(1, keepdim=True).values
    dmax = d.max(1, keepdim=True).values
    if mode == "paper":
        r = ((dmax - d) / (dmax - dmin + PAPER_EPS)).detach()
        return (z[:, None, :] * s[None] * r).sum(-1)
    r = ((dmax - dmin) / (d - dmin + REFERENCE_EPS)).pow(2)
    return (z.abs()[:, None, :] * s[None] * r).sum(-1)


def _batched_grads(loss: Tensor, activations: Tensor) -> Tensor:
    """dL_c/dA for every cluster c at once: K x N x C x spatial."""
    k = loss.shape[1]
    eye = torch.eye(k, dtype=loss.dtype, device=loss.device)
    grad_outputs = eye[:, None, :].expand(k, loss.shape[0], k)
    try:
        (grads,) = torch.autograd.grad(
            loss, activations, grad_outputs=grad_outputs, is_grads_batched=True
        )
        return grads
    except RuntimeError as err:  # an op after the target layer without a batching rule
        warnings.warn(
            f"batched backward failed ({err}); falling back to one backward per cluster",
            RuntimeWarning,
            stacklevel=3,
        )
    grads = [
        torch.autograd.grad(loss[:, c].sum(), activations, retain_graph=c < k - 1)[0]
        for c in range(k)
    ]
    return torch.stack(grads)


def _resize(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """N x K x spatial -> N x K x input spatial (linear for 1-D, bilinear for 2-D)."""
    mode = "linear" if len(size) == 1 else "bilinear"
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode=mode, align_corners=False)


def smooth_series(maps: Tensor, radius: int | None = None) -> Tensor:
    """Moving average of radius ceil(L/20) along the last axis (time series maps)."""
    length = maps.shape[-1]
    radius = math.ceil(length / 20) if radius is None else radius
    flat = maps.reshape(-1, 1, length)
    out = F.avg_pool1d(flat, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return out.reshape(maps.shape)


def minmax_normalise(maps: Tensor, dims: int, out: Tensor | None = None) -> Tensor:
    """Min-max normalise over the last ``dims`` axes; a constant map becomes all zeros.

    ``out`` (contiguous, the shape of ``maps``; may be ``maps`` itself) receives the result
    instead of a new tensor.
    """
    flat = maps.flatten(-dims)
    lo = flat.amin(-1, keepdim=True)  # amin/amax: no argmin/argmax indices to compute
    hi = flat.amax(-1, keepdim=True)
    span = hi - lo
    if out is None:
        out = torch.empty_like(maps, memory_format=torch.contiguous_format)
    res = out.view(flat.shape)
    torch.sub(flat, lo, out=res)
    res.div_(span.clamp_min(torch.finfo(flat.dtype).tiny))
    flat_or_nan = ~(span > 0)  # constant maps (and NaN spans) become zeros
    if bool(flat_or_nan.any()):
        res.masked_fill_(flat_or_nan, 0.0)
    return out


def _interp_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """n_out x n_in weights of 1-D linear interpolation, ``align_corners=False`` (as F.interpolate)."""
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


def _bilinear_into(maps: Tensor, size: tuple[int, int], out: Tensor) -> Tensor:
    """Bilinear resize (``align_corners=False``) of N x K x h x w maps into ``out``.

    The same weights as ``F.interpolate``, applied as two small matrix products per map
    (the values agree to float rounding); several times faster than the CPU upsampling
    kernel on the small maps of a target layer, and it writes straight into ``out``.
    """
    h, w = maps.shape[-2:]
    big_h, big_w = size
    rows = _interp_matrix(h, big_h, maps.dtype, maps.device)  # H x h
    cols_t = _interp_matrix(w, big_w, maps.dtype, maps.device).T  # w x W
    src = maps.reshape(-1, h, w)
    dst = out.view(-1, big_h, big_w)
    block = max(1, 2**20 // (big_h * w))  # bounds the H x w temporary to ~4 MiB of floats
    for s in range(0, src.shape[0], block):
        torch.matmul(torch.matmul(rows, src[s : s + block]), cols_t, out=dst[s : s + block])
    return out


def _heatmaps(raw: Tensor, size: tuple[int, ...], smooth: bool, out: Tensor | None) -> Tensor:
    """Raw maps -> resized to the input, optionally smoothed, min-max normalised (into ``out``)."""
    if out is None:
        out = torch.empty((*raw.shape[:2], *size), dtype=raw.dtype, device=raw.device)
    if len(size) == 2 and tuple(raw.shape[2:]) != tuple(size):
        src = _bilinear_into(raw, size, out)
    else:
        src = _resize(raw, size)  # 1-D: F.interpolate (fast there); same size: raw itself
    if smooth:
        src = smooth_series(src)
    return minmax_normalise(src, len(size), out=out)


def _closed_form_head(encoder: nn.Module, layer: nn.Module) -> tuple[Tensor, str] | None:
    """(fc weight, pooling) when z = fc(pool(A)) exactly, else None.

    The encoder declares it (``encoder.linear_head(layer)``, duck-typed so this layer
    imports no model class); no hook may change the computation after A.
    """
    declare = getattr(encoder, "linear_head", None)
    spec = declare(layer) if callable(declare) else None
    if spec is None or spec[1] not in ("gap", "flatten"):
        return None
    from torch.nn.modules import module as _module

    global_hooks = (getattr(_module, "_global_forward_hooks", None),
                    getattr(_module, "_global_forward_pre_hooks", None),
                    getattr(_module, "_global_backward_hooks", None))
    if any(global_hooks):
        return None
    for m in (encoder, getattr(encoder, "fc", encoder)):
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks:
            return None
    return spec


def _forward(
    encoder: nn.Module, layer: nn.Module, x: Tensor, centroids: Tensor, with_grad: bool
) -> tuple[Tensor, Tensor]:
    """z = encoder(x) and the target layer's output A (a grad leaf if nothing upstream has grad)."""
    captured: dict[str, Tensor] = {}

    def keep(output: Tensor) -> Tensor:
        if with_grad and not output.requires_grad:  # frozen encoder: a leaf to differentiate to
            output = output.detach().requires_grad_(True)
        captured["A"] = output
        return output

    with hooked(layer, keep), torch.set_grad_enabled(with_grad):
        z = encoder(x)
    if "A" not in captured:
        raise RuntimeError("the target layer was not called during the encoder's forward pass")
    check_embedding(z, centroids)
    return z, captured["A"]


def _chunk(
    encoder: nn.Module,
    layer: nn.Module,
    x: Tensor,
    centroids: Tensor,
    mode: str,
    temperature: float,
    maps: bool,
    smooth: bool,
    heat_out: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    head = _closed_form_head(encoder, layer)
    if head is not None:
        weights, z, acts = _closed_form_weights(encoder, layer, x, centroids, mode, temperature, head)
    else:
        z, acts = _forward(encoder, layer, x, centroids, with_grad=True)
        loss = cluster_losses(z, centroids, mode, temperature)
        grads = _batched_grads(loss, acts)  # K x N x C x spatial...
        spatial_dims = tuple(range(3, grads.dim()))
        if mode == "reference":
            weights = 2 * grads.sum(spatial_dims)
        else:
            weights = grads.mean(spatial_dims)
        weights = weights.transpose(0, 1).detach()  # N x K x C
        del grads
    raw = heat = None
    if maps:
        a = acts.detach().flatten(2)  # N x C x S
        w = weights if mode == "reference" else weights.clamp_min(0)
        raw = torch.einsum("nkc,ncs->nks", w, a).reshape(
            a.shape[0], w.shape[1], *acts.shape[2:]
        )
        heat = _heatmaps(raw, tuple(x.shape[2:]), smooth and x.dim() == 3, heat_out)
    return z.detach(), weights, raw, heat


def _closed_form_weights(
    encoder: nn.Module,
    layer: nn.Module,
    x: Tensor,
    centroids: Tensor,
    mode: str,
    temperature: float,
    head: tuple[Tensor, str],
) -> tuple[Tensor, Tensor, Tensor]:
    """Channel weights N x K x C, z and A for z = fc(pool(A)), without autograd through f.

    With g_c = dL_c/dz (one batched backward through the K targets only) and fc weight
    V (m x C·S), dL_c/dA_k,s = (g_c V)_k / S for pool = mean (the same for every position)
    and (g_c V)_(k,s) for pool = flatten; eq. 9 averages (or, reference mode, 2 x sums)
    this over the positions.
    """
    z, acts = _forward(encoder, layer, x, centroids, with_grad=False)
    fc_weight, pooling = head
    v = fc_weight.detach()
    z_leaf = z.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = cluster_losses(z_leaf, centroids, mode, temperature)
        g = _batched_grads(loss, z_leaf).detach()  # K x N x m
    positions = math.prod(acts.shape[2:])
    if pooling == "gap":
        gv = g @ v  # K x N x C
        weights = 2 * gv if mode == "reference" else gv / positions
    else:
        per_pos = v.reshape(v.shape[0], acts.shape[1], positions)  # m x C x S
        reduced = 2 * per_pos.sum(-1) if mode == "reference" else per_pos.mean(-1)
        weights = g @ reduced
    return weights.transpose(0, 1), z, acts


def grad_ceam(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    mode: Mode = "reference",
    temperature: float = 1.0,
    batch_size: int | None = 512,
    return_maps: bool = True,
    smooth: bool = False,
) -> GradCeAMResult:
    """Grad-CeAM maps for every sample of ``x`` and every centroid.

    ``encoder`` maps x (N x C x L or N x C x H x W) to embeddings N x m; ``target_layer``
    is one of its modules (or the dotted name of one) whose output A is explained;
    ``centroids`` is K x m. ``mode``: ``reference`` (the authors' code, default),
    ``paper`` (the printed equations) or ``assignment`` (log soft-assignment target).
    ``batch_size`` bounds memory (None: one chunk). ``return_maps=False`` keeps only the
    channel weights and embeddings, for tables over whole test sets.
    """
    if mode not in MODES:
        raise ValueError(f"unknown Grad-CeAM mode {mode!r}; choose one of {MODES}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    check_inputs(x, centroids)
    layer = resolve_layer(encoder, target_layer)
    device = module_device(encoder, x.device)
    dtype = next((p.dtype for p in encoder.parameters()), torch.float32)
    mu = centroids.detach().to(device=device, dtype=dtype)
    n = x.shape[0]
    step = n if batch_size is None else batch_size
    parts: list[tuple[Tensor, Tensor, Tensor | None]] = []
    heat = None
    with eval_mode(encoder), torch.inference_mode(False):
        if return_maps:  # the largest output: filled chunk by chunk, never concatenated
            heat = torch.empty((n, mu.shape[0], *x.shape[2:]), dtype=dtype)
        for start in range(0, n, step):
            xb = x[start : start + step].to(device=device, dtype=dtype).clone()
            dest = heat[start : start + step] if heat is not None and device.type == "cpu" else None
            z, w, raw, hb = _chunk(encoder, layer, xb, mu, mode, temperature, return_maps, smooth,
                                   heat_out=dest)
            if heat is not None and dest is None:
                heat[start : start + step].copy_(hb)
            parts.append((z.cpu(), w.cpu(), None if raw is None else raw.cpu()))
    z = torch.cat([p[0] for p in parts])
    w = torch.cat([p[1] for p in parts])
    raw = torch.cat([p[2] for p in parts]) if return_maps else None
    return GradCeAMResult(heatmaps=heat, raw=raw, channel_weights=w, embeddings=z, mode=mode)
