"""The Grad-CeAM pipeline of one evaluated split, as a plain function a notebook can call.

Given an encoder, its target layer, the inputs and the k-means of their embeddings:
channel weights for every sample and cluster, the cardinality table (for the chosen
target and, optionally, for others on the same model and centroids), and the members of
each cluster nearest its centroid with their maps, for figures (paper Fig. 7-9, 11).
:class:`ClusterExplainSettings` holds the pipeline's options, defaults and checks; the
cluster-explain callback takes the same object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.assignments import nearest, squared_distances
from clustercam.explain.checks import check_clusters
from clustercam.explain.deprecation import renamed_parameters, reordered_parameters
from clustercam.explain.gradceam.cardinality import CardinalityResult, Normalise, cardinality
from clustercam.explain.gradceam.gradceam import GradCeAMResult, grad_ceam
from clustercam.explain.gradceam.targets import (
    GRADCEAM_TARGET_NAMES,
    GradCeAMTarget,
    resolve_target,
)
from clustercam.explain.settings import with_options

SUMMARY_KEYS = ("median", "mean", "min", "max", "empty_clusters")
NORMALISE = ("minmax", "raw")


@dataclass(frozen=True, kw_only=True)
class ClusterExplainSettings:
    """The options of :func:`explain_clusters` (and of the cluster-explain callback).

    Args:
        target: the Grad-CeAM target, a :class:`GradCeAMTarget` or its name (``reference``,
            ``paper``, ``assignment``).
        temperature: of the ``assignment`` target (> 0).
        normalise: the cardinality weights, ``minmax`` (eq. 12) or ``raw``.
        compare_targets: more targets whose cardinality summary goes in ``by_mode``.
        n_examples: members per cluster with maps (>= 1; None: no maps).
        smooth: moving average of series maps.
        batch_size: samples per Grad-CeAM chunk (>= 1; None: one chunk).

    Raises:
        UserError: an unknown target or normalisation, a value out of range.

    Example:
        >>> ClusterExplainSettings(target="paper", compare_targets=["assignment"]).resolved_target.name
        'paper'
    """

    target: str | GradCeAMTarget = "reference"
    temperature: float = 1.0
    normalise: Normalise = "minmax"
    compare_targets: Sequence[str | GradCeAMTarget] = ()
    n_examples: int | None = 5
    smooth: bool = False
    batch_size: int | None = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "compare_targets", tuple(self.compare_targets or ()))
        resolve_target(self.target, self.temperature)  # an unknown name or temperature fails here
        bad = [t for t in self.compare_targets if not isinstance(t, GradCeAMTarget | str)]
        bad += [t for t in self.compare_targets if isinstance(t, str) and t not in GRADCEAM_TARGET_NAMES]
        if bad:
            raise UserError(f"unknown Grad-CeAM targets {bad} in compare_targets; choose from "
                            f"{GRADCEAM_TARGET_NAMES} or pass GradCeAMTargets")
        if self.normalise not in NORMALISE:
            raise UserError(f"normalise must be 'minmax' or 'raw', got {self.normalise!r}")
        if self.n_examples is not None and self.n_examples < 1:
            raise UserError(f"n_examples must be >= 1 or None, got {self.n_examples}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1 or None, got {self.batch_size}")

    @property
    def resolved_target(self) -> GradCeAMTarget:
        """The target as a :class:`GradCeAMTarget` (a name resolved at ``temperature``)."""
        return resolve_target(self.target, self.temperature)

    @property
    def resolved_compare_targets(self) -> list[GradCeAMTarget]:
        """The compared targets as :class:`GradCeAMTarget` values (names at ``temperature``)."""
        return [resolve_target(t, self.temperature) for t in self.compare_targets]


@dataclass
class ClusterExplanation:
    """What :func:`explain_clusters` found.

    Attributes:
        mode: the Grad-CeAM target's name.
        weights: :func:`grad_ceam` of every sample: channel weights N x K x C (eq. 9) and
            embeddings N x m, no maps.
        table: the cardinality table of the target (eq. 12, paper Table I).
        summary: the table's median / mean / min / max / empty_clusters, with ``mode`` and
            ``normalise``.
        by_mode: one summary row per compared target (``mode`` first), empty without
            ``compare_targets``.
        members: per cluster, at most ``n_examples`` sample positions in x, nearest the
            centroid first.
        member_maps: :func:`grad_ceam` with maps of ``x[member_index]``, rows in that order
            (heatmaps n x K x input spatial size); None when no maps were asked for.

    Example:
        >>> import torch
        >>> from clustercam.explain import explain_clusters
        >>> enc = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
        >>> x = torch.randn(12, 1, 16)
        >>> mu = enc(x[:3]).detach()  # three samples as centroids
        >>> ex = explain_clusters(enc, "1", x, mu, clusters=torch.arange(12) % 3, n_examples=2)
        >>> ex.mode, int(ex.table.before.sum()), [len(m) for m in ex.members]
        ('reference', 12, [2, 2, 2])
        >>> tuple(ex.member_maps.heatmaps.shape), len(ex.member_index)
        ((6, 3, 16), 6)
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
        """Positions in x of every member, cluster by cluster: the rows of ``member_maps``."""
        return torch.cat(self.members) if self.members else torch.zeros(0, dtype=torch.long)


