"""Concept maps (paper § 3.4): the sum of a concept's channels, resized, min-max normalised."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.checks import check_activations
from clustercam.explain.concepts.image.extract import SubConcepts
from clustercam.explain.deprecation import renamed_parameters
from clustercam.explain.maps import as_size, minmax_normalise, resize_maps


@renamed_parameters(labels="concept_labels")
def raw_concept_maps(activations: Tensor, concept_labels: Tensor, *, n_concepts: int | None = None) -> Tensor:
    """B x n_concepts x H x W: ``M_l = max(0, sum_{c in l} A_c)`` (activation resolution; the
    clip only changes the maps of signed activations, e.g. a transformer's tokens)."""
    check_activations(activations, warn_negative=False)
    labels = concept_labels
    n = int(labels.max()) + 1 if n_concepts is None else int(n_concepts)
    onehot = F.one_hot(labels.clamp_min(0).long(), max(n, 1)).to(activations.dtype)
    onehot = onehot * (labels >= 0).unsqueeze(-1).to(activations.dtype)
    return torch.einsum("bchw,bcl->blhw", activations, onehot.to(activations.device)).clamp_min(0)


@renamed_parameters(labels="concept_labels")
def concept_maps(
    activations: Tensor,
    concept_labels: Tensor,
    size: int | Sequence[int],
    *,
    n_concepts: int | None = None,
    normalise: bool = True,
) -> Tensor:
    """B x n_concepts x H_out x W_out: summed channels, bilinear resize, min-max normalised.

    ``normalise=False`` keeps the resized sums (e.g. to normalise sub-concepts with their
    parent's bounds, see :func:`sub_concept_maps`).
    """
    if any(int(s) < 1 for s in (size if isinstance(size, Sequence) else [size])):
        raise UserError(f"concept_maps: size must be positive (pixels of the output), got {size!r}")
    maps = resize_maps(raw_concept_maps(activations, concept_labels, n_concepts=n_concepts), size)
    return minmax_normalise(maps, 2) if normalise else maps


def sub_concept_maps(
    activations: Tensor,
    sub: SubConcepts,
    size: int | Sequence[int],
) -> Tensor:
    """B x n_concepts x n_sub x H_out x W_out, each normalised with its PARENT's min and max.

    So a sub-concept is drawn in proportion to the whole concept (paper § 3.4).
    """
    parent = raw_concept_maps(activations, sub.parents, n_concepts=sub.n_concepts)
    maps = raw_concept_maps(activations, sub.labels, n_concepts=sub.n_concepts * sub.n_sub)
    maps = maps.view(maps.shape[0], sub.n_concepts, sub.n_sub, *maps.shape[-2:])
    return sub_maps_with_parent_bounds(maps, parent, size)


def sub_maps_with_parent_bounds(raw_sub: Tensor, raw_parent: Tensor, size: int | Sequence[int]) -> Tensor:
    """Resize ... x L x S x h x w sub-concept sums and normalise each with its parent's
    (... x L x h x w, resized the same way) min and max, clamped to [0, 1]. A series'
    ``size`` (L,) takes ... x L x S x l sums and gives ... x L x S x L."""
    d = len(as_size(size))
    parent = resize_maps(raw_parent, size)
    maps = resize_maps(raw_sub, size)
    lo = parent.flatten(-d).amin(-1).unsqueeze(-1).expand(*maps.shape[:-d])
    hi = parent.flatten(-d).amax(-1).unsqueeze(-1).expand(*maps.shape[:-d])
    return minmax_normalise(maps, d, lo=lo, hi=hi)
