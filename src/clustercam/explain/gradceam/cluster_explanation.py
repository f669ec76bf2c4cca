"""The Grad-CeAM pipeline of one evaluated split, as a plain function a notebook can call.

Given an encoder, its target layer, the inputs and the k-means of their embeddings:
channel weights for every sample and cluster, the cardinality table (for the chosen
target and, optionally, for others on the same model and centroids), and the members of
each cluster nearest its centroid with their maps, for figures (paper Fig. 7-9, 11).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from clustercam.explain.assignments import squared_distances
from clustercam.explain.gradceam.cardinality import CardinalityResult, Normalise, cardinality
from clustercam.explain.gradceam.gradceam import GradCeAMResult, grad_ceam
from clustercam.explain.gradceam.targets import GradCeAMTarget, resolve_target

SUMMARY_KEYS = ("median", "mean", "min", "max", "empty_clusters")


@dataclass
class ClusterExplanation:
    """What :func:`explain_clusters` found.

    ``weights``: grad_ceam of every sample (channel weights and embeddings, no maps).
    ``table``: the cardinality table of ``mode``; ``summary``: its median / mean / min / max
    with the mode and normalisation. ``by_mode``: one summary row per compared target.
    ``members``: per cluster, sample positions nearest the centroid first (at most
    ``n_examples``); ``member_maps``: grad_ceam with maps of ``torch.cat(members)``, in that
    order (None when no maps were asked for).
    """

    mode: str
    weights: GradCeAMResult
    table: CardinalityResult
    summary: dict[str, Any]
    by_mode: list[dict[str, Any]] = field(default_factory=list)
    members: list[Tensor] = field(default_factory=list)
    member_maps: GradCeAMResult | None = None

    @property
    def member_index(self) -> Tensor:
        """Positions (in x) of every member, cluster by cluster: rows of ``member_maps``."""
        return torch.cat(self.members) if self.members else torch.zeros(0, dtype=torch.long)


def select_members(z: Tensor, centroids: Tensor, labels: Tensor, n: int) -> list[Tensor]:
    """Per cluster, up to ``n`` member positions, nearest the centroid first (ties: lower position)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    dist = squared_distances(z.double(), centroids.double())
    labels = torch.as_tensor(labels).long()
    out = []
    for c in range(centroids.shape[0]):
        members = (labels == c).nonzero().flatten()
        order = members[torch.argsort(dist[members, c], stable=True)]
        out.append(order[:n])
    return out


def cardinality_summary(
    encoder: nn.Module, target_layer: nn.Module | str, x: Tensor, centroids: Tensor,
    mode: str | GradCeAMTarget, temperature: float = 1.0, normalise: Normalise = "minmax",
    batch_size: int | None = 512,
) -> tuple[GradCeAMResult, CardinalityResult]:
    """grad_ceam's channel weights for all of x (no maps), then the cardinality table."""
    res = grad_ceam(encoder, target_layer, x, centroids, mode=mode, temperature=temperature,
                    batch_size=batch_size, return_maps=False)
    table = cardinality(encoder, target_layer, x, centroids, res.channel_weights,
                        normalise=normalise, batch_size=batch_size)
    return res, table


def explain_clusters(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    labels: Tensor,
    mode: str | GradCeAMTarget = "reference",
    temperature: float = 1.0,
    normalise: Normalise = "minmax",
    compare_modes: Sequence[str | GradCeAMTarget] = (),
    n_examples: int | None = 5,
    smooth: bool = False,
    batch_size: int | None = 512,
) -> ClusterExplanation:
    """Grad-CeAM + the cardinality table (eq. 12) for a clustered split, and the figure members.

    ``labels`` (N): each sample's cluster. ``compare_modes``: more targets whose cardinality
    summary goes in ``by_mode`` (computed on the same encoder and centroids).
    ``n_examples``: members per cluster with maps (None: no maps).

    Example:
        >>> import torch
        >>> from clustercam.explain import explain_clusters, fit_kmeans
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> enc = ResNetCAE((1, 32), filters=(4, 4), embedding_dim=3).encoder.eval()
        >>> x = torch.randn(30, 1, 32)
        >>> km = fit_kmeans(enc(x).detach().numpy(), 3, n_init=2)
        >>> ex = explain_clusters(enc, "features", x, torch.tensor(km.centroids).float(),
        ...                       torch.tensor(km.labels), compare_modes=["paper"], n_examples=2)
        >>> [row["mode"] for row in ex.by_mode], tuple(ex.member_maps.heatmaps.shape[1:])
        (['reference', 'paper'], (3, 32))
    """
    target = resolve_target(mode, temperature)
    res, table = cardinality_summary(encoder, target_layer, x, centroids, target,
                                     normalise=normalise, batch_size=batch_size)
    summary = {**table.summary(), "mode": target.name, "normalise": normalise}
    out = ClusterExplanation(mode=target.name, weights=res, table=table, summary=summary)
    if compare_modes:
        done = {target.name: summary}
        for other in [target, *(resolve_target(m, temperature) for m in compare_modes)]:
            if other.name not in done:
                _, t = cardinality_summary(encoder, target_layer, x, centroids, other,
                                           normalise=normalise, batch_size=batch_size)
                done[other.name] = t.summary()
            row = {"mode": other.name, **{k: done[other.name][k] for k in SUMMARY_KEYS}}
            if row not in out.by_mode:
                out.by_mode.append(row)
    if n_examples:
        out.members = select_members(res.embeddings, centroids, labels, n_examples)
        sel = out.member_index
        if len(sel):
            out.member_maps = grad_ceam(encoder, target_layer, x[sel], centroids, mode=target,
                                        batch_size=batch_size, smooth=smooth)
    return out
