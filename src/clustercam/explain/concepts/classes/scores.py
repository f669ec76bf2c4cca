"""Scores of class concepts, batch by batch, once the class concepts are known.

Once the class concepts G of a configuration are known (:mod:`.coassociation`,
:mod:`.nmf`), every image i of class t is scored from its own partition ``L_i`` and either
its activations (:meth:`ClassConceptScores.update`: a second pass over the images, any
head) or, for a pooling + linear head, the per-channel numbers the first pass kept
(:meth:`ClassConceptScores.update_pooled`, :mod:`.pooled`; the galleries' maps are then
drawn for the gallery images alone, :meth:`ClassConceptScores.fill_maps`):

- stability of G: ``mean_i max_l Jaccard(G, {c : L_i(c) = l})`` (1: G appears intact in
  every image's partition);
- importance of G: mean and std over the images of the ablation importance of G's
  channels, ``I = (p_t - p_G) / p_t * 100`` (concepts paper eq. 3), every class concept of
  a batch in one head call (:func:`~clustercam.explain.concepts.concept_importance`);
- gallery: the top k images by G's activation mass ``sum_{c in G} sum_positions A_c``, a
  running top-k (index, score and G's map at activation resolution), never all images;
- with part masks (parts dataset), G's relevance mass on part A, part B and the
  distractor: ``M_G = sum_{c in G} A_c`` resized bilinearly to the masks, clipped at 0,
  ``sum_r M_G / sum M_G``.

Everything is a sum or a top-k, so ranks merge: :meth:`ClassConceptScores.state` /
:meth:`ClassConceptScores.merged`. Sums merge up to float rounding (the order of the
additions differs); counts and galleries exactly. :func:`truth_by_group` gives the scores
against the parts per group and source.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.classes.coassociation import ClassConcepts
from clustercam.explain.concepts.classes.pooled import PooledActivations
from clustercam.explain.concepts.image.ablation import BatchHead
from clustercam.explain.concepts.image.importance import concept_importance, importance_order
from clustercam.explain.concepts.image.maps import raw_concept_maps
from clustercam.explain.concepts.vocabulary import CLASS_TRUTH_SCORES
from clustercam.explain.layouts import grid_2d
from clustercam.explain.maps import resize_maps
from clustercam.explain.scores.localisation import relevance_mass

_SUMS = ("stability_sum", "stability_n", "importance_sum", "importance_sq", "importance_n",
         "mass_sum", "mass_n")
_GALLERY = ("gallery_score", "gallery_index", "gallery_maps")


def _onehot(labels: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """B x C x n membership (``-1`` in no group)."""
    return F.one_hot(labels.clamp_min(0).long(), max(n, 1)).to(dtype) * (labels >= 0).unsqueeze(-1).to(dtype)


def max_jaccard(groups: Tensor, partitions: Tensor, n_groups: int) -> Tensor:
    """B x n_groups: ``max_l Jaccard(G, {c : L_b(c) = l})`` for the groups ``groups`` (B x C
    labels) against each image's partition ``partitions`` (B x C); NaN for an empty group.

    Example:
        >>> import torch
        >>> g = torch.tensor([[0, 0, 1, 1]])
        >>> max_jaccard(g, torch.tensor([[0, 1, 1, 0]]), 2).tolist()   # {0,1} vs {0,3}, {1,2}
        [[0.3333333333333333, 0.3333333333333333]]
    """
    if groups.shape != partitions.shape:
        raise UserError(f"groups {tuple(groups.shape)} and partitions {tuple(partitions.shape)} differ")
    b = groups.shape[0]
    n_l = max(int(partitions.max()) + 1 if partitions.numel() else 1, 1)
    # per image, the channels of each (group, partition label) pair; the last bins: in none
    g = torch.where(groups >= 0, groups, n_groups).long().cpu()
    lab = torch.where(partitions >= 0, partitions, n_l).long().cpu()
    counts = torch.zeros(b, (n_groups + 1) * (n_l + 1), dtype=torch.long)
    counts.scatter_add_(1, g * (n_l + 1) + lab, torch.ones_like(g))
    counts = counts.view(b, n_groups + 1, n_l + 1).double()
    inter = counts[:, :n_groups, :n_l]
    size_g, size_l = counts[:, :n_groups].sum(-1), counts[:, :, :n_l].sum(1)
    union = size_g[:, :, None] + size_l[:, None, :] - inter
    best = (inter / union.clamp_min(1)).amax(-1)
    return best.masked_fill(size_g == 0, math.nan)


def part_masses(maps: Tensor, masks: Tensor) -> Tensor:
    """B x n x R relevance mass of B x n x h x w concept sums on B x R x H x W masks (the
    maps resized bilinearly to H x W and clipped at 0; NaN for a zero map or empty mask)."""
    b, n = maps.shape[:2]
    size = tuple(masks.shape[-2:])
    big = resize_maps(maps.double(), size).reshape(b * n, *size)
    out = [relevance_mass(big, masks[:, r, None].expand(b, n, *size).reshape(b * n, *size).to(big.device))
           for r in range(masks.shape[1])]
    return torch.stack(out, -1).view(b, n, -1).cpu()


def _top_k(score: Tensor, index: Tensor, maps: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per row (... x M candidates): the k best by (score desc, index asc), one per index."""
    order = torch.argsort(index, dim=-1, stable=True)
    order = order.gather(-1, torch.argsort(-score.gather(-1, order), dim=-1, stable=True))
    idx = index.gather(-1, order)
    dup = torch.zeros_like(idx, dtype=torch.bool)
    dup[..., 1:] = (idx[..., 1:] == idx[..., :-1]) & (idx[..., 1:] >= 0)
    last = torch.argsort(dup.to(torch.uint8), dim=-1, stable=True)[..., :k]  # repeats to the end
    order, dup = order.gather(-1, last), dup.gather(-1, last)
    s = score.gather(-1, order).masked_fill(dup, -math.inf)
    i = index.gather(-1, order).masked_fill(dup, -1)
    m = maps.gather(-3, order[..., None, None].expand(*order.shape, *maps.shape[-2:]))
    return s, i, m.masked_fill(dup[..., None, None], 0.0)


