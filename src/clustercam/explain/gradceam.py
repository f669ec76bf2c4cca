"""Grad-CeAM: which input regions pull a sample's embedding towards each centroid (SPEC § 2).

All K clusters come from one forward pass and one batched backward pass
(``is_grads_batched``), so the cost barely grows with K; samples are processed
in chunks so memory stays bounded on whole test sets.
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


def minmax_normalise(maps: Tensor, dims: int) -> Tensor:
    """Min-max normalise over the last ``dims`` axes; a constant map becomes all zeros."""
    flat = maps.flatten(-dims)
    lo = flat.min(-1, keepdim=True).values
    hi = flat.max(-1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), 0.0)
    return out.reshape(maps.shape)


def _chunk(
    encoder: nn.Module,
    layer: nn.Module,
    x: Tensor,
    centroids: Tensor,
    mode: str,
    temperature: float,
    maps: bool,
    smooth: bool,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    captured: dict[str, Tensor] = {}

    def keep(output: Tensor) -> Tensor:
        if not output.requires_grad:  # frozen encoder: make A a leaf we can differentiate to
            output = output.detach().requires_grad_(True)
        captured["A"] = output
        return output

    with hooked(layer, keep), torch.enable_grad():
        z = encoder(x)
    if "A" not in captured:
        raise RuntimeError("the target layer was not called during the encoder's forward pass")
    check_embedding(z, centroids)
    acts = captured["A"]
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
        heat = _resize(raw, tuple(x.shape[2:]))
        if smooth and x.dim() == 3:
            heat = smooth_series(heat)
        heat = minmax_normalise(heat, x.dim() - 2)
    return z.detach(), weights, raw, heat


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
    step = x.shape[0] if batch_size is None else batch_size
    parts: list[tuple[Tensor, Tensor, Tensor | None, Tensor | None]] = []
    with eval_mode(encoder), torch.inference_mode(False):
        for start in range(0, x.shape[0], step):
            xb = x[start : start + step].to(device=device, dtype=dtype).clone()
            z, w, raw, heat = _chunk(encoder, layer, xb, mu, mode, temperature, return_maps, smooth)
            parts.append(
                (
                    z.cpu(),
                    w.cpu(),
                    None if raw is None else raw.cpu(),
                    None if heat is None else heat.cpu(),
                )
            )
    z = torch.cat([p[0] for p in parts])
    w = torch.cat([p[1] for p in parts])
    raw = torch.cat([p[2] for p in parts]) if return_maps else None
    heat = torch.cat([p[3] for p in parts]) if return_maps else None
    return GradCeAMResult(heatmaps=heat, raw=raw, channel_weights=w, embeddings=z, mode=mode)