@renamed_parameters(labels="clusters")
def select_members(z: Tensor, centroids: Tensor, clusters: Tensor, n: int) -> list[Tensor]:
    """Per cluster, up to ``n`` member positions, nearest the centroid first.

    Args:
        z: embeddings N x m.
        centroids: K x m.
        clusters: each sample's cluster (N). ``labels=`` is the old name.
        n: members per cluster (>= 1).

    Returns:
        K long tensors of positions in z (ties: the lower position first; an empty cluster
        gives an empty tensor).

    Raises:
        UserError: ``n`` < 1.

    Example:
        >>> import torch
        >>> from clustercam.explain.gradceam import select_members
        >>> z = torch.tensor([[0.0], [3.0], [1.0], [10.0]])
        >>> select_members(z, torch.tensor([[0.0], [10.0]]), torch.tensor([0, 0, 0, 1]), 2)
        [tensor([0, 2]), tensor([3])]
    """
    if n < 1:
        raise UserError(f"n must be >= 1, got {n}")
    dist = squared_distances(z.double(), centroids.double())
    clusters = torch.as_tensor(clusters).long()
    out = []
    for c in range(centroids.shape[0]):
        members = (clusters == c).nonzero().flatten()
        order = members[torch.argsort(dist[members, c], stable=True)]
        out.append(order[:n])
    return out


@reordered_parameters("encoder", "target_layer", "x", "centroids", "target", "temperature",
                      "normalise", "batch_size", when=lambda args, kwargs: len(args) > 4)
@renamed_parameters(mode="target")
def cardinality_summary(
    encoder: nn.Module, target_layer: nn.Module | str, x: Tensor, centroids: Tensor, *,
    target: str | GradCeAMTarget = "reference", temperature: float = 1.0,
    normalise: Normalise = "minmax", batch_size: int | None = 512,
) -> tuple[GradCeAMResult, CardinalityResult]:
    """Grad-CeAM's channel weights for all of x (no maps), then the cardinality table (eq. 12).

    Args:
        encoder: maps x to embeddings N x m.
        target_layer: the module of ``encoder`` (or its dotted name) that is explained.
        x: N x C x L (series) or N x C x H x W (images).
        centroids: K x m.
        target: a :class:`GradCeAMTarget` or its name. ``mode=`` is the old name.
        temperature: of the ``assignment`` target (> 0).
        normalise: the amplification weights, ``minmax`` (eq. 12) or ``raw``.
        batch_size: samples per chunk (None: one chunk).

    Returns:
        The :class:`GradCeAMResult` (channel weights N x K x C, embeddings N x m, no maps)
        and the :class:`CardinalityResult`.

    Raises:
        UserError: see :func:`grad_ceam` and :func:`cardinality`.
    """
    res = grad_ceam(encoder, target_layer, x, centroids, target=target, temperature=temperature,
                    batch_size=batch_size, return_maps=False)
    table = cardinality(encoder, target_layer, x, centroids, res.channel_weights,
                        normalise=normalise, batch_size=batch_size)
    return res, table


