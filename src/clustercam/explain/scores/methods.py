"""The map methods the scores compare, by name: baselines, Grad-CeAM targets and the peers.

A map method takes a :class:`MapRequest` (encoder, target layer, inputs, centroids, the
cluster each map must explain) and returns one map per sample, N x spatial, in [0, 1].
Built in: ``random`` (seeded), ``random_smooth`` (seeded blobs: the control for
contiguity), ``activation`` (the channel mean of the target layer: where it responds at
all, with no cluster in it), ``gradceam_<target>`` for every Grad-CeAM target, and the
peers ``neon`` (LRP of the neuralized k-means, zennit), ``integrated_gradients``,
``occlusion`` and ``gradient_shap`` (captum, on the log soft-assignment). Built-in methods
are :class:`ClusterMapMethod` values with settings (``configure``); every method can also
give the maps of all K clusters (:func:`all_cluster_maps`), in one pass where the method
allows it (Grad-CeAM, NEON) and cluster by cluster otherwise. :func:`register_method` adds
others, and a :class:`GradCeAMTarget` given directly becomes ``gradceam_<its name>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.attribution import (
    gradient_shap_maps,
    integrated_gradients_maps,
    occlusion_maps,
)
from clustercam.explain.baselines import gaussian_blur
from clustercam.explain.deprecation import renamed_parameters, reordered_parameters
from clustercam.explain.gradceam.gradceam import grad_ceam
from clustercam.explain.gradceam.targets import GRADCEAM_TARGETS, GradCeAMTarget, resolve_target
from clustercam.explain.hooks import (
    eval_mode,
    forward_with_layer,
    module_device,
    module_dtype,
    resolve_layer,
)
from clustercam.explain.maps import input_maps, minmax_normalise
from clustercam.explain.neon import neon


@dataclass
class MapRequest:
    """What a map method is given: explain sample i of ``x`` for cluster ``clusters[i]``.

    :func:`all_cluster_maps` asks for every cluster instead.

    Attributes:
        encoder: maps x to embeddings N x m.
        target_layer: the module (or its dotted name) the layer methods explain.
        x: N x C x L or N x C x H x W.
        centroids: K x m.
        clusters: N cluster ids.
        seed: of the random methods.
        temperature: of the Grad-CeAM ``assignment`` target.
        smooth: moving average of series maps.
        batch_size: samples per chunk.

    Example:
        >>> import torch
        >>> from clustercam.explain.scores import MAP_METHODS, MapRequest
        >>> enc = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
        >>> req = MapRequest(enc, "1", torch.randn(5, 1, 16), torch.randn(3, 4),
        ...                  clusters=torch.tensor([0, 1, 2, 0, 1]))
        >>> tuple(MAP_METHODS["gradceam_paper"](req).shape)
        (5, 16)
    """

    encoder: nn.Module
    target_layer: nn.Module | str
    x: Tensor
    centroids: Tensor
    clusters: Tensor
    seed: int = 0
    temperature: float = 1.0
    smooth: bool = False
    batch_size: int = 256


MapMethod = Callable[[MapRequest], Tensor]


def random_maps(shape: Sequence[int], seed: int = 0) -> Tensor:
    """A seeded uniform random map per sample: the chance baseline.

    Args:
        shape: N x spatial.
        seed: of the draw.

    Returns:
        Maps of ``shape`` in [0, 1).
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(tuple(shape), generator=gen)


def smooth_random_maps(shape: Sequence[int], seed: int = 0, sigma: float | None = None) -> Tensor:
    """Seeded random maps blurred into blobs: the control for contiguity.

    Deleting a contiguous chunk of a series or image can move an embedding more than
    deleting scattered positions, whatever the chunk holds, so a structured map should beat
    this one, not only the scattered ``random`` map.

    Args:
        shape: N x spatial.
        seed: of the draw.
        sigma: of the blur (None: a twentieth of the shortest side, >= 1).

    Returns:
        Maps of ``shape``, min-max normalised to [0, 1] per sample.
    """
    shape = tuple(shape)
    noise = random_maps(shape, seed)[:, None]
    sigma = sigma if sigma is not None else max(1.0, min(shape[1:]) / 20)
    return minmax_normalise(gaussian_blur(noise, sigma), len(shape) - 1)[:, 0]


