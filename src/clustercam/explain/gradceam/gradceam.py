"""Grad-CeAM (paper eq. 5-10): which input regions pull a sample's embedding towards each centroid.

All K clusters come from one forward pass and one batched backward pass
(``is_grads_batched``), so the cost barely grows with K; samples are processed in chunks so
memory stays bounded on whole test sets. When the encoder says, through a
``linear_head(layer)`` method, that z = fc(pool(A)) exactly (pool = mean over positions or
flatten; clustercam's encoders do), dL/dA follows in closed form from dL/dz, so the batched
backward only runs through the K targets, not through the encoder. Both paths work for
any :class:`~clustercam.explain.gradceam.targets.GradCeAMTarget`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.checks import check_clusters, check_embedding, check_inputs
from clustercam.explain.deprecation import renamed_parameters, reordered_parameters
from clustercam.explain.gradceam.targets import GradCeAMTarget, resolve_target
from clustercam.explain.hooks import (
    eval_mode,
    forward_with_layer,
    module_device,
    module_dtype,
    resolve_layer,
)
from clustercam.explain.layouts import LayoutSpec
from clustercam.explain.maps import input_maps


@dataclass
class GradCeAMResult:
    """What :func:`grad_ceam` returns: maps for N samples x K' clusters.

    K' = K, or 1 when ``grad_ceam`` was given each sample's cluster (``clusters=``).

    Attributes:
        heatmaps: N x K' x input spatial size, the maps of eq. 10 resized to the input and
            min-max normalised per sample and cluster (None with ``return_maps=False``).
        raw: N x K' x target-layer spatial size, eq. 10 unnormalised: keeps which cluster's
            evidence is weaker overall (paper Fig. 11); None with ``return_maps=False``.
        channel_weights: N x K' x C, the weights of eq. 9 before any ReLU.
        embeddings: N x m, the encoder's output.
        mode: the target's name.
        clusters: N x K', the cluster each map explains.

    Example:
        >>> import torch
        >>> from clustercam.explain import grad_ceam
        >>> enc = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
        >>> res = grad_ceam(enc, "1", torch.randn(5, 1, 16), torch.randn(3, 4),
        ...                 clusters=torch.tensor([0, 1, 2, 0, 1]))
        >>> tuple(res.heatmaps.shape), tuple(res.raw.shape), tuple(res.channel_weights.shape)
        ((5, 1, 16), (5, 1, 16), (5, 1, 4))
        >>> res.clusters.flatten().tolist(), res.mode
        ([0, 1, 2, 0, 1], 'reference')
    """

    heatmaps: Tensor | None
    raw: Tensor | None
    channel_weights: Tensor
    embeddings: Tensor
    mode: str
    clusters: Tensor | None = None


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


def _closed_form_weights(
    encoder: nn.Module, layer: nn.Module, x: Tensor, centroids: Tensor, target: GradCeAMTarget,
    head: tuple[Tensor, str], layout: LayoutSpec = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Channel weights N x K x C, z and A for z = fc(pool(A)), without autograd through f.

    With g_c = dL_c/dz (one batched backward through the K targets only) and fc weight V
    (m x C·S): dL_c/dA_k,s = (g_c V)_k / S for pool = mean (the same at every position),
    (g_c V)_(k,s) for pool = flatten; eq. 9 then pools this over the S positions.
    """
    z, acts = forward_with_layer(encoder, layer, x, with_grad=False, layout=layout)
    check_embedding(z, centroids)
    v = head[0].detach()
    z_leaf = z.detach().requires_grad_(True)
    with torch.enable_grad():
        g = _batched_grads(target.losses(z_leaf, centroids), z_leaf).detach()  # K x N x m
    positions = math.prod(acts.shape[2:])
    if head[1] == "gap":
        weights = target.pool_total(g @ v, positions)  # K x N x C
    else:
        per_pos = v.reshape(v.shape[0], acts.shape[1], positions)  # m x C x S
        weights = g @ target.pool(per_pos, (-1,))
    return weights.transpose(0, 1), z, acts


