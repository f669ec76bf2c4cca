"""NEON (Kauffmann et al., "From clustering to cluster explanations via neural networks",
IEEE TNNLS 2022): k-means rewritten as a small network, its evidence propagated back by LRP.

For centroids mu_1..mu_K, embedding z and cluster c, every other centroid k gives a linear
unit ``h_ck(z) = ||z - mu_k||^2 - ||z - mu_c||^2 = w_ck . (z - m_ck)`` with
``w_ck = 2 (mu_c - mu_k)`` and the midpoint ``m_ck = (mu_c + mu_k) / 2``; the cluster
evidence is their (soft) minimum ``f_c``, positive exactly when z is assigned to c. The
midpoint rule hands ``f_c`` to the embedding features, and LRP (zennit's rules and
canonizers; its releases have no k-means layer, so the layer above is ours) carries it
through the encoder to the input.

zennit is an optional dependency (``pip install clustercam[peers]``), imported only when an
explanation is computed. clustercam's encoders need two canonizers zennit does not ship, both
here: the global average pooling of :class:`~clustercam.models.components.encoder.Encoder` becomes an
``AdaptiveAvgPool1d`` module (zennit's ``Norm`` rule: relevance in proportion to each
position's share), and the residual ``+`` of the ResNet CAE's blocks becomes zennit's ``Sum``
(the ``Norm`` rule again, as zennit's own ResNet canonizer does). BatchNorm is merged into the
preceding convolution by zennit's ``SequentialMergeBatchNorm``. Every change is undone and
every hook removed when the call returns, also when it raises.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from clustercam.explain.assignments import nearest, squared_distances
from clustercam.explain.checks import check_embedding, check_inputs
from clustercam.explain.hooks import (
    embed,
    eval_mode,
    hooked,
    module_device,
    module_dtype,
    resolve_layer,
)
from clustercam.explain.maps import input_maps

PEERS_HINT = "pip install clustercam[peers]"
STABILIZER = 1e-9  # sign-preserving, on h_ck in the midpoint rule (float64)
EVIDENCE = ("min", "soft_min")
# parameter-free leaves whose plain gradient is the right relevance flow (reshapes, masks)
PASS_THROUGH = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


def require_zennit() -> Any:
    """The zennit module, or one ImportError that says how to install it."""
    try:
        import zennit  # noqa: F401
        import zennit.canonizers
        import zennit.composites
    except ImportError as err:
        raise ImportError(f"NEON needs zennit (LRP), an optional dependency: {PEERS_HINT}") from err
    return zennit


# -- the neuralized k-means: evidence f_c and the midpoint rule ------------------------------
def _margins(z: Tensor, centroids: Tensor) -> Tensor:
    """h[n, c, k] = ||z_n - mu_k||^2 - ||z_n - mu_c||^2 (N x K x K, float64; h[n, c, c] = 0)."""
    d = squared_distances(z.double(), centroids.double())
    return d[:, None, :] - d[:, :, None]


def default_beta(z: Tensor, centroids: Tensor) -> float:
    """The scale-free soft-min stiffness: 1 / mean_n min_{k != c(n)} |h_c(n)k(z_n)|, the inverse
    of the mean margin of the samples to the boundary of their own cluster c(n) (the NEON
    authors' heuristic).

    The embedding's scale is arbitrary; with this beta a sample at a typical margin shares
    its evidence between the nearest competitors instead of giving it all to one. NaN (and a
    warning) when every margin is 0 (a collapsed embedding).
    """
    h = _margins(z, centroids)
    own = nearest(z, centroids)
    rows = h[torch.arange(len(z)), own]  # N x K
    rows[torch.arange(len(z)), own] = math.inf
    margin = float(rows.abs().min(1).values.mean())
    if not margin > 0 or not math.isfinite(margin):
        warnings.warn("every sample lies on a cluster boundary (mean margin 0): the default "
                      "beta is undefined (NaN); give beta, or beta=None for the hard minimum",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    return 1.0 / margin


def check_beta(beta: float | str | None, evidence: str = "min") -> None:
    """beta: ``auto``, None (hard: every share on the minimising unit) or a finite number > 0;
    ``evidence``: ``min`` or ``soft_min`` (which needs a beta)."""
    if evidence not in EVIDENCE:
        raise ValueError(f"unknown evidence {evidence!r}; choose one of {EVIDENCE}")
    if beta is None and evidence == "soft_min":
        raise ValueError("evidence='soft_min' needs a beta ('auto' or a number > 0), got None")
    if beta is None or beta == "auto":
        return
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, 'auto' or None (the hard minimum), got {beta!r}")


def cluster_evidence(z: Tensor, centroids: Tensor, beta: float | None = None) -> Tensor:
    """NEON's cluster evidence f_c(z) for every cluster, N x K (float64, differentiable in z).

    ``beta=None``: ``f_c = min_{k != c} h_ck``, > 0 exactly when z is nearest to mu_c (the
    output of the neuralized k-means). A number: the soft-min
    ``-(1/beta) log sum_{k != c} exp(-beta h_ck)``, smooth, at most the minimum and equal to it
    as beta grows (it can be <= 0 for a sample of c with several close competitors).
    """
    check_beta(beta, "min")
    if beta == "auto":
        raise ValueError("cluster_evidence needs a number for beta: use default_beta(z, centroids)")
    h = _margins(z, centroids)
    eye = torch.eye(h.shape[1], dtype=torch.bool, device=h.device)
    if beta is None:
        return h.masked_fill(eye, math.inf).amin(-1)
    return -torch.logsumexp((-float(beta) * h).masked_fill(eye, -math.inf), -1) / float(beta)


def midpoint_relevance(
    z: Tensor, centroids: Tensor, beta: float | None = None, evidence: str = "min",
    clusters: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(relevance of the embedding features N x K' x m, evidence f_c N x K') by the midpoint rule.

    The K - 1 units share f_c as ``R_k = f_c softmax_{k != c}(-beta h_ck)`` (all on the
    minimising unit for ``beta=None``), and unit k hands R_k to feature j in proportion to
    its term of ``h_ck = sum_j (z_j - m_ck,j) w_ck,j``: ``R_j = sum_k (z_j - m_ck,j) w_ck,j /
    h_ck R_k`` (a tiny sign-preserving stabiliser on h_ck), so sum_j R_j = f_c. ``evidence``:
    ``min`` (the hard minimum, as the NEON authors' code) or ``soft_min``
    (:func:`cluster_evidence` at beta). ``clusters`` (N): only each sample's given cluster
    (K' = 1); default all K clusters. Float64.
    """
    check_beta(beta, evidence)
    zd, mu = z.detach().double(), centroids.detach().double()
    n, k = zd.shape[0], mu.shape[0]
    h = _margins(zd, mu)  # N x K x K
    eye = torch.eye(k, dtype=torch.bool)
    if beta is None:
        share = torch.zeros_like(h).scatter_(-1, h.masked_fill(eye, math.inf).argmin(-1, keepdim=True), 1.0)
    else:
        share = torch.softmax((-float(beta) * h).masked_fill(eye, -math.inf), -1)
    f = cluster_evidence(zd, mu, beta if evidence == "soft_min" else None)  # N x K
    w = 2 * (mu[:, None, :] - mu[None, :, :])  # c x k x m
    mid = (mu[:, None, :] + mu[None, :, :]) / 2
    if clusters is not None:
        sel = torch.as_tensor(clusters, dtype=torch.long).flatten()
        rows = torch.arange(n)
        h, share, f = h[rows, sel][:, None], share[rows, sel][:, None], f[rows, sel][:, None]
        w, mid = w[sel][:, None], mid[sel][:, None]  # N x 1 x K x m
    else:
        w, mid = w[None], mid[None]
    terms = (zd[:, None, None, :] - mid) * w  # N x K' x K x m, summing over m to h
    sign = torch.where(h >= 0, 1.0, -1.0).to(h)
    unit = (share * f[..., None]) / (h + STABILIZER * sign)  # R_k / h_ck, 0 where share is 0
    return (terms * unit[..., None]).sum(2), f


# -- LRP through the encoder (zennit) ---------------------------------------------------------
def _is_clustercam_encoder(module: nn.Module) -> bool:
    """True when the module declares z = fc(pool(features(x))) (``linear_head``, duck-typed
    as Grad-CeAM's closed form does: this layer imports no model class)."""
    declare = getattr(module, "linear_head", None)
    feats = getattr(module, "features", None)
    return callable(declare) and isinstance(feats, nn.Module) and declare(feats) is not None


def _is_residual_block(module: nn.Module) -> bool:
    """clustercam's ``ResidualBlock1d``: forward = act(body(x) + shortcut(x))."""
    return (type(module).__name__ == "ResidualBlock1d"
            and type(module).__module__ == "clustercam.models.components.resnet_cae"
            and all(isinstance(getattr(module, a, None), nn.Module) for a in ("body", "shortcut", "act")))


def _encoder_forward(self: nn.Module, x: Tensor) -> Tensor:
    a = self.features(x)
    pooled = self.canonizer_pool(a.flatten(2))[..., 0] if self.pooling == "gap" else a.flatten(1)
    return self.fc(pooled)


def _residual_forward(self: nn.Module, x: Tensor) -> Tensor:
    return self.act(self.canonizer_sum(torch.stack([self.body(x), self.shortcut(x)], dim=-1)))


def clustercam_canonizers() -> list[Any]:
    """zennit canonizers for clustercam's encoders: the mean pooling as a module, the residual
    ``+`` as zennit's ``Sum``, BatchNorm merged (zennit's ``SequentialMergeBatchNorm``), and
    torchvision's ResNet blocks when torchvision is installed."""
    require_zennit()
    from zennit.canonizers import AttributeCanonizer, SequentialMergeBatchNorm
    from zennit.layer import Sum

    def attributes(_name: str, module: nn.Module) -> dict[str, Any] | None:
        if _is_clustercam_encoder(module) and getattr(module, "pooling", None) == "gap":
            return {"forward": _encoder_forward.__get__(module), "canonizer_pool": nn.AdaptiveAvgPool1d(1)}
        if _is_residual_block(module):
            return {"forward": _residual_forward.__get__(module), "canonizer_sum": Sum(dim=-1)}
        return None

    out = [AttributeCanonizer(attributes), SequentialMergeBatchNorm()]
    try:
        from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

        out += [ResNetBasicBlockCanonizer(), ResNetBottleneckCanonizer()]
    except ImportError:  # no torchvision: no torchvision blocks to canonize
        pass
    return out


def _handled(module: nn.Module) -> bool:
    if _is_clustercam_encoder(module) or _is_residual_block(module):
        return True
    try:
        from torchvision.models.resnet import BasicBlock, Bottleneck
    except ImportError:
        return False
    return isinstance(module, BasicBlock | Bottleneck)


def check_lrp_encoder(encoder: nn.Module) -> None:
    """A clear TypeError when zennit cannot explain a module of the encoder, a warning where
    relevance may leak.

    Errors: a module with parameters that no rule of the composite covers (e.g. LayerNorm,
    an RNN, an Embedding) and a BatchNorm that does not directly follow a convolution or
    linear layer (the canonizer cannot merge it). Warnings: a container with its own
    ``forward`` that no canonizer rewrites (its functional operations, a residual ``+`` say,
    pass relevance as a plain gradient) and unknown parameter-free layers.
    """
    require_zennit()
    from zennit.core import collect_leaves
    from zennit.layer import Sum
    from zennit.types import Activation, AvgPool, BatchNorm, Convolution, Linear, MaxPool

    names = {id(m): n or "<the encoder>" for n, m in encoder.named_modules()}
    last = None
    for leaf in collect_leaves(encoder):
        where = f"{type(leaf).__name__} at {names.get(id(leaf), '?')!r}"
        if isinstance(leaf, BatchNorm) and not isinstance(last, Linear):
            raise TypeError(f"NEON cannot canonize the encoder: {where} follows "
                            f"{type(last).__name__ if last is not None else 'the input'}, not a "
                            "convolution or linear layer, so zennit cannot merge it into one")
        has_params = any(True for _ in leaf.parameters(recurse=False))
        supported = isinstance(leaf, Convolution | nn.Linear | BatchNorm | Activation)
        if has_params and not supported:
            raise TypeError(f"NEON cannot canonize the encoder: zennit has no LRP rule for {where} "
                            "(supported: convolutions, linear layers, BatchNorm after them, "
                            "activations, pooling)")
        if not has_params and not isinstance(leaf, (Activation, AvgPool, MaxPool, Sum, *PASS_THROUGH)):
            warnings.warn(f"NEON: no LRP rule for {where}; relevance passes it as a plain gradient",
                          RuntimeWarning, stacklevel=3)
        last = leaf
    plain = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    for name, module in encoder.named_modules():
        if isinstance(module, nn.MultiheadAttention | nn.RNNBase):
            raise TypeError(f"NEON cannot canonize the encoder: zennit has no LRP rule for "
                            f"{type(module).__name__} at {name!r}")
        if next(module.children(), None) is None or isinstance(module, plain) or _handled(module):
            continue
        warnings.warn(f"NEON: {type(module).__name__} at {name or '<the encoder>'!r} has its own "
                      "forward and no canonizer: its functional operations (a residual '+', a "
                      "mean) pass relevance as a plain gradient, which need not conserve it",
                      RuntimeWarning, stacklevel=3)


def make_composite(composite: str | Any = "epsilon_plus_flat") -> Any:
    """A zennit composite by name (``zennit.composites.COMPOSITES``: ``epsilon_plus_flat`` by
    default: epsilon on dense layers, z+ on convolutions, flat on the first layer) with
    clustercam's canonizers, or a composite instance as given."""
    zennit = require_zennit()
    if not isinstance(composite, str):
        if not isinstance(composite, zennit.core.Composite):
            raise TypeError(f"composite must be a zennit Composite or a name, got {type(composite).__name__}")
        return composite
    table = zennit.composites.COMPOSITES
    if composite not in table:
        raise ValueError(f"unknown zennit composite {composite!r}; choose one of {sorted(table)}")
    return table[composite](canonizers=clustercam_canonizers())


@contextmanager
def lrp(encoder: nn.Module, composite: str | Any = "epsilon_plus_flat") -> Iterator[nn.Module]:
    """The encoder in eval mode with the composite's rules and canonizers, all undone after."""
    check_lrp_encoder(encoder)
    comp = make_composite(composite)
    with eval_mode(encoder), comp.context(encoder) as hooked_encoder:
        yield hooked_encoder


@dataclass
class NEONResult:
    """NEON's maps for N samples x K' clusters (K' = K, or 1 with ``clusters`` given).

    ``heatmaps``: N x K' x input spatial size, min-max normalised per sample and cluster (as
    Grad-CeAM's); ``raw``: the signed input relevance summed over input channels (sums to
    f_c where the rules conserve); ``layer_raw``: the relevance at the target layer summed
    over its channels (N x K' x layer spatial size; None without a target layer);
    ``evidence``: f_c, N x K'; ``embeddings``: N x m; ``beta`` as used (None: hard shares);
    ``clusters``: the explained cluster of each map (N x K').
    """

    heatmaps: Tensor
    raw: Tensor
    layer_raw: Tensor | None
    evidence: Tensor
    embeddings: Tensor
    beta: float | None
    clusters: Tensor


def neon(
    encoder: nn.Module,
    x: Tensor,
    centroids: Tensor,
    clusters: Tensor | None = None,
    beta: float | str | None = "auto",
    evidence: str = "min",
    target_layer: nn.Module | str | None = None,
    composite: str | Any = "epsilon_plus_flat",
    batch_size: int = 256,
    smooth: bool = False,
) -> NEONResult:
    """NEON relevance maps of k-means clusters on any (zennit-canonizable) encoder.

    ``encoder`` maps x (N x C x L or N x C x H x W) to embeddings N x m; ``centroids`` K x m.
    The evidence f_c (``evidence``: ``min``, > 0 exactly for the samples of c, or
    ``soft_min``) is shared among the K - 1 linear units at stiffness ``beta`` (``auto``: the
    inverse mean margin of the samples in x, :func:`default_beta`; None: all on the nearest
    competitor), the midpoint rule hands it to z (:func:`midpoint_relevance`) and LRP with
    ``composite`` (zennit's ``EpsilonPlusFlat`` by default, BatchNorm merged) to the input.
    ``clusters`` (N): explain only each sample's given cluster, one backward pass per chunk;
    default all K clusters from one forward pass and K backward passes per chunk. f_c < 0
    where a sample is not in c: its map shows the evidence against c. ``target_layer``: also
    the relevance at that module's output. Hooks, parameters and train/eval state are restored.

    Example:
        >>> import torch
        >>> from clustercam.explain.neon import neon
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> enc = ResNetCAE((1, 32), filters=(4, 4), embedding_dim=3).encoder
        >>> x, mu = torch.randn(6, 1, 32), torch.randn(3, 3)
        >>> res = neon(enc, x, mu, target_layer="features")
        >>> tuple(res.heatmaps.shape), tuple(res.layer_raw.shape), tuple(res.evidence.shape)
        ((6, 3, 32), (6, 3, 32), (6, 3))
        >>> own = torch.cdist(res.embeddings, mu).argmin(1)  # f_c > 0 exactly for c = own
        >>> bool(((res.evidence > 0) == (own[:, None] == torch.arange(3))).all())
        True
    """
    check_beta(beta, evidence)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_inputs(x, centroids)
    require_zennit()
    n, k = x.shape[0], centroids.shape[0]
    if clusters is not None:
        clusters = torch.as_tensor(clusters, dtype=torch.long).flatten().cpu()
        if clusters.shape[0] != n or bool((clusters < 0).any()) or bool((clusters >= k).any()):
            raise ValueError(f"clusters must be N = {n} indices in [0, {k}), got {clusters.tolist()[:10]}")
    layer = resolve_layer(encoder, target_layer) if target_layer is not None else None
    z_all = embed(encoder, x, batch_size)
    check_embedding(z_all, centroids)
    mu = centroids.detach().cpu().double()
    if beta == "auto":
        beta = default_beta(z_all, mu)
        if not math.isfinite(beta):  # collapsed embedding (warned): hard shares
            beta, evidence = None, "min"
    device, dtype = module_device(encoder, x.device), module_dtype(encoder)
    raw = torch.empty((n, k if clusters is None else 1, *x.shape[2:]), dtype=dtype)
    f_all = torch.empty(raw.shape[:2], dtype=torch.float64)
    layer_parts: list[Tensor] = []
    with lrp(encoder, composite) as hooked_encoder, torch.inference_mode(False):
        for start in range(0, n, batch_size):
            sel = None if clusters is None else clusters[start : start + batch_size]
            xb = x[start : start + batch_size].to(device=device, dtype=dtype).clone().requires_grad_(True)
            rel, layer_rel, f = _lrp_chunk(hooked_encoder, layer, xb, mu, beta, evidence, sel)
            raw[start : start + len(xb)] = rel
            f_all[start : start + len(xb)] = f
            if layer_rel is not None:
                layer_parts.append(layer_rel)
    explained = (torch.arange(k).expand(n, k) if clusters is None else clusters[:, None]).clone()
    heat = input_maps(raw, tuple(x.shape[2:]), smooth=smooth)
    return NEONResult(heat, raw, torch.cat(layer_parts) if layer_parts else None, f_all, z_all,
                      None if beta is None else float(beta), explained)


def _lrp_chunk(
    encoder: nn.Module, layer: nn.Module | None, xb: Tensor, mu: Tensor, beta: float | None,
    evidence: str, clusters: Tensor | None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Input relevance (b x K' x spatial), target-layer relevance and f_c of one chunk: one
    forward pass under the composite, one modified backward pass per explained cluster."""
    captured: dict[str, Tensor] = {}

    def keep(output: Tensor) -> None:
        captured["A"] = output

    with torch.enable_grad():
        if layer is None:
            z = encoder(xb)
        else:
            with hooked(layer, keep):
                z = encoder(xb)
            if "A" not in captured or not captured["A"].requires_grad:
                raise ValueError(f"the target layer {type(layer).__name__} was not called on the "
                                 "path from the input to the embedding")
        rz, f = midpoint_relevance(z.detach().cpu(), mu, beta, evidence, clusters)
        rz = rz.to(device=z.device, dtype=z.dtype)
        wrt = (xb,) if layer is None else (xb, captured["A"])
        rel, layer_rel = [], []
        for c in range(rz.shape[1]):
            grads = torch.autograd.grad(z, wrt, grad_outputs=rz[:, c], retain_graph=c < rz.shape[1] - 1)
            rel.append(grads[0].sum(1).detach().cpu())
            if layer is not None:
                layer_rel.append(grads[1].sum(1).detach().cpu())
    return (torch.stack(rel, 1), torch.stack(layer_rel, 1) if layer is not None else None, f)
