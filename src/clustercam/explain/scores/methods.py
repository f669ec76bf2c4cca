"""The map methods the scores compare, by name: baselines and Grad-CeAM targets.

A map method takes a :class:`MapRequest` (encoder, target layer, inputs, centroids, the
cluster each map must explain) and returns one map per sample, N x spatial, in [0, 1].
Built in: ``random`` (seeded), ``random_smooth`` (seeded blobs: the control for
contiguity), ``activation`` (the channel mean of the target layer: where it responds at
all, with no cluster in it) and ``gradceam_<target>`` for every Grad-CeAM target;
:func:`register_method` adds others (the peers), and a :class:`GradCeAMTarget` given
directly becomes ``gradceam_<its name>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from clustercam.explain.gradceam.gradceam import grad_ceam
from clustercam.explain.gradceam.targets import TARGETS, GradCeAMTarget, resolve_target
from clustercam.explain.hooks import (
    eval_mode,
    forward_with_layer,
    module_device,
    module_dtype,
    resolve_layer,
)
from clustercam.explain.maps import input_maps, minmax_normalise
from clustercam.explain.scores.baselines import gaussian_blur


@dataclass
class MapRequest:
    """What a map method is given: explain sample i of ``x`` for cluster ``clusters[i]``."""

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
    """A seeded uniform random map per sample (N x spatial): the chance baseline."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(tuple(shape), generator=gen)


def smooth_random_maps(shape: Sequence[int], seed: int = 0, sigma: float | None = None) -> Tensor:
    """Seeded random maps blurred into blobs (sigma: a twentieth of the shortest side, >= 1).

    The control for contiguity: deleting a contiguous chunk of a series or image can move
    an embedding more than deleting scattered positions, whatever the chunk holds, so a
    structured map should beat this one, not only the scattered ``random`` map.
    """
    shape = tuple(shape)
    noise = random_maps(shape, seed)[:, None]
    sigma = sigma if sigma is not None else max(1.0, min(shape[1:]) / 20)
    return minmax_normalise(gaussian_blur(noise, sigma), len(shape) - 1)[:, 0]


def activation_maps(
    encoder: nn.Module, target_layer: nn.Module | str, x: Tensor, batch_size: int = 512
) -> Tensor:
    """Mean of the target layer's activations over channels, resized to the input, min-max
    normalised per sample: where the layer responds at all, with no cluster in it."""
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


def gradceam_method(target: str | GradCeAMTarget) -> MapMethod:
    """The map method of one Grad-CeAM target: the explained cluster's map, resized to the
    input and min-max normalised (as ``grad_ceam`` returns it); per chunk, so memory does
    not grow with K. A target name resolves with the request's temperature."""

    def maps(req: MapRequest) -> Tensor:
        tgt = resolve_target(target, req.temperature)
        parts = []
        for start in range(0, req.x.shape[0], req.batch_size):
            res = grad_ceam(req.encoder, req.target_layer, req.x[start : start + req.batch_size],
                            req.centroids, mode=tgt, batch_size=None, smooth=req.smooth)
            sel = req.clusters[start : start + req.batch_size]
            parts.append(res.heatmaps[torch.arange(len(sel)), sel])
        return torch.cat(parts)

    return maps


MAP_METHODS: dict[str, MapMethod] = {
    "random": lambda req: random_maps((req.x.shape[0], *req.x.shape[2:]), req.seed),
    "random_smooth": lambda req: smooth_random_maps((req.x.shape[0], *req.x.shape[2:]), req.seed),
    "activation": lambda req: activation_maps(req.encoder, req.target_layer, req.x, req.batch_size),
    **{f"gradceam_{name}": gradceam_method(name) for name in TARGETS},
}
# the methods the scores compare unless told otherwise
METHODS: tuple[str, ...] = ("random", "random_smooth", "activation", "gradceam_paper",
                            "gradceam_reference", "gradceam_assignment")


def register_method(name: str, method: MapMethod) -> None:
    """Make ``method`` available to :func:`explanation_maps` (and the scores) as ``name``."""
    if not callable(method):
        raise TypeError(f"method {name!r} must be callable (MapRequest) -> N x spatial maps")
    MAP_METHODS[str(name)] = method


MethodSpec = str | GradCeAMTarget | tuple[str, MapMethod]


def resolve_methods(methods: Sequence[MethodSpec] | Mapping[str, MapMethod]) -> dict[str, MapMethod]:
    """Names -> map methods: registered names, ``GradCeAMTarget`` values (``gradceam_<name>``),
    ``(name, callable)`` pairs or a mapping of them; an unknown name is a clear error."""
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
        raise ValueError(f"unknown methods {unknown}; choose from {sorted(MAP_METHODS)} "
                         "(or give a GradCeAMTarget, or a (name, callable) pair)")
    if not out:
        raise ValueError("methods is empty: name at least one map method")
    return out


def explanation_maps(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    clusters: Tensor,
    methods: Sequence[MethodSpec] | Mapping[str, MapMethod] = METHODS,
    seed: int = 0,
    temperature: float = 1.0,
    smooth: bool = False,
    batch_size: int = 256,
) -> dict[str, Tensor]:
    """Each method's map (N x spatial, in [0, 1]) of sample i for cluster ``clusters[i]``."""
    n = x.shape[0]
    clusters = torch.as_tensor(clusters, dtype=torch.long).flatten()
    if clusters.shape[0] != n:
        raise ValueError(f"clusters must have N = {n} entries, got {clusters.shape[0]}")
    req = MapRequest(encoder, target_layer, x, centroids, clusters, seed, temperature, smooth,
                     batch_size)
    return {name: fn(req) for name, fn in resolve_methods(methods).items()}
