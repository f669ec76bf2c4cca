"""What the class concepts' scores need of an image when the head is pooling + linear.

Where the concepts' layer feeds a head ``h(A) = linear(pool(A))`` whose pool acts channel
by channel (timm's average pool + fc: every timm CNN classifier's final features), every
score of a class concept G on image i follows from a few numbers per channel, kept in
the first pass, so the scores need no second pass over the images:

- importance (concepts paper eq. 3): ``p_t`` of ``linear(pool(A) * keep)``, the closed form
  the per-image importance uses (:class:`~clustercam.explain.concepts.image.ablation.PooledHead`);
- the galleries' ranking, G's activation mass ``sum_{c in G} sum_positions A_c``: the
  channel sums, ``h w pool(A)`` for the average pool (kept beside ``pool(A)`` for any
  other pool);
- with part masks, G's relevance mass on region r: ``sum_{c in G} <resize(A_c), M_r> /
  sum_{c in G} sum resize(A_c)``, as the bilinear resize is linear and, for non-negative
  activations, the clip at 0 of the relevance mass changes nothing; ``<resize(A_c), M_r>
  = <A_c, K_r>`` with the kernels of
  :func:`~clustercam.explain.concepts.image.truth.region_kernels` (4 numbers a channel).

Stability needs the image's own partition only. The galleries' maps are the one thing the
numbers cannot give: they are recomputed for the gallery images alone
(:meth:`~clustercam.explain.concepts.classes.passes.ClassConceptRun.fill_gallery_maps`).
Memory: C float32 numbers an image with the average pool (8 KiB at C = 2048), 2 C with
another pool, plus 4 C float64 with part masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from clustercam.explain.concepts.image.ablation import PooledHead
from clustercam.explain.concepts.image.importance import concept_importance
from clustercam.explain.concepts.image.truth import region_kernels, region_shares
from clustercam.explain.layouts import grid_2d


def is_mean_pool(pooled: Tensor, activations: Tensor) -> bool:
    """Whether ``pooled`` (B x C) is the spatial mean of ``activations`` (B x C x h x w), to
    float rounding: then the channel sums need not be kept beside it."""
    mean = activations.mean((2, 3))
    if pooled.shape != mean.shape:
        return False
    scale = 1.0 + float(mean.abs().max()) if mean.numel() else 1.0
    return bool(torch.allclose(pooled.to(mean.dtype), mean, rtol=1e-5, atol=1e-6 * scale))


@dataclass
class PooledActivations:
    """Per image, the numbers of the module docstring (CPU tensors).

    ``pooled``: B x C, ``pool(A)`` (float32); ``sums``: B x C channel sums over positions,
    or None where the pool is the average pool (``positions * pooled``); ``positions``:
    ``h * w``; ``regions``: with part masks, B x C x 4 float64 channel masses on part A,
    part B, the distractor and the whole map; ``present``: B x 3, whether each mask is
    non-empty.
    """

    pooled: Tensor
    sums: Tensor | None
    positions: int
    regions: Tensor | None = None
    present: Tensor | None = None

    @classmethod
    @torch.no_grad()
    def of(cls, pooled_head: PooledHead, activations: Tensor, part_masks: Tensor | None = None,
           mean_pool: bool | None = None) -> PooledActivations:
        """The numbers of B images' activations (B x C x h x w, non-negative where
        ``part_masks`` B x 3 x H x W are given). ``mean_pool``: whether the pool is the
        average pool (None: :func:`is_mean_pool` on these activations)."""
        a = activations.detach()
        pooled = pooled_head.pool(a)
        if mean_pool is None:
            mean_pool = is_mean_pool(pooled, a)
        sums = None if mean_pool else a.sum((2, 3)).float().cpu()
        regions = present = None
        if part_masks is not None:  # series: B x 3 x L masks on the 1 x l grid
            masks = grid_2d(part_masks).bool().to(a.device)
            kernels = region_kernels(masks, tuple(a.shape[-2:]), torch.float64)
            regions = torch.einsum("bchw,brhw->bcr", a.double(), kernels).cpu()
            present = masks.flatten(2).any(2).cpu()
        return cls(pooled.float().cpu(), sums, int(a.shape[-2] * a.shape[-1]), regions, present)

    def __len__(self) -> int:
        return len(self.pooled)

    def select(self, rows: Tensor) -> PooledActivations:
        """The numbers of some images (``rows``: positions in this batch)."""
        rows = rows.cpu()

        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[rows]

        return PooledActivations(self.pooled[rows], pick(self.sums), self.positions, pick(self.regions),
                                 pick(self.present))

    def importance(self, linear: Callable[[Tensor], Tensor], group_labels: Tensor, rows: Tensor, targets: Tensor,
                   n_concepts: int) -> Tensor:
        """B x n importance in percent (eq. 3) of the concepts ``group_labels[rows[b]]``
        (``group_labels``: G x C concept ids, ``-1`` in none; ``rows``: B) for the classes
        ``targets`` (B); NaN for an empty concept. Exactly
        :func:`~clustercam.explain.concepts.image.importance.concept_importance` with the
        pooled head, ``linear(pool(A) * keep)`` for every concept's mask: a pooled vector is a
        1 x 1 map whose pool is the identity (the same arithmetic as the importance from
        the activations, so the same bits for the average pool)."""
        a = self.pooled[:, :, None, None].to(_device(linear), _dtype(linear, self.pooled))
        flat = PooledHead(pool=lambda x: x.flatten(1), linear=linear, checked=True)
        return concept_importance(lambda x: linear(x.flatten(1)), a, group_labels[rows.long().cpu()], targets,
                                  n_concepts=n_concepts, pooled_head=flat).cpu()

    def mass(self, group_labels: Tensor, rows: Tensor, n_concepts: int) -> Tensor:
        """B x n activation mass (sum over positions and channels) of the concepts
        ``group_labels[rows[b]]``."""
        lab = group_labels[rows.long().cpu()].long().cpu()
        ids = torch.where(lab >= 0, lab, n_concepts)
        src = (self.pooled if self.sums is None else self.sums).double()
        out = torch.zeros(len(lab), n_concepts + 1, dtype=torch.float64).scatter_add_(1, ids, src)[:, :n_concepts]
        return out * self.positions if self.sums is None else out

    def part_masses(self, onehot: Tensor) -> Tensor:
        """B x n x 3 relevance mass of each concept on part A, part B and the distractor
        (NaN for an empty concept map or an empty mask)."""
        shares = region_shares(self.regions, onehot.double(), self.present)
        return torch.stack([shares[k] for k in ("a", "b", "distractor")], -1)


def _device(linear: Callable[[Tensor], Tensor]) -> torch.device:
    weight = getattr(linear, "weight", None)
    return weight.device if isinstance(weight, Tensor) else torch.device("cpu")


def _dtype(linear: Callable[[Tensor], Tensor], a: Tensor) -> torch.dtype:
    weight = getattr(linear, "weight", None)
    return weight.dtype if isinstance(weight, Tensor) and weight.is_floating_point() else a.dtype


def cat_pooled(parts: list[PooledActivations]) -> PooledActivations:
    """Several batches' numbers as one (in order)."""
    def cat(name: str) -> Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    return PooledActivations(cat("pooled"), cat("sums"), parts[0].positions, cat("regions"), cat("present"))
