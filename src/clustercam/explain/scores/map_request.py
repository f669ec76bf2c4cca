"""What a map method is given and how it is called: :class:`MapRequest`, :class:`ClusterMapMethod`.

A map method takes a :class:`MapRequest` (encoder, target layer, inputs, centroids, the
cluster each map must explain) and returns one map per sample, N x spatial, in [0, 1];
:func:`all_cluster_maps` asks it for every cluster. The methods themselves are in
:mod:`.control_maps` (the controls) and :mod:`.methods` (Grad-CeAM, the peers, the registry).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError


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
