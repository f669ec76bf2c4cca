"""Concept fidelity: deletion and insertion curves over whole concepts, against two controls.

Concepts are taken in the order of their importance ``I_l`` (paper eq. 3; ties by larger
size, then lower id; empty concepts last). Deletion: ``A_j`` = ``A`` with the channels of
the first ``j`` concepts zeroed, ``y_j = p_t(h(A_j)) / p_t(h(A))`` for j = 0..n (the
deletion AUC, trapezoid over x = j / n, is *low* when the important concepts carry the
prediction). Insertion: every kept channel zeroed except those of the first ``j``
concepts (AUC *high* is faithful). Controls, each a mean over ``repeats`` draws:
``random_order`` (the found concepts in random orders) and ``random_groups`` (the kept
channels dealt at random into groups with the found sizes, taken in the same size order).
Deleting in importance order beats random orders almost by construction, since the
importance *is* the single-deletion effect; ``random_groups`` is the informative control.

Every curve point of a batch is one channel mask; all of them go through the head in one
call (:mod:`.ablation`: a row of the linear layer each for a :class:`PooledHead`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.checks import check_activations
from clustercam.explain.concepts.image.ablation import (
    Head,
    PooledHead,
    group_shares,
    masked_target_probs,
)
from clustercam.explain.concepts.image.extract import concept_counts
from clustercam.explain.concepts.vocabulary import FIDELITY_AUCS, ORDERS
from clustercam.explain.deprecation import renamed_parameters

__all__ = ["ORDERS", "ConceptFidelity", "PooledHead", "concept_fidelity", "concept_order",
           "curve_auc", "masked_target_probs", "mean_curves", "random_partitions"]


def concept_order(importance: Tensor, sizes: Tensor) -> Tensor:
    """B x n concept ids by decreasing importance, ties by larger size then lower id; empty
    concepts (size 0 or NaN importance) last."""
    if importance.shape != sizes.shape:
        raise UserError(f"importance {tuple(importance.shape)} and sizes {tuple(sizes.shape)} differ")
    imp = importance.double().clone()
    empty = (sizes <= 0) | torch.isnan(imp)
    order = torch.arange(imp.shape[-1], device=imp.device).expand_as(imp).clone()
    for key in (-sizes.double(), torch.where(empty, math.inf, -imp)):  # least significant first
        idx = torch.argsort(key.gather(-1, order), dim=-1, stable=True)
        order = order.gather(-1, idx)
    return order


@renamed_parameters(labels="concept_labels")
def random_partitions(concept_labels: Tensor, n_concepts: int, repeats: int,
                      generator: torch.Generator | None = None) -> Tensor:
    """R x B x C labels: each image's kept channels (label >= 0) dealt at random into groups
    of the sizes of concepts 0..n-1 (group l as large as concept l); dropped channels -1."""
    if repeats < 1:
        raise UserError(f"repeats must be >= 1, got {repeats}")
    labels = concept_labels
    lab = labels.long().cpu()
    b, c = lab.shape
    keys = torch.rand(repeats, b, c, generator=generator, dtype=torch.float64)
    keys = keys.masked_fill((lab < 0).expand_as(keys), math.inf)
    # kept channels first, in random order: numpy's sort (vectorised: ~2x torch's) gives
    # the same order, the keys being distinct (the dropped channels' infinite keys, which may
    # come in any order, fill the slots past the kept ones: no group either way)
    slots = torch.from_numpy(np.argsort(keys.numpy(), axis=-1))
    # slot j -> the group whose size range holds j (n past the kept): the sorted labels
    cum = concept_counts(lab, n_concepts).cumsum(-1)
    values = torch.searchsorted(cum, torch.arange(c).expand(b, c).contiguous(), right=True)
    out = torch.empty_like(slots).scatter_(-1, slots, values.expand(repeats, b, c).contiguous())
    return out.masked_fill(out >= n_concepts, -1).to(labels.device)


def _curve_masks(labels: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
    """Deletion and insertion keep masks, ... x (n - 1) x C each, for the interior steps
    j = 1..n-1 (step 0 / n are the original and the all-zero activations)."""
    n = order.shape[-1]
    position = torch.empty_like(order).scatter_(
        -1, order, torch.arange(n, device=order.device).expand_as(order).contiguous())
    chan = torch.where(labels >= 0, position.gather(-1, labels.clamp_min(0)), n)  # ... x C
    j = torch.arange(1, n, device=labels.device).view(*([1] * (labels.dim() - 1)), n - 1, 1)
    chan = chan.unsqueeze(-2)
    return (chan >= j) & (chan < n), chan < j


@dataclass
class ConceptFidelity:
    """Deletion / insertion curves (B x n + 1, NaN past an image's non-empty concepts) and
    their AUCs (B) per order in :data:`ORDERS`; ``n_steps`` (B) non-empty concepts per
    image; ``p_target`` (B) the unablated ``p_t``; ``partitions`` (R x B x C) the random
    groups; ``partition_importance`` (R x B x n, % as eq. 3) if asked for."""

    deletion: dict[str, Tensor]
    insertion: dict[str, Tensor]
    n_steps: Tensor
    p_target: Tensor
    partitions: Tensor
    partition_importance: Tensor | None = None
    aucs: dict[str, dict[str, Tensor]] = field(init=False)

    def __post_init__(self) -> None:
        self.aucs = {o: {auc: curve_auc(curves[o], self.n_steps)
                         for auc, curves in zip(FIDELITY_AUCS, (self.deletion, self.insertion))}
                     for o in self.deletion}


def curve_auc(curves: Tensor, n_steps: Tensor) -> Tensor:
    """Trapezoid area of each curve over x = j / n_i, j = 0..n_i (NaN for n_i = 0)."""
    n = curves.shape[-1] - 1
    y = curves.double()
    seg = (y[..., 1:] + y[..., :-1]) / 2  # ... x n
    valid = torch.arange(n, device=y.device) < n_steps.to(y.device).unsqueeze(-1)
    area = torch.where(valid, seg, 0.0).sum(-1) / n_steps.to(y.device).double()
    return torch.where(n_steps.to(y.device) > 0, area, math.nan)


def _full_curves(mid: Tensor, first: Tensor, last: Tensor, n_steps: Tensor) -> Tensor:
    """... x (n - 1) interior points -> ... x (n + 1) with the ends, NaN past n_i; each
    image's last point (j = n_i) is the end value."""
    n = mid.shape[-1] + 1
    full = torch.cat([first.expand(*mid.shape[:-1], 1), mid, last.expand(*mid.shape[:-1], 1)], -1)
    j = torch.arange(n + 1, device=mid.device)
    ns = n_steps.to(mid.device)
    full = torch.where(j == ns, last.expand_as(full), full)
    return full.masked_fill(j > ns, math.nan)


def _masked_probs(head: Head, a: Tensor, labels: Tensor, targets: Tensor, order: Tensor,
                  random_order: Tensor, parts: Tensor, partition_importance: bool,
                  max_rows: int, pooled_head: PooledHead | None = None) -> Tensor:
    """B x Q ``p_t`` of every curve point as a channel mask through the head: the original,
    nothing kept, then per order deletion and insertion ([R] x (n - 1) points each), then
    (``partition_importance``) each random group left out (R x n)."""
    b, c = labels.shape
    n, repeats, dev = order.shape[-1], parts.shape[0], a.device
    kept = labels >= 0
    blocks = [torch.ones(b, 1, c, dtype=torch.bool, device=dev),  # the original A
              torch.zeros(b, 1, c, dtype=torch.bool, device=dev)]  # nothing kept
    sets = {"importance": _curve_masks(labels, order),
            "random_order": _curve_masks(labels.expand(repeats, b, c), random_order),
            "random_groups": _curve_masks(parts, order.expand(repeats, b, n))}
    for name in ORDERS:
        for m in sets[name]:  # deletion, insertion: ([R] x) B x (n - 1) x C
            blocks.append(m if m.dim() == 3 else m.permute(1, 0, 2, 3).flatten(1, 2))
    if partition_importance:
        ids = torch.arange(n, device=dev).view(1, 1, n, 1)
        without = (parts.unsqueeze(2) != ids) & kept[None, :, None]  # R x B x n x C
        blocks.append(without.permute(1, 0, 2, 3).flatten(1, 2))
    return masked_target_probs(head, a, torch.cat(blocks, 1), targets, pooled_head, max_rows)


def _grouped_probs(shares: tuple[Tensor, Tensor], targets: Tensor, order: Tensor,
                   random_order: Tensor, partition_importance: bool) -> Tensor:
    """The same B x Q ``p_t`` as :func:`_masked_probs`, from the groups' logit shares
    (:func:`~clustercam.explain.concepts.image.ablation.group_shares`; grouping 0 = the concepts,
    1..R = the random groups): every curve point keeps whole groups, so its logits are the
    bias plus a sum of shares, with no head call."""
    bias, sh = shares
    b, n = order.shape
    repeats = sh.shape[0] - 1
    concepts, rest = sh[0, :, :n], sh[0, :, n]  # B x n x K, B x K (channels in no concept)
    ids = torch.arange(n, device=order.device).expand(b, n)
    own = [torch.cat([concepts.sum(1) + rest, torch.zeros_like(rest)]).view(2, b, -1).transpose(0, 1)]
    for m in _curve_masks(ids, order):  # B x (n - 1) x n over the concepts
        own.append(torch.einsum("bqg,bgk->bqk", m.double(), concepts))
    for m in _curve_masks(ids.expand(repeats, b, n), random_order):
        own.append(torch.einsum("rbqg,bgk->brqk", m.double(), concepts).flatten(1, 2))
    groups = sh[1:, :, :n]  # R x B x n x K
    for m in _curve_masks(ids.expand(repeats, b, n), order.expand(repeats, b, n)):
        own.append(torch.einsum("rbqg,rbgk->brqk", m.double(), groups).flatten(1, 2))
    if partition_importance:
        without = (ids.unsqueeze(-1) != torch.arange(n, device=order.device)).double()  # B x n x n
        own.append(torch.einsum("bqg,rbgk->brqk", without, groups).flatten(1, 2))
    # p_t = 1 / sum_k exp(z_k - z_t), block by block: the softmax's value at t without
    # concatenating or normalising B x Q x classes (exp overflows to inf only where p_t ~ 0)
    p_t = []
    for z in own:
        z = z + bias
        z_t = z.gather(2, targets.view(b, 1, 1).expand(b, z.shape[1], 1))
        p_t.append(z.sub_(z_t).exp_().sum(-1).reciprocal_())
    return torch.cat(p_t, 1)


@torch.no_grad()
@renamed_parameters(labels="concept_labels")
def concept_fidelity(
    head: Head,
    activations: Tensor,
    concept_labels: Tensor,
    targets: Tensor,
    importance: Tensor,
    *,
    n_concepts: int | None = None,
    repeats: int = 10,
    seed: int = 0,
    pooled_head: PooledHead | None = None,
    partition_importance: bool = False,
    max_rows: int = 1024,
) -> ConceptFidelity:
    """Deletion / insertion curves of B images' concepts in importance order and the two
    controls (``repeats`` random orders; ``repeats`` random channel groups of the found sizes).

    ``concept_labels`` (B x C, -1 = dropped channel) and ``importance`` (B x n, eq. 3) as from
    :func:`~clustercam.explain.concepts.cluster_channels` and
    :func:`~clustercam.explain.concepts.concept_importance`; ``targets`` (B) the explained
    classes. All masked activations go through the head in one call (see
    :func:`masked_target_probs`). With ``partition_importance`` also the importance of
    every random group (the random-partition control of the localisation scores).

    Example:
        >>> import torch
        >>> from clustercam.explain.concepts.image.fidelity import concept_fidelity
        >>> w = torch.zeros(2, 4); w[0, :2] = 4.0         # class 0 reads channels 0 and 1 only
        >>> head = lambda a: a.mean((2, 3)) @ w.T
        >>> a = torch.ones(1, 4, 2, 2)
        >>> labels = torch.tensor([[0, 0, 1, 1]])         # concept 0 = channels 0, 1
        >>> fid = concept_fidelity(head, a, labels, torch.tensor([0]), torch.tensor([[50.0, 0.0]]))
        >>> [round(v, 3) for v in fid.deletion["importance"][0].tolist()]  # p_t: 1, 0.5 / 0.9997
        [1.0, 0.5, 0.5]
        >>> round(float(fid.aucs["importance"]["deletion_auc"][0]), 3)
        0.625
    """
    check_activations(activations, warn_negative=False)
    a, labels = activations.detach(), concept_labels
    b, c = a.shape[:2]
    if labels.shape != (b, c):
        raise UserError(f"concept_labels must be B x C = {(b, c)}, got {tuple(labels.shape)}")
    n = importance.shape[1] if n_concepts is None else int(n_concepts)
    if importance.shape != (b, n):
        raise UserError(f"importance must be B x n_concepts = {(b, n)}, got {tuple(importance.shape)}")
    if n < 1:
        raise UserError(f"n_concepts must be >= 1, got {n}")
    dev = a.device
    labels = labels.long().to(dev)
    sizes = concept_counts(labels, n).to(dev)
    n_steps = (sizes > 0).sum(1)
    order = concept_order(importance.to(dev), sizes)
    gen = torch.Generator().manual_seed(int(seed))
    keys = torch.rand(repeats, b, n, generator=gen, dtype=torch.float64).to(dev)
    random_order = torch.argsort(keys.masked_fill((sizes == 0).expand_as(keys), math.inf), -1)
    parts = random_partitions(labels, n, repeats, gen).to(dev)
    shares = group_shares(head, a, torch.cat([labels.unsqueeze(0), parts]), n, pooled_head)
    if shares is not None:
        probs = _grouped_probs(shares, targets.long().to(dev), order, random_order, partition_importance)
    else:
        probs = _masked_probs(head, a, labels, targets, order, random_order, parts,
                              partition_importance, max_rows, pooled_head)
    p_t = probs[:, 0]
    y = probs / p_t.unsqueeze(1)
    one, zero = torch.ones(b, 1, 1, dtype=torch.float64, device=dev), y[:, 1:2].unsqueeze(1)
    deletion, insertion, pos, k = {}, {}, 2, n - 1
    for name in ORDERS:
        r = 1 if name == "importance" else repeats
        for curves, start, end in ((deletion, one, zero), (insertion, zero, one)):
            mid = y[:, pos: pos + r * k].view(b, r, k)
            pos += r * k
            curves[name] = _full_curves(mid, start, end, n_steps.view(b, 1, 1)).nanmean(1)
    p_imp = None
    if partition_importance:
        p_l = probs[:, pos: pos + repeats * n].view(b, repeats, n).permute(1, 0, 2)
        p_imp = ((p_t.view(1, b, 1) - p_l) / p_t.view(1, b, 1) * 100)
        p_imp = p_imp.masked_fill((sizes == 0).expand_as(p_imp), math.nan)
    return ConceptFidelity(deletion, insertion, n_steps.cpu(), p_t.cpu(), parts.cpu(),
                           p_imp.cpu() if p_imp is not None else None)


def mean_curves(deletion: Mapping[str, Tensor], insertion: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Per order, the mean curve over images at x = j / n (NaN points left out)."""
    return {o: {"deletion": deletion[o].nanmean(0), "insertion": insertion[o].nanmean(0)}
            for o in deletion}