def _chunk(
    encoder: nn.Module, layer: nn.Module, x: Tensor, centroids: Tensor, target: GradCeAMTarget,
    maps: bool, smooth: bool, heat_out: Tensor | None = None, clusters: Tensor | None = None,
    layout: LayoutSpec = "auto",
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    head = _closed_form_head(encoder, layer)
    if head is not None:
        weights, z, acts = _closed_form_weights(encoder, layer, x, centroids, target, head, layout)
    else:
        z, acts = forward_with_layer(encoder, layer, x, with_grad=True, layout=layout)
        check_embedding(z, centroids)
        grads = _batched_grads(target.losses(z, centroids), acts)  # K x N x C x spatial
        weights = target.pool(grads, tuple(range(3, grads.dim()))).transpose(0, 1).detach()
        del grads
    if clusters is not None:  # each sample's given cluster only: N x 1 x C
        weights = weights[torch.arange(len(clusters)), clusters.to(weights.device)][:, None]
    raw = heat = None
    if maps:
        a = acts.detach().flatten(2)  # N x C x S
        w = weights.clamp_min(0) if target.relu else weights
        raw = torch.einsum("nkc,ncs->nks", w, a).reshape(a.shape[0], w.shape[1], *acts.shape[2:])
        heat = input_maps(raw, tuple(x.shape[2:]), smooth=smooth, out=heat_out)
    return z.detach(), weights, raw, heat


@reordered_parameters("encoder", "target_layer", "x", "centroids", "target", "temperature",
                      "batch_size", "return_maps", "smooth", when=lambda args, kwargs: len(args) > 4)
@renamed_parameters(mode="target")
def grad_ceam(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    *,
    clusters: Tensor | None = None,
    target: str | GradCeAMTarget = "reference",
    temperature: float = 1.0,
    batch_size: int | None = 512,
    return_maps: bool = True,
    smooth: bool = False,
    layout: LayoutSpec = "auto",
) -> GradCeAMResult:
    """Grad-CeAM maps ``M_c = sum_k ReLU(W_c,k) A_k`` (eq. 10) for every sample and centroid.

    The channel weights W_c,k pool the gradient of the target's loss L_c(z) (eq. 5-8) at the
    target layer's output A over the positions (eq. 9); the map weighs A's channels by them.

    Args:
        encoder: maps x to embeddings N x m.
        target_layer: the module of ``encoder`` (or its dotted name) whose output A
            (N x C x target-layer spatial size) is explained.
        x: N x C x L (series) or N x C x H x W (images).
        centroids: K x m, e.g. the k-means centroids of the embeddings.
        clusters: N cluster ids: only each sample's given cluster (K' = 1); None: all K.
        target: a :class:`GradCeAMTarget` or its name: ``reference`` (the authors' code,
            default), ``paper`` (eq. 5-9 as printed) or ``assignment`` (log soft-assignment
            at ``temperature``). ``mode=`` is the old name.
        temperature: of the ``assignment`` target (> 0).
        batch_size: samples per chunk, bounds memory (None: one chunk).
        return_maps: False keeps only the channel weights and embeddings, for tables over
            whole test sets.
        smooth: moving average of series maps.
        layout: how the target layer's output is read as channels at positions
            (:mod:`clustercam.explain.layouts`): ``auto`` (channels first as it is; tokens of a
            ViT-style encoder and channels-last maps as their grid), a kind or a callable.

    Returns:
        A :class:`GradCeAMResult`: heatmaps N x K' x spatial in [0, 1], raw maps at the
        target layer (its grid), channel weights N x K' x C (eq. 9), embeddings N x m.

    Raises:
        UserError: an unknown target, a layer not in the encoder, bad shapes or values.

    Example:
        >>> import torch
        >>> from clustercam.explain import grad_ceam
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> net = ResNetCAE((1, 64), filters=(8, 8), embedding_dim=4)
        >>> x, mu = torch.randn(6, 1, 64), torch.randn(3, 4)
        >>> res = grad_ceam(net.encoder, "features", x, mu, target="assignment")
        >>> tuple(res.heatmaps.shape), tuple(res.channel_weights.shape)
        ((6, 3, 64), (6, 3, 8))
        >>> bool(res.heatmaps.min() >= 0) and bool(res.heatmaps.max() <= 1)
        True
    """
    resolved = resolve_target(target, temperature)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size must be >= 1 or None, got {batch_size}")
    check_inputs(x, centroids)
    k = centroids.shape[0]
    n = x.shape[0]
    if clusters is not None:
        clusters = check_clusters(clusters, n, k)
    layer = resolve_layer(encoder, target_layer)
    device = module_device(encoder, x.device)
    dtype = module_dtype(encoder)
    mu = centroids.detach().to(device=device, dtype=dtype)
    step = n if batch_size is None else batch_size
    parts: list[tuple[Tensor, Tensor, Tensor | None]] = []
    heat = None
    with eval_mode(encoder), torch.inference_mode(False):
        if return_maps:  # the largest output: filled chunk by chunk, never concatenated
            heat = torch.empty((n, k if clusters is None else 1, *x.shape[2:]), dtype=dtype)
        for start in range(0, n, step):
            xb = x[start : start + step].to(device=device, dtype=dtype).clone()
            dest = heat[start : start + step] if heat is not None and device.type == "cpu" else None
            sel = None if clusters is None else clusters[start : start + step]
            z, w, raw, hb = _chunk(encoder, layer, xb, mu, resolved, return_maps, smooth,
                                   heat_out=dest, clusters=sel, layout=layout)
            if heat is not None and dest is None:
                heat[start : start + step].copy_(hb)
            parts.append((z.cpu(), w.cpu(), None if raw is None else raw.cpu()))
    z = torch.cat([p[0] for p in parts])
    w = torch.cat([p[1] for p in parts])
    raw = torch.cat([p[2] for p in parts]) if return_maps else None
    explained = (torch.arange(k).expand(n, k) if clusters is None else clusters[:, None]).clone()
    return GradCeAMResult(heatmaps=heat, raw=raw, channel_weights=w, embeddings=z,
                          mode=resolved.name, clusters=explained)
