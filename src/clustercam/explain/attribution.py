"""A cluster target for any attribution library, and maps of three captum methods with it.

:class:`~clustercam.explain.cluster_scores.ClusterScoreModel` turns an encoder and its k-means
centroids into a module whose output is one score per cluster (N x K): the log soft
assignment, the soft assignment, or NEON's evidence f_c. To a library it looks like a
classifier, so "explain cluster c" is "explain class c"::

    from captum.attr import IntegratedGradients
    from clustercam.explain.attribution import cluster_target
    model = cluster_target(encoder, centroids, x=x)           # log q_c(x), T = spread of x
    attr = IntegratedGradients(model).attribute(x, target=3)  # N x C x L (or H x W)
    attr = IntegratedGradients(model).attribute(x, target=clusters)  # each sample's own cluster

pytorch-grad-cam's ``ClassifierOutputTarget(c)`` picks column c of the same output. The map
functions below (integrated gradients, occlusion with 1-D windows on series and square
patches on images, gradient SHAP) take what every cluster explanation takes,
``(encoder, target_layer, x, centroids, *, clusters=None, <options>)`` (``target_layer`` is
None: they explain the input), sum the attributions over input channels and min-max
normalise each map, as every map method of the scores does. captum is an optional
dependency (``pip install clustercam[peers]``), imported only when a map is computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from clustercam.exceptions import MissingDependencyError, UserError
from clustercam.explain.assignments import spread_temperature
from clustercam.explain.baselines import make_baseline
from clustercam.explain.checks import check_inputs
from clustercam.explain.cluster_scores import CLUSTER_SCORES, ClusterScoreModel
from clustercam.explain.deprecation import reordered_parameters
from clustercam.explain.evidence import default_beta
from clustercam.explain.hooks import embed, eval_mode, module_device, module_dtype
from clustercam.explain.maps import input_maps

PEERS_HINT = "pip install clustercam[peers]"


def require_captum() -> Any:
    """``captum.attr``, or one error that says how to install it.

    Returns:
        The ``captum.attr`` module.

    Raises:
        MissingDependencyError: captum is not installed.
    """
    try:
        import captum.attr
    except ImportError as err:
        raise MissingDependencyError(f"the attribution peers need captum, an optional dependency: {PEERS_HINT}") from err
    return captum.attr


@reordered_parameters("encoder", "centroids", "score", "temperature", "x", "beta",
                      when=lambda args, kwargs: len(args) > 2)
def cluster_target(
    encoder: nn.Module,
    centroids: Tensor,
    *,
    x: Tensor | None = None,
    score: str = "log_probability",
    temperature: float | str = "auto",
    beta: float | str | None = None,
) -> ClusterScoreModel:
    """The cluster target: ``encoder`` and ``centroids`` as a module with N x K cluster scores.

    To an attribution library the module looks like a classifier whose classes are the
    clusters: ``target=c`` explains cluster c.

    Args:
        encoder: maps x to embeddings N x m.
        centroids: K x m.
        x: the samples that ``temperature="auto"`` (or ``beta="auto"``) is measured on,
            N x C x L or N x C x H x W.
        score: ``log_probability`` (default: ``log softmax_k(-||z - mu_k||^2 / T)``, whose
            attributions say what moves the sample towards c and away from the others),
            ``probability``, or ``evidence`` (NEON's f_c).
        temperature: T of the soft assignment: ``auto`` (the spread of x's embeddings,
            k-means inertia / N, as the scores' curves use) or a number > 0.
        beta: of ``evidence``: None (the hard minimum), ``auto``
            (:func:`~clustercam.explain.evidence.default_beta` of x) or a number > 0.

    Returns:
        A :class:`~clustercam.explain.cluster_scores.ClusterScoreModel` on the encoder's
        device: ``model(x)`` is N x K.

    Raises:
        UserError: an unknown score, ``auto`` without ``x``, a bad temperature or beta.

    Example:
        >>> import torch
        >>> from clustercam.explain.attribution import cluster_target
        >>> enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 2))
        >>> x, mu = torch.randn(5, 1, 8), torch.randn(3, 2)
        >>> model = cluster_target(enc, mu, x=x)
        >>> tuple(model(x).shape), bool(torch.allclose(model(x).exp().sum(1), torch.ones(5)))
        ((5, 3), True)
    """
    if score not in CLUSTER_SCORES:
        raise UserError(f"unknown score {score!r}; choose one of {CLUSTER_SCORES}")
    needs_x = (temperature == "auto" and score != "evidence") or (score == "evidence" and beta == "auto")
    if needs_x and x is None:
        raise UserError("temperature='auto' (or beta='auto') needs the samples x to measure the spread on")
    z = embed(encoder, x) if needs_x else None
    if score != "evidence" and temperature == "auto":
        temperature = spread_temperature(z, centroids) or 1.0  # collapsed embedding: T = 1
    if score == "evidence" and beta == "auto":
        beta = default_beta(z, centroids)
        beta = None if not math.isfinite(beta) else beta
    t = float(temperature) if score != "evidence" else 1.0
    model = ClusterScoreModel(encoder, centroids, temperature=t, score=score, beta=beta)
    return model.to(device=module_device(encoder, centroids.device))


def _targets(clusters: Tensor | int, n: int) -> Tensor:
    if isinstance(clusters, int):
        return torch.full((n,), clusters, dtype=torch.long)
    t = torch.as_tensor(clusters, dtype=torch.long).flatten()
    if t.shape[0] != n:
        raise UserError(f"clusters must have N = {n} entries, got {t.shape[0]}")
    return t


def _to_maps(attr: Tensor, x: Tensor) -> Tensor:
    """N x C x spatial attributions -> N x spatial maps in [0, 1] (signed sum over channels)."""
    summed = attr.detach().sum(1, keepdim=True).float().cpu()
    return input_maps(summed, tuple(x.shape[2:]))[:, 0]


def _chunks(model: ClusterScoreModel, x: Tensor, targets: Tensor, batch_size: int, fn) -> Tensor:
    """``fn(xb, tb)`` -> attributions, per chunk of samples, in eval mode; N x spatial maps."""
    device, dtype = module_device(model.encoder, x.device), module_dtype(model.encoder)
    parts = []
    with eval_mode(model), torch.inference_mode(False):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device=device, dtype=dtype)
            tb = targets[start : start + batch_size].to(device)
            parts.append(_to_maps(fn(xb, tb), xb))
    return torch.cat(parts)


def _per_cluster(model: ClusterScoreModel, x: Tensor, clusters: Tensor | int | None, batch_size: int,
                 fn) -> Tensor:
    """N x spatial for the given clusters; N x K x spatial, cluster by cluster, for None."""
    if clusters is not None:
        return _chunks(model, x, _targets(clusters, len(x)), batch_size, fn)
    k = model.centroids.shape[0]
    return torch.stack([_chunks(model, x, _targets(c, len(x)), batch_size, fn) for c in range(k)], 1)


def _check(target_layer: object, x: Tensor, centroids: Tensor, score: str, batch_size: int) -> None:
    if target_layer is not None:
        raise UserError(f"the attribution maps explain the input: pass target_layer=None, got {target_layer!r}")
    check_inputs(x, centroids)
    if score not in CLUSTER_SCORES:
        raise UserError(f"unknown score {score!r}; choose one of {CLUSTER_SCORES}")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")


def _old_order(*options: str):
    """The old ``(encoder, x, centroids, clusters, <options>)`` calls: x where target_layer is now."""
    return reordered_parameters("encoder", "x", "centroids", "clusters", *options,
                                when=lambda args, kwargs: len(args) > 1 and isinstance(args[1], Tensor),
                                defaults={"target_layer": None})


@_old_order("n_steps", "baseline", "score", "temperature", "batch_size")
def integrated_gradients_maps(
    encoder: nn.Module, target_layer: None, x: Tensor, centroids: Tensor, *,
    clusters: Tensor | int | None = None, n_steps: int = 32, baseline: str | float = "auto",
    score: str = "log_probability", temperature: float | str = "auto", batch_size: int = 256,
) -> Tensor:
    """Integrated gradients (Sundararajan et al. 2017, eq. 1) of the cluster score.

    The path integral of the gradient of the cluster score (:func:`cluster_target`) from
    the baseline to x, times ``x - baseline``, summed over the input channels.

    Args:
        encoder: maps x to embeddings N x m.
        target_layer: None (the maps are of the input).
        x: N x C x L (series) or N x C x H x W (images).
        centroids: K x m.
        clusters: the cluster each sample's map explains (N, or one int for all); None: every
            cluster.
        n_steps: steps of the path integral (>= 1).
        baseline: where the path starts: ``auto`` (zero for series, a blurred copy for
            images, as the deletion curves use), ``zero``, ``mean``, ``blur`` or a number
            (:func:`~clustercam.explain.baselines.make_baseline`).
        score: the cluster score (:func:`cluster_target`).
        temperature: of the score's soft assignment (``auto``: the spread of x's embeddings).
        batch_size: samples per chunk.

    Returns:
        N x spatial maps in [0, 1] (N x K x spatial when ``clusters`` is None).

    Raises:
        UserError: a target layer, bad shapes, an unknown score, ``n_steps`` or
            ``batch_size`` < 1.
        MissingDependencyError: captum is not installed.

    Example:
        >>> import torch
        >>> from clustercam.explain.attribution import integrated_gradients_maps
        >>> enc = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
        >>> x, mu = torch.randn(5, 1, 16), torch.randn(3, 4)
        >>> maps = integrated_gradients_maps(enc, None, x, mu, clusters=torch.tensor([0, 1, 2, 0, 1]),
        ...                                  n_steps=4)
        >>> tuple(maps.shape), bool(maps.min() >= 0) and bool(maps.max() <= 1)
        ((5, 16), True)
        >>> tuple(integrated_gradients_maps(enc, None, x, mu, n_steps=4).shape)  # every cluster
        (5, 3, 16)
    """
    _check(target_layer, x, centroids, score, batch_size)
    if n_steps < 1:
        raise UserError(f"n_steps must be >= 1, got {n_steps}")
    attr = require_captum()
    model = cluster_target(encoder, centroids, score=score, temperature=temperature, x=x)
    ig = attr.IntegratedGradients(model)
    kind = ("zero" if x.dim() == 3 else "blur") if baseline == "auto" else baseline
    return _per_cluster(model, x, clusters, batch_size, lambda xb, tb: ig.attribute(
        xb, baselines=make_baseline(xb, kind), target=tb, n_steps=n_steps,
        internal_batch_size=batch_size))


def occlusion_windows(spatial: Sequence[int], window: int | None = None,
                      stride: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(window, stride) per spatial axis: a 1-D window for series, a square patch for images.

    Args:
        spatial: the input's spatial size, (L,) or (H, W).
        window: the window length / patch side (None: a tenth of the shortest side, >= 1).
        stride: the step between windows (None: half the window, >= 1).

    Returns:
        The window and the stride, one entry per spatial axis.

    Raises:
        UserError: a window or stride < 1, or a window larger than the shortest side.

    Example:
        >>> from clustercam.explain.attribution import occlusion_windows
        >>> occlusion_windows((28, 28)), occlusion_windows((100,), window=8)
        (((3, 3), (1, 1)), ((8,), (4,)))
    """
    w = int(window) if window is not None else max(1, math.ceil(min(spatial) / 10))
    s = int(stride) if stride is not None else max(1, w // 2)
    if w < 1 or s < 1 or w > min(spatial):
        raise UserError(f"occlusion window {w} and stride {s} must be >= 1 and fit {tuple(spatial)}")
    return (w,) * len(spatial), (s,) * len(spatial)


@_old_order("window", "stride", "baseline", "score", "temperature", "batch_size")
def occlusion_maps(
    encoder: nn.Module, target_layer: None, x: Tensor, centroids: Tensor, *,
    clusters: Tensor | int | None = None, window: int | None = None, stride: int | None = None,
    baseline: str | float = "auto", score: str = "log_probability",
    temperature: float | str = "auto", batch_size: int = 256,
) -> Tensor:
    """Occlusion (Zeiler & Fergus 2014): how much the cluster score drops where x is covered.

    A window (series) or patch (images) of all channels is replaced by ``baseline``; the
    drop of the cluster score (:func:`cluster_target`) is averaged per position over the
    windows that cover it (captum's ``Occlusion``).

    Args:
        encoder: maps x to embeddings N x m.
        target_layer: None (the maps are of the input).
        x: N x C x L (series) or N x C x H x W (images).
        centroids: K x m.
        clusters: the cluster each sample's map explains (N, or one int for all); None: every
            cluster.
        window: window length / patch side (None: :func:`occlusion_windows`).
        stride: step between windows (None: half the window).
        baseline: what an occluded window becomes (``auto``: zero for series, blur for images).
        score: the cluster score (:func:`cluster_target`).
        temperature: of the score's soft assignment (``auto``: the spread of x's embeddings).
        batch_size: samples per chunk.

    Returns:
        N x spatial maps in [0, 1] (N x K x spatial when ``clusters`` is None).

    Raises:
        UserError: a target layer, bad shapes, an unknown score, a window that does not fit.
        MissingDependencyError: captum is not installed.

    Example:
        >>> import torch
        >>> from clustercam.explain.attribution import occlusion_maps
        >>> enc = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
        >>> maps = occlusion_maps(enc, None, torch.randn(5, 1, 16), torch.randn(3, 4), clusters=0,
        ...                       window=4)
        >>> tuple(maps.shape)
        (5, 16)
    """
    _check(target_layer, x, centroids, score, batch_size)
    windows, strides = occlusion_windows(tuple(x.shape[2:]), window, stride)
    attr = require_captum()
    model = cluster_target(encoder, centroids, score=score, temperature=temperature, x=x)
    occ = attr.Occlusion(model)
    kind = ("zero" if x.dim() == 3 else "blur") if baseline == "auto" else baseline
    c = x.shape[1]
    return _per_cluster(model, x, clusters, batch_size, lambda xb, tb: occ.attribute(
        xb, sliding_window_shapes=(c, *windows), strides=(c, *strides),
        baselines=make_baseline(xb, kind), target=tb,
        perturbations_per_eval=max(1, batch_size // len(xb))))


@_old_order("n_samples", "n_baselines", "stdevs", "seed", "score", "temperature", "batch_size")
def gradient_shap_maps(
    encoder: nn.Module, target_layer: None, x: Tensor, centroids: Tensor, *,
    clusters: Tensor | int | None = None, n_samples: int = 16, n_baselines: int = 16,
    stdevs: float = 0.0, seed: int = 0, score: str = "log_probability",
    temperature: float | str = "auto", batch_size: int = 256,
) -> Tensor:
    """Gradient SHAP (Lundberg & Lee 2017; expected gradients) of the cluster score.

    Gradients of the cluster score (:func:`cluster_target`) at random points between each
    sample and reference samples drawn (seeded) from x itself.

    Args:
        encoder: maps x to embeddings N x m.
        target_layer: None (the maps are of the input).
        x: N x C x L (series) or N x C x H x W (images).
        centroids: K x m.
        clusters: the cluster each sample's map explains (N, or one int for all); None: every
            cluster.
        n_samples: random points per sample.
        n_baselines: reference samples drawn from x.
        stdevs: input noise.
        seed: the draws (the caller's random streams are restored after).
        score: the cluster score (:func:`cluster_target`).
        temperature: of the score's soft assignment (``auto``: the spread of x's embeddings).
        batch_size: points per chunk.

    Returns:
        N x spatial maps in [0, 1] (N x K x spatial when ``clusters`` is None).

    Raises:
        UserError: a target layer, bad shapes, an unknown score, ``n_samples`` or
            ``n_baselines`` < 1.
        MissingDependencyError: captum is not installed.

    Example:
        >>> import torch
        >>> from clustercam.explain.attribution import gradient_shap_maps
        >>> enc = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
        >>> x, mu = torch.randn(5, 1, 16), torch.randn(3, 4)
        >>> a = gradient_shap_maps(enc, None, x, mu, clusters=1, n_samples=4, n_baselines=3)
        >>> b = gradient_shap_maps(enc, None, x, mu, clusters=1, n_samples=4, n_baselines=3)
        >>> tuple(a.shape), torch.equal(a, b)  # seeded: the same maps twice
        ((5, 16), True)
    """
    _check(target_layer, x, centroids, score, batch_size)
    if n_samples < 1 or n_baselines < 1:
        raise UserError(f"n_samples and n_baselines must be >= 1, got {n_samples}, {n_baselines}")
    attr = require_captum()
    model = cluster_target(encoder, centroids, score=score, temperature=temperature, x=x)
    gen = torch.Generator().manual_seed(seed)
    refs = x[torch.randperm(len(x), generator=gen)[:n_baselines]]
    gs = attr.GradientShap(model)

    def run(xb: Tensor, tb: Tensor) -> Tensor:
        np.random.seed(seed)  # noqa: NPY002 - captum draws references and points from numpy's global RNG
        torch.manual_seed(seed)  # and the noise with torch's
        return gs.attribute(xb, baselines=refs.to(xb), n_samples=n_samples, stdevs=stdevs, target=tb)

    state, np_state = torch.random.get_rng_state(), np.random.get_state()  # noqa: NPY002
    try:
        # captum evaluates n_samples points per sample in one batch: chunks of batch_size points
        return _per_cluster(model, x, clusters, max(1, batch_size // n_samples), run)
    finally:  # the caller's random streams are left as they were
        torch.random.set_rng_state(state)
        np.random.set_state(np_state)  # noqa: NPY002
