"""Concepts against ground truth: where each concept's map lies relative to the known parts.

For data whose class evidence is known region by region (``clustercam.data.parts``: part
A, part B, a distractor), a concept map ``M_l = sum_{c in l} A_c`` (resized bilinearly to
the input, clipped at 0; concepts paper § 3.4) is scored by its relevance mass on each
region (Arras et al. 2022) and its pointing game (Zhang et al. 2018), both from
:mod:`clustercam.explain.scores.localisation`. Per image:

- ``pointing``, ``class_part_mass``, ``distractor_mass`` of the top-importance concept
  (rank 0 by ``I_l``, eq. 3), with ``class_part_area`` ``|A u B| / HW``, the chance level
  of the mass;
- ``parts_separated`` (0/1): one concept holds >= 80 % of its part mass on A
  (``a_l / (a_l + b_l) >= 0.8``) and another >= 80 % on B;
- ``part_purity``: ``sum_l |a_l - b_l| / sum_l (a_l + b_l)`` (1 when every concept holds
  one part only);
- ``importance_spearman``: Spearman correlation of ``I_l`` and the class-part mass over
  the image's non-empty concepts (NaN with fewer than 3).

The control (:func:`concept_truth` with partitions): random partitions of the kept
channels with the found concept sizes, scored the same way (with their own importances),
averaged.

Series (``clustercam.data.motifs``: motif A, motif B, a spike train) are scored by the same
functions: the concept code holds a 1-D layer as a ``1 x l`` grid
(:func:`~clustercam.explain.layouts.grid_2d`), and their masks ``B x 3 x L`` are read as
``B x 3 x 1 x L`` the same way, so positions are time steps, the bilinear resize is linear
over time and the area share is ``|A u B| / L``.

Resizing is linear and, for non-negative (post-ReLU) activations, clipping is a
no-op, so a concept's mass on a region is the sum of its channels' masses: each channel's
mass on each region is computed once (through the adjoint of the resize) and every
partition costs a scatter-add; only the top concept's map is drawn, for the pointing game. :func:`paint_out_drops` is the input-space check that the classifier uses both
parts: the drop of ``p_t`` when a region is replaced by the object-free background.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.image.extract import concept_counts
from clustercam.explain.concepts.image.fidelity import concept_order
from clustercam.explain.concepts.image.maps import raw_concept_maps
from clustercam.explain.concepts.vocabulary import PAINT_COLUMNS, TRUTH_SCORES
from clustercam.explain.deprecation import renamed_parameters
from clustercam.explain.layouts import grid_2d
from clustercam.explain.maps import interpolation_matrix, resize_maps
from clustercam.explain.scores.localisation import pointing_game, relevance_mass

__all__ = ["PAINT_COLUMNS", "TRUTH_SCORES", "concept_truth", "paint_out_drops", "part_shares",
           "region_kernels", "region_shares", "scoring_maps", "spearman_rows", "truth_scores"]
PAINTED = ("part_a", "part_b", "distractor")
SEPARATED = 0.8


def part_shares(maps: Tensor, part_masks: Tensor) -> dict[str, Tensor]:
    """Relevance mass of B x n maps (H x W, input resolution) on part A, part B and the
    distractor (``part_masks`` B x 3 x H x W), and whether each map's maximum is on A or B.
    Series: maps B x n x L (or 1 x L) and masks B x 3 x L."""
    maps, part_masks = grid_2d(maps), grid_2d(part_masks)
    b, n = maps.shape[:2]
    if part_masks.dim() != 4 or part_masks.shape[1] != 3 or part_masks.shape[0] != b:
        raise UserError(f"part_masks must be B x 3 x H x W for B = {b}, got {tuple(part_masks.shape)}")
    if tuple(part_masks.shape[-2:]) != tuple(maps.shape[-2:]):
        raise UserError(f"maps {tuple(maps.shape[-2:])} and part masks {tuple(part_masks.shape[-2:])} "
                         "must have one size")
    flat = maps.flatten(0, 1)
    masks = part_masks.bool().to(maps.device)

    def per(region: Tensor) -> Tensor:
        return region.unsqueeze(1).expand(b, n, *region.shape[-2:]).flatten(0, 1)

    out = {k: relevance_mass(flat, per(masks[:, i])).view(b, n)
           for i, k in enumerate(("a", "b", "distractor"))}
    out["pointing"] = pointing_game(flat, per(masks[:, 0] | masks[:, 1])).view(b, n)
    return out


def scoring_maps(activations: Tensor, concept_labels: Tensor, n_concepts: int, size: tuple[int, int]) -> Tensor:
    """B x n concept maps for scoring: summed channels, bilinear to ``size``, clipped at 0."""
    raw = raw_concept_maps(activations, concept_labels, n_concepts=n_concepts).float()
    return resize_maps(raw, size).clamp_min(0)


def spearman_rows(x: Tensor, y: Tensor, min_points: int = 3) -> Tensor:
    """Spearman correlation per row over the entries finite in both (NaN with fewer than
    ``min_points`` or a constant row); ranks with ties averaged (scipy's ``rankdata``)."""
    from scipy.stats import rankdata

    xa, ya = x.double().cpu().numpy(), y.double().cpu().numpy()
    ok = np.isfinite(xa) & np.isfinite(ya)
    out = np.full(len(xa), math.nan)
    for i in np.flatnonzero(ok.sum(1) >= min_points):
        rx, ry = rankdata(xa[i, ok[i]]), rankdata(ya[i, ok[i]])
        rx, ry = rx - rx.mean(), ry - ry.mean()
        den = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
        out[i] = float((rx * ry).sum()) / den if den > 0 else math.nan
    return torch.from_numpy(out)


def truth_scores(shares: Mapping[str, Tensor], importance: Tensor, sizes: Tensor,
                 part_masks: Tensor) -> dict[str, Tensor]:
    """The per-image scores of :data:`TRUTH_SCORES` (B each) from :func:`part_shares`."""
    a, b = shares["a"].double().cpu(), shares["b"].double().cpu()
    imp, sizes = importance.double().cpu(), sizes.cpu()
    top = concept_order(imp, sizes)[:, :1]
    mass = a + b  # the two parts are disjoint
    ratio = a / mass
    valid = (sizes > 0) & torch.isfinite(ratio)
    hi = ((ratio >= SEPARATED) & valid).any(1)
    lo = ((ratio <= 1 - SEPARATED) & valid).any(1)
    num = torch.where(valid, (a - b).abs(), 0.0).sum(1)
    den = torch.where(valid, mass, 0.0).sum(1)
    region = part_masks.bool().cpu()
    area = (region[:, 0] | region[:, 1]).flatten(1).double().mean(1)
    no_concept = ~(sizes > 0).any(1)
    return {
        "pointing": shares["pointing"].double().cpu().gather(1, top).squeeze(1),
        "class_part_mass": mass.gather(1, top).squeeze(1),
        "class_part_area": area,
        "distractor_mass": shares["distractor"].double().cpu().gather(1, top).squeeze(1),
        "parts_separated": (hi & lo).double().masked_fill(no_concept, math.nan),
        "part_purity": torch.where(den > 0, num / den.clamp_min(1e-300), math.nan),
        "importance_spearman": spearman_rows(imp.masked_fill(sizes == 0, math.nan), mass),
    }


def region_kernels(part_masks: Tensor, shape: tuple[int, int], dtype: torch.dtype) -> Tensor:
    """B x 4 x h x w weights ``K_r`` with ``sum_r resize(M) = sum(M * K_r)`` for any h x w map
    ``M`` (bilinear resize to the masks' size): regions part A, part B, distractor, all.
    Series: masks B x 3 x L and ``shape`` (1, l)."""
    part_masks = grid_2d(part_masks)
    big_h, big_w = part_masks.shape[-2:]
    h, w = shape
    rows = interpolation_matrix(h, big_h, dtype, part_masks.device)  # H x h
    cols = interpolation_matrix(w, big_w, dtype, part_masks.device)  # W x w
    m = part_masks.to(dtype)
    regions = torch.cat([m, torch.ones_like(m[:, :1])], 1)  # B x 4 x H x W
    return rows.T @ regions @ cols


def region_shares(channel_mass: Tensor, onehot: Tensor, present: Tensor) -> dict[str, Tensor]:
    """Each concept's share of its resized map on part A, part B and the distractor (keys
    ``a``, ``b``, ``distractor``; B x n) from per-channel region masses (B x C x 4, the
    last: the whole map; non-negative activations), ``onehot`` B x C x n membership and
    ``present`` B x 3 (the mask is non-empty); NaN for an empty map or mask."""
    mass = torch.einsum("bcr,bcl->blr", channel_mass, onehot.to(channel_mass.dtype))  # B x n x 4
    total = mass[..., 3]
    present = present.to(mass.device)
    return {k: torch.where((total > 0) & present[:, None, i], mass[..., i] / total.clamp_min(1e-30),
                           math.nan) for i, k in enumerate(("a", "b", "distractor"))}


def _fast_shares(activations: Tensor, channel_mass: Tensor, labels: Tensor, importance: Tensor,
                 part_masks: Tensor) -> dict[str, Tensor]:
    """:func:`part_shares` from per-channel region masses (B x C x 4), pointing for the top
    concept only (NaN for the others)."""
    n = importance.shape[1]
    lab = labels.long().to(channel_mass.device)
    onehot = torch.nn.functional.one_hot(lab.clamp_min(0), n).to(channel_mass.dtype)
    onehot = onehot * (lab >= 0).unsqueeze(-1).to(channel_mass.dtype)
    shares = region_shares(channel_mass, onehot, part_masks.flatten(2).any(2))
    top = concept_order(importance.cpu(), concept_counts(lab, n).cpu())[:, :1].to(lab.device)
    in_top = (lab == top).to(activations.dtype)[..., None, None]
    top_map = resize_maps((activations * in_top).sum(1), tuple(part_masks.shape[-2:])).clamp_min(0)
    region = (part_masks[:, 0] | part_masks[:, 1]).to(top_map.device)
    total = shares["a"]  # B x n, for the shape
    pointing = torch.full(total.shape, math.nan, dtype=torch.float64, device=total.device)
    pointing.scatter_(1, top, pointing_game(top_map, region).to(total.device)[:, None])
    return {**shares, "pointing": pointing}


@renamed_parameters(labels="concept_labels")
def concept_truth(
    activations: Tensor,
    concept_labels: Tensor,
    importance: Tensor,
    part_masks: Tensor,
    *,
    partitions: Tensor | None = None,
    partition_importance: Tensor | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Per-image localisation scores of the found concepts (``"concepts"``) and, given R
    random partitions (R x B x C, with their importances R x B x n), their mean
    (``"random"``). ``concept_labels``: B x C (-1 dropped); ``importance``: B x n (eq. 3);
    ``part_masks``: B x 3 x H x W (part A, part B, distractor) at input resolution. Series:
    activations B x C x 1 x l (or B x C x l) and masks B x 3 x L (motif A, motif B,
    distractor); the scores are then over time steps.

    Example:
        >>> import torch
        >>> from clustercam.explain.concepts.image.truth import concept_truth
        >>> a = torch.zeros(1, 2, 4, 4); a[0, 0, 0, 0] = 1; a[0, 1, 3, 3] = 1
        >>> masks = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
        >>> masks[0, 0, :2, :2] = True; masks[0, 1, 2:, 2:] = True; masks[0, 2, 0, 3] = True
        >>> s = concept_truth(a, torch.tensor([[0, 1]]), torch.tensor([[10.0, 5.0]]), masks)
        >>> {k: round(float(v), 2) for k, v in s["concepts"].items()}  # doctest: +NORMALIZE_WHITESPACE
        {'pointing': 1.0, 'class_part_mass': 1.0, 'class_part_area': 0.5, 'distractor_mass': 0.0,
         'parts_separated': 1.0, 'part_purity': 1.0, 'importance_spearman': nan}
    """
    n = importance.shape[1]
    activations, part_masks = grid_2d(activations), grid_2d(part_masks)
    size = tuple(part_masks.shape[-2:])
    part_masks = part_masks.bool().to(activations.device)
    if partitions is not None and (partition_importance is None
                                   or partition_importance.shape[:2] != partitions.shape[:2]):
        raise UserError("partitions (R x B x C) need their importances (R x B x n)")
    linear = bool(activations.min() >= 0) if activations.numel() else True
    if linear:  # every concept's region masses from the channels' (see the module docstring)
        kernels = region_kernels(part_masks, tuple(activations.shape[-2:]), torch.float64)
        channel_mass = torch.einsum("bchw,brhw->bcr", activations.double(), kernels)

    def score(lab: Tensor, imp: Tensor) -> dict[str, Tensor]:
        if linear:
            shares = _fast_shares(activations, channel_mass, lab, imp, part_masks)
        else:  # clipping matters: draw every map
            shares = part_shares(scoring_maps(activations, lab, n, size), part_masks)
        return truth_scores(shares, imp, concept_counts(lab, n), part_masks)

    out = {"concepts": score(concept_labels, importance)}
    if partitions is not None:
        runs = [score(p, i) for p, i in zip(partitions, partition_importance)]
        out["random"] = {k: torch.stack([r[k] for r in runs]).nanmean(0) for k in runs[0]}
    return out


@torch.no_grad()
def paint_out_drops(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    backgrounds: Tensor,
    part_masks: Tensor,
    targets: Tensor,
) -> Tensor:
    """Input-space check: B x 4, per image ``p_t`` of ``model(x)`` and its drops when part
    A, part B or the distractor is replaced by the object-free background (columns
    :data:`PAINT_COLUMNS`), all in one forward call. ``x``, ``backgrounds``: B x C x H x W
    with masks B x 3 x H x W, or series B x C x L with masks B x 3 x L (every channel of a
    series painted over the masked time steps)."""
    b = x.shape[0]
    region = part_masks.bool().to(x.device)
    bg = backgrounds.to(x.device, x.dtype)
    painted = [torch.where(region[:, i, None], bg, x) for i in range(3)]
    probs = torch.softmax(model(torch.cat([x, *painted])).double(), -1)
    t = targets.long().to(probs.device).repeat(4)[:, None]
    p = probs.gather(1, t).view(4, b)
    return torch.stack([p[0], p[0] - p[1], p[0] - p[2], p[0] - p[3]], 1).cpu()
