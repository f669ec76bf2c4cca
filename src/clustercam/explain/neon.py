"""NEON: k-means rewritten as a small network, its evidence propagated back by LRP.

Kauffmann et al., "From clustering to cluster explanations via neural networks", IEEE
TNNLS 2022. The cluster evidence ``f_c`` of the neuralized k-means and the midpoint rule that hands it
to the embedding features are in :mod:`~clustercam.explain.evidence`; LRP (zennit's rules and
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

from clustercam.exceptions import MissingDependencyError, UserError
from clustercam.explain.checks import check_clusters, check_embedding, check_inputs
from clustercam.explain.deprecation import reordered_parameters
from clustercam.explain.evidence import check_beta, default_beta, midpoint_relevance
from clustercam.explain.hooks import (
    embed,
    eval_mode,
    hooked,
    layer_layout,
    module_device,
    module_dtype,
    resolve_layer,
)
from clustercam.explain.layouts import LayoutSpec
from clustercam.explain.maps import input_maps

PEERS_HINT = "pip install clustercam[peers]"
# parameter-free leaves whose plain gradient is the right relevance flow (reshapes, masks)
PASS_THROUGH = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


def require_zennit() -> Any:
    """The zennit module, or one error that says how to install it.

    Returns:
        The ``zennit`` module (with its canonizers and composites imported).

    Raises:
        MissingDependencyError: zennit is not installed.
    """
    try:
        import zennit  # noqa: F401
        import zennit.canonizers
        import zennit.composites
    except ImportError as err:
        raise MissingDependencyError(f"NEON needs zennit (LRP), an optional dependency: {PEERS_HINT}") from err
    return zennit


# -- LRP through the encoder (zennit) ---------------------------------------------------------
def _is_clustercam_encoder(module: nn.Module) -> bool:
    """True when the module declares ``z = fc(pool(features(x)))`` through ``linear_head``.

    Duck-typed as Grad-CeAM's closed form does: this layer imports no model class.
    """
    declare = getattr(module, "linear_head", None)
    feats = getattr(module, "features", None)
    return callable(declare) and isinstance(feats, nn.Module) and declare(feats) is not None


def _residual_branches(module: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module] | None:
    """(body, shortcut, act) of a block that declares ``act(body(x) + shortcut(x))``, else None.

    The block declares it through a ``residual_branches()`` method (clustercam's
    ``ResidualBlock1d`` does).
    """
    declare = getattr(module, "residual_branches", None)
    parts = declare() if callable(declare) else None
    if parts is None or len(parts) != 3 or not all(isinstance(p, nn.Module) for p in parts):
        return None
    return parts


def _is_residual_block(module: nn.Module) -> bool:
    return _residual_branches(module) is not None


def _encoder_forward(self: nn.Module, x: Tensor) -> Tensor:
    a = self.features(x)
    pooled = self.canonizer_pool(a.flatten(2))[..., 0] if self.pooling == "gap" else a.flatten(1)
    return self.fc(pooled)


def _residual_forward(self: nn.Module, x: Tensor) -> Tensor:
    body, shortcut, act = self.residual_branches()
    return act(self.canonizer_sum(torch.stack([body(x), shortcut(x)], dim=-1)))


def clustercam_canonizers() -> list[Any]:
    """The zennit canonizers for clustercam's encoders.

    The mean pooling becomes a module, the residual ``+`` zennit's ``Sum``, BatchNorm is
    merged into the layer before it (zennit's ``SequentialMergeBatchNorm``), and
    torchvision's ResNet blocks are canonized when torchvision is installed.

    Returns:
        A list of zennit canonizers, for a composite's ``canonizers=``.

    Raises:
        MissingDependencyError: zennit is not installed.
    """
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
    """Fail clearly where zennit cannot explain a module of the encoder; warn where relevance may leak.

    Warnings (``RuntimeWarning``): a container with its own ``forward`` that no canonizer
    rewrites (its functional operations, a residual ``+`` say, pass relevance as a plain
    gradient) and unknown parameter-free layers.

    Args:
        encoder: the module NEON would explain.

    Raises:
        UserError: a module with parameters that no rule of the composite covers (e.g.
            LayerNorm, an RNN, an Embedding), or a BatchNorm that does not directly follow a
            convolution or linear layer (the canonizer cannot merge it).
        MissingDependencyError: zennit is not installed.
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
            raise UserError(f"NEON cannot canonize the encoder: {where} follows "
                            f"{type(last).__name__ if last is not None else 'the input'}, not a "
                            "convolution or linear layer, so zennit cannot merge it into one")
        has_params = any(True for _ in leaf.parameters(recurse=False))
        supported = isinstance(leaf, Convolution | nn.Linear | BatchNorm | Activation)
        if has_params and not supported:
            raise UserError(f"NEON cannot canonize the encoder: zennit has no LRP rule for {where} "
                            "(supported: convolutions, linear layers, BatchNorm after them, "
                            "activations, pooling)")
        if not has_params and not isinstance(leaf, (Activation, AvgPool, MaxPool, Sum, *PASS_THROUGH)):
            warnings.warn(f"NEON: no LRP rule for {where}; relevance passes it as a plain gradient",
                          RuntimeWarning, stacklevel=3)
        last = leaf
    plain = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    for name, module in encoder.named_modules():
        if isinstance(module, nn.MultiheadAttention | nn.RNNBase):
            raise UserError(f"NEON cannot canonize the encoder: zennit has no LRP rule for "
                            f"{type(module).__name__} at {name!r}")
        if next(module.children(), None) is None or isinstance(module, plain) or _handled(module):
            continue
        warnings.warn(f"NEON: {type(module).__name__} at {name or '<the encoder>'!r} has its own "
                      "forward and no canonizer: its functional operations (a residual '+', a "
                      "mean) pass relevance as a plain gradient, which need not conserve it",
                      RuntimeWarning, stacklevel=3)


def make_composite(composite: str | Any = "epsilon_plus_flat") -> Any:
    """A zennit composite by name, with clustercam's canonizers, or a composite as given.

    Args:
        composite: a name in ``zennit.composites.COMPOSITES`` (``epsilon_plus_flat`` by
            default: epsilon on dense layers, z+ on convolutions, flat on the first layer)
            or a zennit ``Composite`` instance (used as it is).

    Returns:
        The zennit composite.

    Raises:
        UserError: an unknown name, or an object that is not a composite.
        MissingDependencyError: zennit is not installed.
    """
    zennit = require_zennit()
    if not isinstance(composite, str):
        if not isinstance(composite, zennit.core.Composite):
            raise UserError(f"composite must be a zennit Composite or a name, got {type(composite).__name__}")
        return composite
    table = zennit.composites.COMPOSITES
    if composite not in table:
        raise UserError(f"unknown zennit composite {composite!r}; choose one of {sorted(table)}")
    return table[composite](canonizers=clustercam_canonizers())


@contextmanager
def lrp(encoder: nn.Module, composite: str | Any = "epsilon_plus_flat") -> Iterator[nn.Module]:
    """The encoder in eval mode with the composite's rules and canonizers, all undone after.

    Args:
        encoder: the module to explain (checked by :func:`check_lrp_encoder`).
        composite: a zennit composite or its name (:func:`make_composite`).

    Yields:
        The encoder with zennit's hooks: its gradient is the LRP relevance.

    Raises:
        UserError: a module zennit cannot explain, or a bad composite.
        MissingDependencyError: zennit is not installed.
    """
    check_lrp_encoder(encoder)
    comp = make_composite(composite)
    with eval_mode(encoder), comp.context(encoder) as hooked_encoder:
        yield hooked_encoder


@dataclass
class NEONResult:
    """What :func:`neon` returns: maps for N samples x K' clusters.

    K' = K, or 1 when ``neon`` was given each sample's cluster (``clusters=``).

    Attributes:
        heatmaps: N x K' x input spatial size, min-max normalised per sample and cluster (as
            Grad-CeAM's).
        raw: N x K' x input spatial size, the signed input relevance summed over the input
            channels (it sums to f_c where the rules conserve relevance).
        layer_raw: N x K' x target-layer spatial size, the relevance at the target layer
            summed over its channels; None without a target layer.
        evidence: N x K', the cluster evidence f_c (float64; > 0 exactly for the sample's
            own cluster under ``evidence="min"``).
        embeddings: N x m.
        beta: the soft-min stiffness as used (None: all shares on the nearest competitor).
        clusters: N x K', the cluster each map explains.

    Example:
        >>> import torch
        >>> from clustercam.explain import neon
        >>> enc = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
        >>> x, mu = torch.randn(5, 1, 16), torch.randn(3, 4)
        >>> res = neon(enc, None, x, mu, clusters=torch.tensor([0, 1, 2, 0, 1]), beta=None)
        >>> tuple(res.heatmaps.shape), res.layer_raw, tuple(res.evidence.shape), res.beta
        ((5, 1, 16), None, (5, 1), None)
    """

    heatmaps: Tensor
    raw: Tensor
    layer_raw: Tensor | None
    evidence: Tensor
    embeddings: Tensor
    beta: float | None
    clusters: Tensor


@reordered_parameters("encoder", "x", "centroids", "clusters", "beta", "evidence", "target_layer",
                      "composite", "batch_size", "smooth",
                      when=lambda args, kwargs: (len(args) > 1 and isinstance(args[1], Tensor))
                      or (len(args) < 2 and "target_layer" not in kwargs),
                      defaults={"target_layer": None})
def neon(
    encoder: nn.Module,
    target_layer: nn.Module | str | None,
    x: Tensor,
    centroids: Tensor,
    *,
    clusters: Tensor | None = None,
    beta: float | str | None = "auto",
    evidence: str = "min",
    composite: str | Any = "epsilon_plus_flat",
    batch_size: int = 256,
    smooth: bool = False,
    layout: LayoutSpec = "auto",
) -> NEONResult:
    """NEON relevance maps of k-means clusters on any (zennit-canonizable) encoder.

    The neuralized k-means (:mod:`~clustercam.explain.evidence`) gives each sample its
    evidence for cluster c, ``f_c = min_{k != c} h_ck`` with the linear units
    ``h_ck(z) = ||z - mu_k||^2 - ||z - mu_c||^2``. f_c is shared among the K - 1 units at
    stiffness ``beta``, the midpoint rule hands it to z
    (:func:`~clustercam.explain.evidence.midpoint_relevance`) and LRP with ``composite`` to
    the input. f_c < 0 where a sample is not in c: its map shows the evidence against c.
    Hooks, parameters and train/eval state are restored.

    Args:
        encoder: maps x to embeddings N x m (zennit must be able to canonize it).
        target_layer: a module (or its dotted name) whose relevance is also returned
            (``layer_raw``, over its grid: tokens and channels-last outputs are read by
            ``layout`` as for :func:`~clustercam.explain.grad_ceam`); None: the input only.
        x: N x C x L (series) or N x C x H x W (images).
        centroids: K x m.
        clusters: N cluster ids: explain only each sample's given cluster (one backward pass
            per chunk); None: all K clusters (one forward, K backward passes per chunk).
        beta: ``auto`` (the inverse mean margin of the samples in x,
            :func:`~clustercam.explain.evidence.default_beta`), a number > 0, or None (all
            on the nearest competitor).
        evidence: ``min`` (> 0 exactly for the samples of c) or ``soft_min``.
        composite: a zennit composite or its name (``epsilon_plus_flat``: zennit's
            ``EpsilonPlusFlat``, BatchNorm merged).
        batch_size: samples per chunk.
        smooth: moving average of series maps.
        layout: how the target layer's output is read as channels at positions
            (:mod:`clustercam.explain.layouts`; ``auto``: tokens and channels-last as their grid).

    Returns:
        A :class:`NEONResult`: heatmaps N x K' x input spatial size in [0, 1], the signed
        relevance, the evidence f_c (N x K') and the embeddings N x m.

    Raises:
        UserError: bad ``beta``, ``evidence``, ``clusters``, ``composite`` or a module zennit
            cannot explain.
        MissingDependencyError: zennit is not installed.

    Example:
        >>> import torch
        >>> from clustercam.explain.neon import neon
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> enc = ResNetCAE((1, 32), filters=(4, 4), embedding_dim=3).encoder
        >>> x, mu = torch.randn(6, 1, 32), torch.randn(3, 3)
        >>> res = neon(enc, "features", x, mu)
        >>> tuple(res.heatmaps.shape), tuple(res.layer_raw.shape), tuple(res.evidence.shape)
        ((6, 3, 32), (6, 3, 32), (6, 3))
        >>> own = torch.cdist(res.embeddings, mu).argmin(1)  # f_c > 0 exactly for c = own
        >>> bool(((res.evidence > 0) == (own[:, None] == torch.arange(3))).all())
        True
    """
    check_beta(beta, evidence)
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    check_inputs(x, centroids)
    require_zennit()
    n, k = x.shape[0], centroids.shape[0]
    if clusters is not None:
        clusters = check_clusters(clusters, n, k)
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
            rel, layer_rel, f = _lrp_chunk(hooked_encoder, layer, xb, mu, beta, evidence, sel, layout)
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
    evidence: str, clusters: Tensor | None, layout: LayoutSpec = "auto",
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Input relevance (b x K' x spatial), target-layer relevance and f_c of one chunk.

    One forward pass under the composite, one modified backward pass per explained cluster.
    """
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
                raise UserError(f"the target layer {type(layer).__name__} was not called on the "
                                 "path from the input to the embedding")
        rz, f = midpoint_relevance(z.detach().cpu(), mu, beta, evidence, clusters)
        rz = rz.to(device=z.device, dtype=z.dtype)
        wrt = (xb,) if layer is None else (xb, captured["A"])
        rel, layer_rel = [], []
        for c in range(rz.shape[1]):
            grads = torch.autograd.grad(z, wrt, grad_outputs=rz[:, c], retain_graph=c < rz.shape[1] - 1)
            rel.append(grads[0].sum(1).detach().cpu())
            if layer is not None:
                lay = layer_layout(encoder, layer, captured["A"], xb, layout)
                grid = grads[1] if lay is None else lay.read(grads[1])  # relevance per grid position
                layer_rel.append(grid.sum(1).detach().cpu())
    return (torch.stack(rel, 1), torch.stack(layer_rel, 1) if layer is not None else None, f)