@reordered_parameters("encoder", "target_layer", "x", "centroids", "clusters", "target", "temperature",
                      "normalise", "compare_targets", "n_examples", "smooth", "batch_size",
                      when=lambda args, kwargs: len(args) > 4)
@renamed_parameters(labels="clusters", mode="target", compare_modes="compare_targets")
def explain_clusters(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    *,
    clusters: Tensor | None = None,
    settings: ClusterExplainSettings | Mapping[str, Any] | None = None,
    **options: Any,
) -> ClusterExplanation:
    """Grad-CeAM and the cardinality table (eq. 12) of a clustered split, and figure members.

    Channel weights (eq. 9) for every sample and cluster, the cardinality table of the
    target (and a summary for each compared target), and the members of each cluster
    nearest its centroid with their maps (paper Fig. 7-9, 11).

    Args:
        encoder: maps x to embeddings N x m.
        target_layer: the module of ``encoder`` (or its dotted name) that is explained.
        x: N x C x L (series) or N x C x H x W (images).
        centroids: K x m.
        clusters: each sample's cluster (N; None: its nearest centroid), for the members.
        settings: a :class:`ClusterExplainSettings` (default: its defaults).
        **options: fields of :class:`ClusterExplainSettings` (``target``, ``temperature``,
            ``normalise``, ``compare_targets``, ``n_examples``, ``smooth``, ``batch_size``),
            on top of ``settings``.

    Returns:
        A :class:`ClusterExplanation`.

    Raises:
        UserError: an unknown option or a bad value (see :class:`ClusterExplainSettings`).

    Example:
        >>> import torch
        >>> from clustercam.explain import explain_clusters, fit_kmeans
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> enc = ResNetCAE((1, 32), filters=(4, 4), embedding_dim=3).encoder.eval()
        >>> x = torch.randn(30, 1, 32)
        >>> km = fit_kmeans(enc(x).detach().numpy(), 3, n_init=2)
        >>> ex = explain_clusters(enc, "features", x, torch.tensor(km.centroids).float(),
        ...                       clusters=torch.tensor(km.labels), compare_targets=["paper"],
        ...                       n_examples=2)
        >>> [row["mode"] for row in ex.by_mode], tuple(ex.member_maps.heatmaps.shape[1:])
        (['reference', 'paper'], (3, 32))
    """
    s = with_options(ClusterExplainSettings, settings, options, "explain_clusters()")
    target = s.resolved_target
    res, table = cardinality_summary(encoder, target_layer, x, centroids, target=target,
                                     normalise=s.normalise, batch_size=s.batch_size)
    summary = {**table.summary(), "mode": target.name, "normalise": s.normalise}
    out = ClusterExplanation(mode=target.name, weights=res, table=table, summary=summary)
    if s.compare_targets:
        done = {target.name: summary}
        for other in [target, *s.resolved_compare_targets]:
            if other.name not in done:
                _, t = cardinality_summary(encoder, target_layer, x, centroids, target=other,
                                           normalise=s.normalise, batch_size=s.batch_size)
                done[other.name] = t.summary()
            row = {"mode": other.name, **{k: done[other.name][k] for k in SUMMARY_KEYS}}
            if row not in out.by_mode:
                out.by_mode.append(row)
    if s.n_examples:
        k = centroids.shape[0]
        own = (nearest(res.embeddings, centroids) if clusters is None
               else check_clusters(clusters, len(x), k))
        out.members = select_members(res.embeddings, centroids, own, s.n_examples)
        sel = out.member_index
        if len(sel):
            out.member_maps = grad_ceam(encoder, target_layer, x[sel], centroids, target=target,
                                        batch_size=s.batch_size, smooth=s.smooth)
    return out

