"""The map methods the scores compare, by name: baselines, Grad-CeAM targets and the peers.

A map method takes a :class:`MapRequest` (encoder, target layer, inputs, centroids, the
cluster each map must explain) and returns one map per sample, N x spatial, in [0, 1].
Built in: ``random`` (seeded), ``random_smooth`` (seeded blobs: the control for
contiguity), ``activation`` (the channel mean of the target layer: where it responds at
all, with no cluster in it), ``gradceam_<target>`` for every Grad-CeAM target (and
``gradceam_student_t``: the Student-t assignment of DEC-family models, alpha 1), and the
peers ``neon`` (LRP of the neuralized k-means, zennit), ``clam`` (Score-CAM on the Student-t
assignment), ``integrated_gradients``, ``occlusion`` and ``gradient_shap`` (captum, on the
log soft-assignment). Built-in methods are :class:`ClusterMapMethod` values with settings
(``configure``); every method can also give the maps of all K clusters
(:func:`all_cluster_maps`), in one pass where the method allows it (Grad-CeAM, NEON, CLAM)
and cluster by cluster otherwise. :func:`register_method` adds
others, and a :class:`GradCeAMTarget` given directly becomes ``gradceam_<its name>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.attribution import (
    gradient_shap_maps,
    integrated_gradients_maps,
    occlusion_maps,
)
from clustercam.explain.clam import clam
from clustercam.explain.deprecation import renamed_parameters, reordered_parameters
from clustercam.explain.gradceam.gradceam import grad_ceam
from clustercam.explain.gradceam.targets import (
    GRADCEAM_TARGETS,
    GradCeAMTarget,
    resolve_target,
    student_t_target,
)
from clustercam.explain.neon import neon
from clustercam.explain.scores.control_maps import activation_maps, random_maps, smooth_random_maps
from clustercam.explain.scores.map_request import (
    ClusterMapMethod,
    MapMethod,
    MapRequest,
    all_cluster_maps,
)

__all__ = [  # the moved names stay importable from here
    "ClusterMapMethod", "MapMethod", "MapRequest", "activation_maps", "all_cluster_maps", "random_maps",
    "smooth_random_maps",
]


def gradceam_method(target: str | GradCeAMTarget) -> ClusterMapMethod:
    """The map method of one Grad-CeAM target (``gradceam_<name>``).

    The explained cluster's map (eq. 10), resized to the input and min-max normalised (as
    :func:`~clustercam.explain.grad_ceam` returns it); per chunk, so memory does not grow
    with K.

    Args:
        target: a :class:`~clustercam.explain.GradCeAMTarget` or its name (resolved with
            the request's temperature).

    Returns:
        A :class:`ClusterMapMethod` with a one-pass ``all_maps``.
    """

    def chunk_maps(req: MapRequest, start: int) -> Tensor:
        return grad_ceam(req.encoder, req.target_layer, req.x[start : start + req.batch_size],
                         req.centroids, target=resolve_target(target, req.temperature),
                         batch_size=None, smooth=req.smooth).heatmaps

    def every(req: MapRequest) -> Tensor:
        return torch.cat([chunk_maps(req, s) for s in range(0, req.x.shape[0], req.batch_size)])

    def maps(req: MapRequest) -> Tensor:
        parts = []
        for start in range(0, req.x.shape[0], req.batch_size):
            sel = req.clusters[start : start + req.batch_size]
            parts.append(chunk_maps(req, start)[torch.arange(len(sel)), sel])
        return torch.cat(parts)

    return ClusterMapMethod(maps, every)


def neon_maps(req: MapRequest, beta: float | str | None = "auto", evidence: str = "min",
              composite: str = "epsilon_plus_flat") -> Tensor:
    """NEON's map of each sample's cluster (:func:`clustercam.explain.neon.neon`).

    Args:
        req: the request.
        beta: the soft-min stiffness (``auto``, a number > 0 or None).
        evidence: ``min`` or ``soft_min``.
        composite: the zennit composite's name.

    Returns:
        N x spatial maps in [0, 1].
    """
    return neon(req.encoder, None, req.x, req.centroids, clusters=req.clusters, beta=beta,
                evidence=evidence, composite=composite, batch_size=req.batch_size,
                smooth=req.smooth).heatmaps[:, 0]


def neon_all_maps(req: MapRequest, beta: float | str | None = "auto", evidence: str = "min",
                  composite: str = "epsilon_plus_flat") -> Tensor:
    """NEON's maps of all K clusters: one forward pass, K modified backward passes per chunk.

    Args:
        req: the request (its ``clusters`` are ignored).
        beta: the soft-min stiffness (``auto``, a number > 0 or None).
        evidence: ``min`` or ``soft_min``.
        composite: the zennit composite's name.

    Returns:
        N x K x spatial maps in [0, 1].
    """
    return neon(req.encoder, None, req.x, req.centroids, beta=beta, evidence=evidence,
                composite=composite, batch_size=req.batch_size, smooth=req.smooth).heatmaps


def clam_maps(req: MapRequest, alpha: float = 1.0, batch_size: int = 128) -> Tensor:
    """CLAM's map of each sample's cluster (:func:`clustercam.explain.clam`).

    Args:
        req: the request.
        alpha: the Student-t kernel's degrees of freedom.
        batch_size: masked inputs per forward pass.

    Returns:
        N x spatial maps in [0, 1].
    """
    return clam(req.encoder, req.target_layer, req.x, req.centroids, clusters=req.clusters,
                alpha=alpha, batch_size=batch_size, smooth=req.smooth).heatmaps[:, 0]


def clam_all_maps(req: MapRequest, alpha: float = 1.0, batch_size: int = 128) -> Tensor:
    """CLAM's maps of all K clusters, from the same C masked forward passes per sample.

    Args:
        req: the request (its ``clusters`` are ignored).
        alpha: the Student-t kernel's degrees of freedom.
        batch_size: masked inputs per forward pass.

    Returns:
        N x K x spatial maps in [0, 1].
    """
    return clam(req.encoder, req.target_layer, req.x, req.centroids, alpha=alpha,
                batch_size=batch_size, smooth=req.smooth).heatmaps


def integrated_gradients(req: MapRequest, n_steps: int = 32, baseline: str | float = "auto",
                         score: str = "log_probability", temperature: float | str = "auto") -> Tensor:
    """Integrated gradients (captum) of the cluster score, for each sample's cluster.

    Args:
        req: the request.
        n_steps: steps of the path integral.
        baseline: where the path starts (``auto``: zero for series, blur for images).
        score: the cluster score (:func:`~clustercam.explain.attribution.cluster_target`).
        temperature: of the score's soft assignment (``auto``: the spread of x's embeddings).

    Returns:
        N x spatial maps in [0, 1]
        (:func:`~clustercam.explain.attribution.integrated_gradients_maps`).
    """
    return integrated_gradients_maps(
        req.encoder, None, req.x, req.centroids, clusters=req.clusters, n_steps=n_steps,
        baseline=baseline, score=score, temperature=temperature, batch_size=req.batch_size)


def occlusion(req: MapRequest, window: int | None = None, stride: int | None = None,
              baseline: str | float = "auto", score: str = "log_probability",
              temperature: float | str = "auto") -> Tensor:
    """Occlusion (captum) of the cluster score: 1-D windows (series), square patches (images).

    Args:
        req: the request.
        window: the window length / patch side (None: a tenth of the shortest side).
        stride: the step between windows (None: half the window).
        baseline: what an occluded window becomes (``auto``: zero for series, blur for images).
        score: the cluster score (:func:`~clustercam.explain.attribution.cluster_target`).
        temperature: of the score's soft assignment (``auto``: the spread of x's embeddings).

    Returns:
        N x spatial maps in [0, 1] (:func:`~clustercam.explain.attribution.occlusion_maps`).
    """
    return occlusion_maps(
        req.encoder, None, req.x, req.centroids, clusters=req.clusters, window=window,
        stride=stride, baseline=baseline, score=score, temperature=temperature,
        batch_size=req.batch_size)


def gradient_shap(req: MapRequest, n_samples: int = 16, n_baselines: int = 16, stdevs: float = 0.0,
                  score: str = "log_probability", temperature: float | str = "auto") -> Tensor:
    """Gradient SHAP (captum) of the cluster score, the references drawn from the samples.

    Args:
        req: the request (its seed draws the references and points).
        n_samples: random points per sample.
        n_baselines: reference samples drawn from x.
        stdevs: input noise.
        score: the cluster score (:func:`~clustercam.explain.attribution.cluster_target`).
        temperature: of the score's soft assignment (``auto``: the spread of x's embeddings).

    Returns:
        N x spatial maps in [0, 1]
        (:func:`~clustercam.explain.attribution.gradient_shap_maps`).
    """
    return gradient_shap_maps(
        req.encoder, None, req.x, req.centroids, clusters=req.clusters, n_samples=n_samples,
        n_baselines=n_baselines, stdevs=stdevs, seed=req.seed, score=score,
        temperature=temperature, batch_size=req.batch_size)


def _random(req: MapRequest) -> Tensor:
    return random_maps((req.x.shape[0], *req.x.shape[2:]), req.seed)


def _random_smooth(req: MapRequest) -> Tensor:
    return smooth_random_maps((req.x.shape[0], *req.x.shape[2:]), req.seed)


def _activation(req: MapRequest) -> Tensor:
    return activation_maps(req.encoder, req.target_layer, req.x, batch_size=req.batch_size)


def _same_for_all(maps: Callable[[MapRequest], Tensor]) -> Callable[[MapRequest], Tensor]:
    """A map that does not depend on the cluster, repeated for the K clusters."""
    return lambda req: maps(req)[:, None].repeat(1, req.centroids.shape[0], *[1] * (req.x.dim() - 2))


MAP_METHODS: dict[str, MapMethod] = {
    "random": ClusterMapMethod(_random, _same_for_all(_random)),
    "random_smooth": ClusterMapMethod(_random_smooth, _same_for_all(_random_smooth)),
    "activation": ClusterMapMethod(_activation, _same_for_all(_activation)),
    **{f"gradceam_{name}": gradceam_method(name) for name in GRADCEAM_TARGETS},
    "gradceam_student_t": gradceam_method(student_t_target()),
    "neon": ClusterMapMethod(neon_maps, neon_all_maps),
    "clam": ClusterMapMethod(clam_maps, clam_all_maps),
    "integrated_gradients": ClusterMapMethod(integrated_gradients),
    "occlusion": ClusterMapMethod(occlusion),
    "gradient_shap": ClusterMapMethod(gradient_shap),
}
"""The map methods by name: what :func:`resolve_methods` looks names up in."""
PEERS: tuple[str, ...] = ("neon", "clam", "integrated_gradients", "occlusion", "gradient_shap")
# the methods the scores compare unless told otherwise
DEFAULT_MAP_METHODS: tuple[str, ...] = ("random", "random_smooth", "activation", "gradceam_paper",
                            "gradceam_reference", "gradceam_assignment")
"""What the scores compare unless told otherwise: the baselines and the Grad-CeAM targets."""


def register_method(name: str, method: MapMethod) -> None:
    """Make ``method`` available to :func:`explanation_maps` (and the scores) as ``name``.

    Args:
        name: the method's name (an existing name is replaced).
        method: ``method(req: MapRequest) -> N x spatial`` maps in [0, 1].

    Raises:
        UserError: a method that is not callable.

    Example:
        >>> import torch
        >>> from clustercam.explain.scores import MAP_METHODS, register_method
        >>> register_method("centre", lambda req: torch.ones(req.x.shape[0], *req.x.shape[2:]))
        >>> "centre" in MAP_METHODS
        True
        >>> del MAP_METHODS["centre"]
    """
    if not callable(method):
        raise UserError(f"method {name!r} must be callable (MapRequest) -> N x spatial maps")
    MAP_METHODS[str(name)] = method


MethodSpec = str | GradCeAMTarget | tuple[str, MapMethod]


def resolve_methods(
    methods: Sequence[MethodSpec] | Mapping[str, MapMethod],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, MapMethod]:
    """The map methods to compare, by name.

    Args:
        methods: registered names, :class:`~clustercam.explain.GradCeAMTarget` values (named
            ``gradceam_<name>``), ``(name, callable)`` pairs, or a mapping of names to methods.
        options: settings per method name, e.g. ``{"integrated_gradients": {"n_steps": 16}}``
            (checked against what the method takes).

    Returns:
        Method name -> map method, in the order given.

    Raises:
        UserError: an unknown name, no method at all, settings for a method not listed or
            for a plain callable, a setting the method does not take.

    Example:
        >>> from clustercam.explain import PAPER
        >>> from clustercam.explain.scores import resolve_methods
        >>> list(resolve_methods(["random", PAPER], {"random": {}}))
        ['random', 'gradceam_paper']
    """
    items = list(methods.items()) if isinstance(methods, Mapping) else list(methods)
    out: dict[str, MapMethod] = {}
    unknown = []
    for m in items:
        if isinstance(m, GradCeAMTarget):
            out[f"gradceam_{m.name}"] = gradceam_method(m)
        elif isinstance(m, tuple) and len(m) == 2 and callable(m[1]):
            out[str(m[0])] = m[1]
        elif isinstance(m, str) and m in MAP_METHODS:
            out[m] = MAP_METHODS[m]
        else:
            unknown.append(m)
    if unknown:
        raise UserError(f"unknown methods {unknown}; choose from {sorted(MAP_METHODS)} "
                         "(or give a GradCeAMTarget, or a (name, callable) pair)")
    if not out:
        raise UserError("methods is empty: name at least one map method")
    for name, opts in dict(options or {}).items():
        if name not in out:
            raise UserError(f"method_options names {name!r}, which is not among the methods {list(out)}")
        if not isinstance(out[name], ClusterMapMethod):
            raise UserError(f"method {name!r} takes no settings (it is a plain callable)")
        out[name] = out[name].configure(**dict(opts or {}))
    return out


@reordered_parameters("encoder", "target_layer", "x", "centroids", "clusters", "methods", "seed",
                      "gradceam_temperature", "smooth", "batch_size", "all_clusters", "method_options",
                      when=lambda args, kwargs: len(args) > 4)
@renamed_parameters(options="method_options", temperature="gradceam_temperature")
def explanation_maps(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    *,
    clusters: Tensor | None = None,
    methods: Sequence[MethodSpec] | Mapping[str, MapMethod] = DEFAULT_MAP_METHODS,
    seed: int = 0,
    gradceam_temperature: float = 1.0,
    smooth: bool = False,
    batch_size: int = 256,
    all_clusters: bool = False,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Tensor]:
    """Each method's map of every sample, by method name.

    The maps :func:`~clustercam.explain.score_explanations` scores, without the scores.

    Args:
        encoder: maps x to embeddings N x m.
        target_layer: the module (or its dotted name) the layer methods explain (Grad-CeAM,
            activation); the input methods ignore it.
        x: N x C x L (series) or N x C x H x W (images).
        centroids: K x m.
        clusters: the cluster each sample's map explains (N); None: every cluster.
        methods: names, :class:`GradCeAMTarget` values or ``(name, callable)`` pairs
            (:func:`resolve_methods`).
        seed: of the random baselines and gradient SHAP's draws.
        gradceam_temperature: of the ``gradceam_assignment`` maps.
        smooth: moving average of series maps.
        batch_size: samples per chunk.
        all_clusters: every cluster's maps even when ``clusters`` is given.
        method_options: settings per method name.

    Returns:
        Method name -> N x spatial maps in [0, 1] of sample i for cluster ``clusters[i]``;
        N x K x spatial with ``all_clusters`` or ``clusters=None``.

    Raises:
        UserError: an unknown method or setting, clusters that are not N ids.

    Example:
        >>> import torch
        >>> from clustercam.explain.scores import explanation_maps
        >>> enc = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
        >>> maps = explanation_maps(enc, "1", torch.randn(5, 1, 16), torch.randn(3, 4),
        ...                         methods=["random", "activation", "gradceam_assignment"])
        >>> {name: tuple(m.shape) for name, m in maps.items()}
        {'random': (5, 3, 16), 'activation': (5, 3, 16), 'gradceam_assignment': (5, 3, 16)}
    """
    n = x.shape[0]
    if clusters is None:
        all_clusters, clusters = True, torch.zeros(n, dtype=torch.long)  # every cluster's maps
    clusters = torch.as_tensor(clusters, dtype=torch.long).flatten()
    if clusters.shape[0] != n:
        raise UserError(f"clusters must have N = {n} entries, got {clusters.shape[0]}")
    req = MapRequest(encoder, target_layer, x, centroids, clusters, seed, gradceam_temperature, smooth,
                     batch_size)
    resolved = resolve_methods(methods, method_options)
    if all_clusters:
        return {name: all_cluster_maps(fn, req) for name, fn in resolved.items()}
    return {name: fn(req) for name, fn in resolved.items()}