@dataclass
class Gallery:
    """The top images of every class concept of one group: ``index``/``score`` n x k
    (``-1`` / ``-inf`` in empty slots), ``maps`` n x k x h x w (the concept sums)."""

    index: Tensor
    score: Tensor
    maps: Tensor


class ClassConceptScores:
    """Running sums (stability, importance, part masses) and galleries of class concepts.

    ``update`` (or ``update_pooled``) per batch; ``summary()`` the means; ``state()`` / ``merged(...)`` for ranks.
    ``map_size``: the activation map size (h, w) of the galleries (default: from the first
    batch; give it under DDP so that every rank's state has the same shape).

    Example:
        >>> import torch
        >>> from clustercam.explain.concepts.classes.coassociation import ClassConcepts
        >>> concepts = ClassConcepts([0], torch.tensor([[0, 0, 1]]), 2, torch.tensor([2]))
        >>> head = lambda a: a.mean((2, 3))                   # 3 "classes" = the 3 channels
        >>> scores = ClassConceptScores(concepts, gallery_size=1)
        >>> a = torch.rand(2, 3, 2, 2)
        >>> scores.update(head, a, torch.tensor([[0, 0, 1], [0, 1, 1]]), torch.tensor([0, 0]),
        ...               index=torch.tensor([10, 11]))
        >>> scores.summary()["stability"].tolist()             # G1 = {2}: 1, then 1/2
        [[0.75, 0.75]]
    """

    def __init__(self, concepts: ClassConcepts, gallery_size: int = 6, stability: bool = True,
                 map_size: Sequence[int] | None = None) -> None:
        self.concepts, self.k, self.stability = concepts, int(gallery_size), bool(stability)
        g, n = len(concepts.groups), concepts.n_concepts
        f64 = {"dtype": torch.float64}
        self.stability_sum, self.importance_sum, self.importance_sq = (torch.zeros(g, n, **f64) for _ in range(3))
        self.stability_n, self.importance_n = (torch.zeros(g, n, dtype=torch.long) for _ in range(2))
        self.mass_sum = torch.zeros(g, n, 3, **f64)
        self.mass_n = torch.zeros(g, n, 3, dtype=torch.long)
        self.gallery_score = torch.full((g, n, self.k), -math.inf, **f64)
        self.gallery_index = torch.full((g, n, self.k), -1, dtype=torch.long)
        self.gallery_maps = None if map_size is None else torch.zeros(g, n, self.k, *map_size)

    @staticmethod
    def _add(total: Tensor, count: Tensor, rows: Tensor, values: Tensor) -> None:
        ok = ~torch.isnan(values)
        total.index_add_(0, rows, values.nan_to_num(0.0).to(total.dtype))
        count.index_add_(0, rows, ok.long())

    def _batch(self, b: int, classes: Tensor, index: Tensor, targets: Tensor | None, keep: Tensor | None,
               partitions: Tensor | None, masks: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The per-image arguments of a batch of ``b`` images as CPU tensors, checked."""
        classes = torch.as_tensor(classes).view(-1).long().cpu()
        index = torch.as_tensor(index).view(-1).long().cpu()
        targets = classes if targets is None else torch.as_tensor(targets).view(-1).long().cpu()
        keep = torch.ones(b, dtype=torch.bool) if keep is None else torch.as_tensor(keep).view(-1).bool().cpu()
        if not len(classes) == len(index) == len(targets) == len(keep) == b:
            raise UserError(f"{b} images but {len(classes)} classes, {len(index)} indices, "
                             f"{len(targets)} targets, {len(keep)} keep flags")
        if self.stability and partitions is None:
            raise UserError("stability needs the images' own partitions (B x C labels)")
        if masks is not None and (masks.ndim != 4 or masks.shape[:2] != (b, 3)):
            raise UserError(f"masks must be B x 3 x H x W (part A, part B, distractor), got {tuple(masks.shape)}")
        return classes, index, targets, keep

    def _record(self, r: Tensor, sel: Tensor, lab: Tensor, partitions: Tensor | None, index: Tensor,
                imp: Tensor, score: Tensor, masses: Tensor | None, maps: Tensor | None) -> None:
        """Add the scores of the images ``sel`` of a batch (group rows ``r``, their class
        concepts' labels ``lab``): importance, mass (galleries), part masses; stability
        from their own ``partitions``."""
        self._add(self.importance_sum, self.importance_n, r, imp)
        self.importance_sq.index_add_(0, r, imp.nan_to_num(0.0) ** 2)
        if self.stability:
            stab = max_jaccard(lab.cpu(), partitions[sel.to(partitions.device)].cpu(), self.concepts.n_concepts)
            self._add(self.stability_sum, self.stability_n, r, stab)
        if masses is not None:
            self._add(self.mass_sum, self.mass_n, r, masses)
        if self.k:
            if maps is None:  # one pass: the maps of the gallery images come later (fill_maps)
                maps = torch.zeros(*score.shape, *self.gallery_maps.shape[-2:])
            self._gallery(r, index[sel], score, maps)

    @torch.no_grad()
    def update(
        self,
        head: Callable[[Tensor], Tensor],
        activations: Tensor,
        partitions: Tensor | None,
        classes: Tensor,
        index: Tensor,
        targets: Tensor | None = None,
        masks: Tensor | None = None,
        keep: Tensor | None = None,
    ) -> None:
        """Add B images: activations B x C x h x w, their own ``partitions`` B x C (``-1``
        dropped; needed for stability), ``classes`` and dataset ``index`` (B), importance
        ``targets`` (default: the classes), part ``masks`` B x 3 x H x W bool (part A, part
        B, distractor; optional; series: B x 3 x L), ``keep`` B bool (False: not counted).

        Any head: the ablations go through ``head`` and the concept maps are drawn (the
        second pass); :meth:`update_pooled` is the same from a pooling + linear head's
        per-image numbers."""
        a = activations.detach()
        b, n = a.shape[0], self.concepts.n_concepts
        masks = None if masks is None else grid_2d(masks)  # series: B x 3 x L on the 1 x l grid
        classes, index, targets, keep = self._batch(b, classes, index, targets, keep, partitions, masks)
        if self.gallery_maps is None:
            self.gallery_maps = torch.zeros(len(self.concepts.groups), n, self.k, *a.shape[-2:])
        for rows in self.concepts.views(classes):
            sel = ((rows >= 0) & keep).nonzero().flatten()
            if not len(sel):
                continue
            r = rows[sel]
            a_s = a[sel.to(a.device)]
            lab = self.concepts.labels[r].to(a.device)
            head_s = head.select(sel) if isinstance(head, BatchHead) else head  # a head bound to the batch
            imp = concept_importance(head_s, a_s, lab, targets[sel].to(a.device), n_concepts=n).cpu()
            raw = raw_concept_maps(a_s, lab, n_concepts=n)
            score = raw.flatten(2).sum(-1).double().cpu()
            masses = None if masks is None else part_masses(raw, masks[sel.to(masks.device)])
            self._record(r, sel, lab, partitions, index, imp, score, masses, raw.float().cpu())

    @torch.no_grad()
    def update_pooled(
        self,
        linear: Callable[[Tensor], Tensor],
        pooled: PooledActivations,
        partitions: Tensor | None,
        classes: Tensor,
        index: Tensor,
        targets: Tensor | None = None,
        keep: Tensor | None = None,
    ) -> None:
        """:meth:`update` from B images' :class:`~.pooled.PooledActivations` for a head
        ``linear(pool(A))`` (the part masses where they hold regions): the same scores
        to float rounding, without the activations. The galleries' maps stay empty until
        :meth:`fill_maps`. Needs ``map_size`` (the galleries' shape)."""
        b, n = len(pooled), self.concepts.n_concepts
        classes, index, targets, keep = self._batch(b, classes, index, targets, keep, partitions)
        if self.gallery_maps is None:
            raise UserError("update_pooled needs the scorer's map_size (the galleries' map shape)")
        sel, r = [], []  # (image, group) pairs of every scope, at once
        for rows in self.concepts.views(classes):
            at = ((rows >= 0) & keep).nonzero().flatten()
            sel.append(at)
            r.append(rows[at])
        sel, r = torch.cat(sel), torch.cat(r)
        if not len(sel):
            return
        p = pooled.select(sel)
        labels = self.concepts.labels
        imp = p.importance(linear, labels, r, targets[sel], n)
        masses = None if p.regions is None else p.part_masses(_onehot(labels[r], n, torch.float64))
        self._record(r, sel, labels[r], partitions, index, imp, p.mass(labels, r, n), masses, None)

    @torch.no_grad()
    def fill_maps(self, index: Tensor, activations: Tensor, groups: Sequence[int] | None = None) -> None:
        """The galleries' maps of the groups ``groups`` (None: all) from their images'
        activations (``index``: their dataset indices, B; ``activations``: B x C x h x w):
        what :meth:`update_pooled` leaves empty; the slots of other images are left as they are
        (so the images may come in several calls)."""
        pos = {int(i): j for j, i in enumerate(torch.as_tensor(index).view(-1).tolist())}
        if self.gallery_maps is None or not pos:
            return
        for g in range(len(self.concepts.groups)):
            if groups is not None and self.concepts.groups[g] not in groups:
                continue
            slots = self.gallery_index[g]  # n x k
            used = torch.tensor([(c, s) for c, s in (slots >= 0).nonzero().tolist() if int(slots[c, s]) in pos],
                                dtype=torch.long).view(-1, 2)
            if not len(used):
                continue
            rows = torch.tensor([pos[int(slots[c, s])] for c, s in used.tolist()])
            a = activations[rows.to(activations.device)]
            lab = self.concepts.labels[g].to(a.device).expand(len(rows), -1)
            raw = raw_concept_maps(a, lab, n_concepts=self.concepts.n_concepts)  # M x n x h x w
            pick = raw[torch.arange(len(rows), device=raw.device), used[:, 0].to(raw.device)]
            self.gallery_maps[g, used[:, 0], used[:, 1]] = pick.float().cpu()

    def _gallery(self, rows: Tensor, index: Tensor, score: Tensor, maps: Tensor) -> None:
        for g in rows.unique().tolist():
            m = rows == g
            cand_s = torch.cat([self.gallery_score[g], score[m].T], 1)
            cand_i = torch.cat([self.gallery_index[g], index[m].expand(score.shape[1], -1)], 1)
            cand_m = torch.cat([self.gallery_maps[g], maps[m].transpose(0, 1)], 1)
            self.gallery_score[g], self.gallery_index[g], self.gallery_maps[g] = _top_k(cand_s, cand_i, cand_m, self.k)

    # -- ranks ---------------------------------------------------------------------------------
    def state(self) -> dict[str, Tensor]:
        """Every running tensor: all-gather each (world x ...) and rebuild with :meth:`merged`."""
        if self.gallery_maps is None:
            raise RuntimeError("no batch seen and no map_size given: the gallery has no shape")
        return {k: getattr(self, k) for k in (*_SUMS, *_GALLERY)}

    def merge(self, other: ClassConceptScores | Mapping[str, Tensor]) -> ClassConceptScores:
        """Add another scorer's (or state's) sums and merge its galleries, in place."""
        st = other.state() if isinstance(other, ClassConceptScores) else other
        for k in _SUMS:
            getattr(self, k).add_(st[k].to(getattr(self, k).device, getattr(self, k).dtype))
        if self.gallery_maps is None:
            self.gallery_maps = torch.zeros_like(st["gallery_maps"].cpu())
        s = torch.cat([self.gallery_score, st["gallery_score"].cpu().double()], -1)
        i = torch.cat([self.gallery_index, st["gallery_index"].cpu().long()], -1)
        m = torch.cat([self.gallery_maps, st["gallery_maps"].cpu().float()], 2)
        self.gallery_score, self.gallery_index, self.gallery_maps = _top_k(s, i, m, self.k)
        return self

    @classmethod
    def merged(cls, concepts: ClassConcepts, states: Sequence[Mapping[str, Tensor]],
               gallery_size: int = 6, stability: bool = True) -> ClassConceptScores:
        """One scorer from the states of several ranks (e.g. ``all_gather`` output split by rank)."""
        first = states[0]["gallery_maps"]
        out = cls(concepts, gallery_size, stability, map_size=tuple(first.shape[-2:]))
        for st in states:
            out.merge(st)
        return out

    # -- results -------------------------------------------------------------------------------
    def summary(self) -> dict[str, Tensor]:
        """G x n means: ``stability`` (NaN for groups of one image), ``importance``,
        ``importance_std`` (ddof 1), ``masses`` (G x n x 3); NaN where nothing was counted."""
        def mean(total: Tensor, count: Tensor) -> Tensor:
            return torch.where(count > 0, total / count.clamp_min(1), math.nan)

        stab = mean(self.stability_sum, self.stability_n)
        stab[self.concepts.n_images < 2] = math.nan
        n = self.importance_n
        mu = mean(self.importance_sum, n)
        var = (self.importance_sq - n * mu.nan_to_num(0.0) ** 2) / (n - 1).clamp_min(1)
        std = torch.where(n > 1, var.clamp_min(0).sqrt(), math.nan)
        return {"stability": stab, "importance": mu, "importance_std": std,
                "masses": mean(self.mass_sum, self.mass_n)}

    def gallery(self, group: int) -> Gallery:
        """The gallery of one group (its class index, or DATASET)."""
        r = self.concepts.row(group)
        return Gallery(self.gallery_index[r], self.gallery_score[r], self.gallery_maps[r])


def group_truth(summary: Mapping[str, Tensor], row: int) -> dict[str, float]:
    """:data:`~clustercam.explain.concepts.vocabulary.CLASS_TRUTH_SCORES` of one group of
    a :meth:`ClassConceptScores.summary`: per part, the best class concept's mean relevance
    mass over the group's images (the maximum over its concepts); ``parts_in_top2``: 1 if
    the best concepts for part A and for part B are two different concepts and the two most
    important ones (NaN without the masses of both parts or two finite importances)."""
    masses, imp = summary["masses"][row], summary["importance"][row].tolist()
    out = []
    for p in range(3):
        col = masses[:, p]
        out.append(float(col[~col.isnan()].max()) if bool((~col.isnan()).any()) else math.nan)
    a, b = masses[:, 0], masses[:, 1]
    if bool(a.isnan().all() or b.isnan().all()) or sum(not math.isnan(v) for v in imp) < 2:
        return dict(zip(CLASS_TRUTH_SCORES, [*out, math.nan]))
    best = {int(a.nan_to_num(-1.0).argmax()), int(b.nan_to_num(-1.0).argmax())}
    out.append(float(len(best) == 2 and best == set(importance_order(imp)[:2])))
    return dict(zip(CLASS_TRUTH_SCORES, out))


def truth_by_group(scores: Mapping[str, ClassConceptScores | Sequence[ClassConceptScores]]
                   ) -> list[tuple[int, str, dict[str, float]]]:
    """Per group and source (in the order of ``scores``): (group, source, its
    :func:`group_truth`). A source given as a list (``random``: several random groupings)
    is averaged over its members, NaN members left out."""
    out = []
    first = next(iter(scores.values()))
    concepts = (first if isinstance(first, ClassConceptScores) else first[0]).concepts
    for g in concepts.groups:
        for source, sc in scores.items():
            members = [sc] if isinstance(sc, ClassConceptScores) else list(sc)
            vals = torch.tensor([list(group_truth(m.summary(), m.concepts.row(g)).values()) for m in members],
                                dtype=torch.float64)
            ok = ~vals.isnan()
            mean = torch.where(ok.any(0), vals.nan_to_num(0.0).sum(0) / ok.sum(0).clamp_min(1), math.nan)
            out.append((g, source, dict(zip(CLASS_TRUTH_SCORES, mean.tolist()))))
    return out
