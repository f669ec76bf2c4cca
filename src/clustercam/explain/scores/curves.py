"""Faithfulness of cluster maps: deletion and insertion curves (Petsiuk et al. 2018, for clusters).

Remove input positions in order of decreasing map value (replace them by a baseline),
re-encode, and follow the soft assignment to the explained cluster c and whether the hard
(nearest-centroid) assignment is still c. Insertion starts from the baseline and puts the
most relevant positions back first. A faithful map gives a *low* deletion area and a
*high* insertion area. All step inputs of a chunk of samples go through the encoder as one
batch (``torch.no_grad``, eval mode), so a whole test set stays practical on a CPU.

Why not Quantus's ``PixelFlipping``: deletion only, a Python loop over single-feature
steps, no insertion, no hard-assignment curve, curves without the unperturbed point, area
over step indices; it does not fit clustering targets at whole-test-set scale. The tests
check that our deletion curve equals ``PixelFlipping``'s on the same ordering and baseline
(through :class:`~clustercam.explain.cluster_scores.ClusterScoreModel`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.assignments import ASSIGNMENTS, Assignment, nearest, soft_assignment
from clustercam.explain.baselines import make_baseline
from clustercam.explain.hooks import eval_mode, module_device, module_dtype


def position_ranks(maps: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Rank of each position per sample (0 = the highest map value), ties broken at random.

    Random tie-breaking matters: a constant map (e.g. a Grad-CeAM map whose channel
    weights are all negative, hence all zero after the ReLU) must score like a random
    map, not like "delete from left to right".

    Args:
        maps: N x spatial.
        generator: the random tie-breaking (None: torch's global stream).

    Returns:
        N x D ranks (long), D the number of positions.

    Raises:
        UserError: maps with NaN or infinite values.

    Example:
        >>> import torch
        >>> from clustercam.explain.scores import position_ranks
        >>> position_ranks(torch.tensor([[0.1, 0.9, 0.5]]))
        tensor([[2, 0, 1]])
    """
    flat = maps.flatten(1).double()
    if not torch.isfinite(flat).all():
        raise UserError("maps contain NaN or infinite values")
    n, d = flat.shape
    perm = torch.rand(n, d, generator=generator).argsort(1)
    order = perm.gather(1, torch.argsort(-flat.gather(1, perm), dim=1, stable=True))
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(d).expand(n, d).contiguous())
    return ranks


# -- deletion / insertion --------------------------------------------------------------------
@dataclass
class PerturbationCurves:
    """Deletion and insertion curves for N samples over S + 1 steps (:func:`deletion_insertion`).

    Attributes:
        fractions: S + 1, the share of positions removed (deletion) or inserted (insertion).
        deletion: N x (S + 1), the soft assignment to the explained cluster as the most
            relevant positions are removed.
        insertion: N x (S + 1), the same as they are put back into the baseline.
        deletion_hard: N x (S + 1), 1 while the nearest centroid is the explained cluster.
        insertion_hard: N x (S + 1), the same for insertion.
        clusters: N, the explained cluster.
        assigned: N, the unperturbed sample's nearest centroid.
        baseline_assigned: N, the nearest centroid of the all-baseline input. Where that is
            the explained cluster, deleting everything does not leave the cluster, so the
            curves of these samples say little about the map (see :func:`summarise_curves`).
    """

    fractions: Tensor
    deletion: Tensor
    insertion: Tensor
    deletion_hard: Tensor
    insertion_hard: Tensor
    clusters: Tensor
    assigned: Tensor
    baseline_assigned: Tensor

    @property
    def informative(self) -> Tensor:
        """N bools: the samples whose all-baseline input leaves the explained cluster."""
        return self.baseline_assigned != self.clusters

    def aucs(self) -> dict[str, Tensor]:
        """Per-sample areas under each curve (trapezoid over the fraction).

        Returns:
            ``deletion_auc``, ``insertion_auc``, ``deletion_hard_auc``,
            ``insertion_hard_auc``: N each, in [0, 1].
        """
        return {
            "deletion_auc": curve_auc(self.deletion, self.fractions),
            "insertion_auc": curve_auc(self.insertion, self.fractions),
            "deletion_hard_auc": curve_auc(self.deletion_hard, self.fractions),
            "insertion_hard_auc": curve_auc(self.insertion_hard, self.fractions),
        }


def curve_auc(curves: Tensor, fractions: Tensor) -> Tensor:
    """Trapezoid area under each row of ``curves`` over ``fractions`` (0 to 1).

    Args:
        curves: ... x (S + 1).
        fractions: S + 1, from 0 to 1.

    Returns:
        ... areas (float64).

    Example:
        >>> import torch
        >>> from clustercam.explain.scores import curve_auc
        >>> curve_auc(torch.tensor([1.0, 0.5, 0.0]), torch.tensor([0.0, 0.5, 1.0]))
        tensor(0.5000, dtype=torch.float64)
    """
    return torch.trapezoid(curves.double(), fractions.double(), dim=-1)