@reordered_parameters("encoder", "target_layer", "x", "batch_size", when=lambda args, kwargs: len(args) > 3)
def activation_maps(
    encoder: nn.Module, target_layer: nn.Module | str, x: Tensor, *, batch_size: int = 512
) -> Tensor:
    """Where the target layer responds at all, with no cluster in it: the ``activation`` method.

    The mean of the target layer's activations over its channels, resized to the input and
    min-max normalised per sample.

    Args:
        encoder: the network holding the target layer.
        target_layer: the module (or its dotted name) whose output is averaged.
        x: N x C x L or N x C x H x W.
        batch_size: samples per chunk.

    Returns:
        N x spatial maps in [0, 1].

    Raises:
        UserError: a layer not in the encoder.
    """
    layer = resolve_layer(encoder, target_layer)
    device = module_device(encoder, x.device)
    dtype = module_dtype(encoder)
    size = tuple(x.shape[2:])
    parts = []
    with eval_mode(encoder):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device=device, dtype=dtype)
            _, a = forward_with_layer(encoder, layer, xb)
            parts.append(input_maps(a.mean(1, keepdim=True), size)[:, 0].cpu())  # b x spatial
    return torch.cat(parts)


@dataclass(frozen=True)
class ClusterMapMethod:
    """A map method with settings, as the registry holds the built-in ones.

    Calling it with a :class:`MapRequest` gives ``maps(req, **options)``.

    Args:
        maps: ``maps(req, **options)`` -> N x spatial, the map of each sample's cluster.
        all_maps: ``all_maps(req, **options)`` -> N x K x spatial, every cluster's maps in
            one pass (None: :func:`all_cluster_maps` asks cluster by cluster).
        options: the method's settings.

    Example:
        >>> from clustercam.explain.scores import MAP_METHODS
        >>> MAP_METHODS["occlusion"].configure(window=8).options
        {'window': 8}
    """

    maps: Callable[..., Tensor]
    all_maps: Callable[..., Tensor] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, req: MapRequest) -> Tensor:
        """N x spatial maps of each sample's cluster for ``req``."""
        return self.maps(req, **self.options)

    def configure(self, **options: Any) -> ClusterMapMethod:
        """The same method with other settings.

        Args:
            **options: settings that ``maps`` takes after the request, on top of the current.

        Returns:
            A new :class:`ClusterMapMethod`.

        Raises:
            UserError: a setting ``maps`` does not take.
        """
        params = list(inspect.signature(self.maps).parameters)[1:]
        bad = sorted(set(options) - set(params))
        if bad:
            raise UserError(f"unknown settings {bad} for map method {self.maps.__name__}; it takes {params}")
        return replace(self, options={**self.options, **options})


def all_cluster_maps(method: MapMethod, req: MapRequest) -> Tensor:
    """Every sample's map for every cluster.

    The method's one-pass form where it has one, else one call per cluster (what an
    attribution library does for K targets).

    Args:
        method: a map method.
        req: the request (its ``clusters`` are ignored).

    Returns:
        N x K x spatial maps.
    """
    if isinstance(method, ClusterMapMethod) and method.all_maps is not None:
        return method.all_maps(req, **method.options)
    k = req.centroids.shape[0]
    return torch.stack([method(replace(req, clusters=torch.full_like(req.clusters, c)))
                        for c in range(k)], 1)


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
    "neon": ClusterMapMethod(neon_maps, neon_all_maps),
    "integrated_gradients": ClusterMapMethod(integrated_gradients),
    "occlusion": ClusterMapMethod(occlusion),
    "gradient_shap": ClusterMapMethod(gradient_shap),
}
"""The map methods by name: what :func:`resolve_methods` looks names up in."""
PEERS: tuple[str, ...] = ("neon", "integrated_gradients", "occlusion", "gradient_shap")
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