def step_counts(n_positions: int, steps: int) -> Tensor:
    """How many positions are removed at each of the steps 0..S.

    Args:
        n_positions: D, the positions of one sample.
        steps: S (>= 1).

    Returns:
        S + 1 counts (long), rounded, from 0 to D.

    Raises:
        UserError: ``steps`` < 1.

    Example:
        >>> from clustercam.explain.scores import step_counts
        >>> step_counts(10, 4).tolist()
        [0, 2, 5, 8, 10]
    """
    if steps < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    return torch.round(torch.linspace(0, n_positions, steps + 1, dtype=torch.float64)).long()


def deletion_insertion(
    encoder: nn.Module,
    x: Tensor,
    maps: Tensor,
    centroids: Tensor,
    clusters: Tensor | None = None,
    steps: int = 20,
    baseline: str | float = "zero",
    blur_sigma: float | None = None,
    assignment: Assignment = "softmax",
    temperature: float = 1.0,
    alpha: float = 1.0,
    batch_size: int = 512,
    seed: int = 0,
) -> PerturbationCurves:
    """Deletion and insertion curves of ``maps`` for the samples ``x`` (Petsiuk et al. 2018).

    A *position* is a time step or a pixel, all its channels removed together. Every step
    input goes through the encoder in eval mode without gradients.

    Args:
        encoder: maps x to embeddings N x m.
        x: N x C x L or N x C x H x W.
        maps: N x spatial (or N x 1 x spatial), one map per sample.
        centroids: K x m.
        clusters: the cluster each map explains, N (None: each sample's nearest centroid).
        steps: S; each curve has S + 1 points, from none to all positions.
        baseline: what a removed position becomes
            (:func:`~clustercam.explain.baselines.make_baseline`).
        blur_sigma: of the ``blur`` baseline.
        assignment: the soft assignment followed, ``softmax`` or ``student_t``.
        temperature: of ``softmax``.
        alpha: of ``student_t``.
        batch_size: caps the encoder batch; a chunk of samples contributes its 2 S distinct
            step inputs (deletion 0..S and insertion 1..S-1: insertion's ends are
            deletion's ends reversed).
        seed: the random tie-breaking of equal map values.

    Returns:
        The :class:`PerturbationCurves` (N x (S + 1) each).

    Raises:
        UserError: shapes that do not fit, an unknown assignment, bad clusters, a
            batch_size < 1.

    Example:
        >>> import torch
        >>> from clustercam.explain.scores import deletion_insertion
        >>> enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 2))
        >>> x = torch.randn(4, 1, 8)
        >>> curves = deletion_insertion(enc, x, torch.rand(4, 8), enc(x[:2]).detach(), steps=4)
        >>> tuple(curves.deletion.shape), curves.fractions.tolist()
        ((4, 5), [0.0, 0.25, 0.5, 0.75, 1.0])
        >>> bool((curves.deletion[:, 0] == curves.insertion[:, -1]).all())  # both: x itself
        True
    """
    if x.dim() not in (3, 4):
        raise UserError(f"x must be N x C x L or N x C x H x W, got shape {tuple(x.shape)}")
    spatial = tuple(x.shape[2:])
    if maps.dim() == x.dim() and maps.shape[1] == 1:
        maps = maps[:, 0]
    if tuple(maps.shape) != (x.shape[0], *spatial):
        raise UserError(
            f"maps must be N x spatial = {(x.shape[0], *spatial)} for x of shape "
            f"{tuple(x.shape)}, got {tuple(maps.shape)}"
        )
    if centroids.dim() != 2 or centroids.shape[0] < 2:
        raise UserError(f"centroids must be K x m with K >= 2, got {tuple(centroids.shape)}")
    if assignment not in ASSIGNMENTS:
        raise UserError(f"unknown assignment {assignment!r}; choose one of {ASSIGNMENTS}")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    n, c = x.shape[:2]
    k = centroids.shape[0]
    if clusters is not None:
        clusters = torch.as_tensor(clusters, dtype=torch.long).flatten()
        if clusters.shape[0] != n or (clusters < 0).any() or (clusters >= k).any():
            raise UserError(f"clusters must be N = {n} indices in [0, {k}), got {clusters}")
    d = int(np.prod(spatial))
    counts = step_counts(d, steps)
    fractions = counts.double() / d
    gen = torch.Generator().manual_seed(seed)
    ranks = position_ranks(maps.cpu(), gen)  # N x D
    device = module_device(encoder, x.device)
    dtype = module_dtype(encoder)
    mu = centroids.detach().to(device=device, dtype=torch.float64)
    n_inputs = 2 * steps  # distinct step inputs per sample
    per_chunk = max(1, batch_size // n_inputs)
    thresholds = counts.view(1, -1, 1)
    soft_parts: list[Tensor] = []
    hard_parts: list[Tensor] = []
    with eval_mode(encoder), torch.no_grad():
        for start in range(0, n, per_chunk):
            xc = x[start : start + per_chunk].detach().to(device="cpu", dtype=dtype)
            xb = xc.flatten(2)
            base = make_baseline(xc, baseline, blur_sigma).flatten(2)
            rb = ranks[start : start + per_chunk, None, :]  # b x 1 x D
            removed = (rb < thresholds)[:, :, None, :]  # b x S+1 x 1 x D
            deleted = torch.where(removed, base[:, None], xb[:, None])
            inserted = torch.where(removed[:, 1:steps], xb[:, None], base[:, None])
            stack = torch.cat([deleted, inserted], 1)  # b x 2S x C x D
            b = stack.shape[0]
            flat = stack.reshape(b * n_inputs, c, *spatial)
            zs = [
                encoder(flat[i : i + batch_size].to(device)).double()
                for i in range(0, len(flat), batch_size)
            ]
            z = torch.cat(zs)
            q = soft_assignment(z, mu, assignment, temperature, alpha)
            soft_parts.append(q.reshape(b, n_inputs, k).cpu())
            hard_parts.append(nearest(z, mu).reshape(b, n_inputs).cpu())
    q = torch.cat(soft_parts)  # N x 2S x K
    h = torch.cat(hard_parts)  # N x 2S
    assigned = h[:, 0]
    target = assigned if clusters is None else clusters
    q_t = q.gather(2, target.view(n, 1, 1).expand(n, n_inputs, 1))[..., 0]
    h_t = (h == target[:, None]).double()

    def curves(v: Tensor) -> tuple[Tensor, Tensor]:
        dele = v[:, : steps + 1]
        ins = torch.cat([v[:, steps : steps + 1], v[:, steps + 1 :], v[:, :1]], 1)
        return dele, ins

    del_soft, ins_soft = curves(q_t)
    del_hard, ins_hard = curves(h_t)
    return PerturbationCurves(
        fractions=fractions,
        deletion=del_soft,
        insertion=ins_soft,
        deletion_hard=del_hard,
        insertion_hard=ins_hard,
        clusters=target,
        assigned=assigned,
        baseline_assigned=h[:, steps],
    )


def summarise_curves(
    method: str, curves: PerturbationCurves, n_clusters: int
) -> list[dict[str, float | int | str]]:
    """The curves' mean areas per cluster, over all samples and over the informative ones.

    One row per explained cluster (empty ones skipped), one ``all`` row, and one
    ``excl_baseline`` row over the samples whose all-baseline input leaves their cluster.
    ``baseline_share`` is the share of a row's samples whose all-baseline input stays in
    the cluster: for them deletion ends and insertion starts in the cluster whatever the
    map, so their areas say little and dilute the differences between methods (the zero
    series falls into one cluster of Trace that holds about half the test set);
    ``excl_baseline`` leaves them out.

    Args:
        method: the map method's name, for the rows.
        curves: its :class:`PerturbationCurves`.
        n_clusters: K.

    Returns:
        Rows ``method, cluster, deletion_auc, insertion_auc, deletion_hard_auc,
        insertion_hard_auc, n_samples, baseline_share`` (means over the row's samples).
    """
    aucs = curves.aucs()
    stays = ~curves.informative
    rows: list[dict[str, float | int | str]] = []
    groups: list[tuple[str, Tensor]] = [
        (str(c), curves.clusters == c) for c in range(n_clusters)
    ] + [("all", torch.ones_like(stays)), ("excl_baseline", ~stays)]
    for name, sel in groups:
        if not sel.any():
            continue
        row: dict[str, float | int | str] = {"method": method, "cluster": name}
        row.update({key: float(v[sel].mean()) for key, v in aucs.items()})
        row["n_samples"] = int(sel.sum())
        row["baseline_share"] = float(stays[sel].double().mean())
        rows.append(row)
    return rows


def mean_curves(
    curves: Mapping[str, PerturbationCurves], informative_only: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """Per method, the mean deletion / insertion curves (soft and hard) and the fractions.

    Args:
        curves: method name -> :class:`PerturbationCurves`.
        informative_only: average over the samples whose all-baseline input leaves their
            cluster only.

    Returns:
        Method name -> ``{"fractions", "deletion", "insertion", "deletion_hard",
        "insertion_hard"}``, arrays of S + 1 values (for
        :func:`~clustercam.explain.plots.curves_figure`).
    """
    out = {}
    for method, c in curves.items():
        sel = c.informative if informative_only else torch.ones_like(c.clusters, dtype=torch.bool)
        out[method] = {
            "fractions": c.fractions.numpy(),
            **{key: getattr(c, key)[sel].mean(0).numpy()
               for key in ("deletion", "insertion", "deletion_hard", "insertion_hard")},
        }
    return out
