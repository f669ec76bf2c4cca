"""Ablations through the head: ``p_t`` of ``h(A * keep)`` for many channel masks at once.

Every importance (paper eq. 3) and every fidelity curve point is such a mask. For a head
that is a channel-wise pooling followed by one linear layer (:class:`PooledHead`, e.g.
timm's average pool + fc), zeroing channels commutes with the pooling, so each mask costs
one row of the linear layer instead of a copy of ``A`` through the head.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Head = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class PooledHead:
    """``h(A) = linear(pool(A))`` with ``pool`` B x C x H x W -> B x C acting per channel.

    Declared by a model (``ClassifierModule.pooled_head``) whose head has that form, so
    that ablations are rows of the linear layer. :func:`masked_target_probs` checks the
    claim on the first images and falls back to the full head (with a warning) if not;
    ``checked`` (set by :func:`checked_pooled_head`) skips the check: a batch's pipeline
    checks once, not in each of its six ablation calls.
    """

    pool: Callable[[Tensor], Tensor]
    linear: Callable[[Tensor], Tensor]
    checked: bool = False


def _check_pooled(head: Head, pooled: PooledHead, a: Tensor) -> bool:
    """Whether ``linear(pool(A * m)) == head(A * m)`` on a few images and a random mask."""
    k = min(2, a.shape[0])
    g = torch.Generator().manual_seed(0)
    m = (torch.rand(k, a.shape[1], generator=g) < 0.5).to(a.device, a.dtype)
    ref = head(a[:k] * m[..., None, None])
    got = pooled.linear(pooled.pool(a[:k]) * m)
    return ref.shape == got.shape and bool(torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * (1 + float(ref.abs().max()))))


def _usable(head: Head, pooled: PooledHead | None, a: Tensor) -> bool:
    """Whether to go through ``pooled`` (checked; a warning when it fails the check)."""
    if pooled is None:
        return False
    if pooled.checked or _check_pooled(head, pooled, a):
        return True
    warnings.warn("pooled_head does not reproduce the head on masked activations "
                  "(not a channel-wise pooling + linear layer?): using the full head",
                  RuntimeWarning, stacklevel=3)
    return False


@torch.no_grad()
def checked_pooled_head(head: Head, pooled: PooledHead | None, activations: Tensor) -> PooledHead | None:
    """``pooled`` marked as checked against ``head`` on these activations, or None when it
    is None or fails the check (with the warning of :func:`masked_probs`)."""
    if not _usable(head, pooled, activations):
        return None
    return pooled if pooled.checked else dataclasses.replace(pooled, checked=True)


@torch.no_grad()
def masked_probs(
    head: Head,
    activations: Tensor,
    keep: Tensor,
    targets: Tensor | None = None,
    pooled_head: PooledHead | None = None,
    max_rows: int = 1024,
) -> Tensor:
    """Softmax (float64) of ``h(A * keep[:, q])`` for Q channel masks per image: B x Q x
    classes, or with ``targets`` (B) only ``p_t``, B x Q.

    ``keep``: B x Q x C (bool or 0/1). With a :class:`PooledHead` (checked) all B x Q rows go
    through its linear layer at once; otherwise copies of ``A`` through ``head`` in calls
    of at most ``max_rows`` (one call when B x Q fits).
    """
    b, q, c = keep.shape
    a = activations
    t = None if targets is None else targets.long().to(a.device).view(b, 1)
    keep = keep.to(a.device, a.dtype)

    def probs_of(logits: Tensor, s: int, e: int) -> Tensor:  # images s..e-1, Q rows each
        probs = torch.softmax(logits.double(), -1)
        return probs.view(e - s, q, -1) if t is None else probs.gather(1, t[s:e].repeat_interleave(q, 0)).view(e - s, q)

    if _usable(head, pooled_head, a):
        rows = pooled_head.pool(a).unsqueeze(1) * keep  # B x Q x C
        return probs_of(pooled_head.linear(rows.flatten(0, 1)), 0, b)
    parts = []
    per_call = max(1, max_rows // max(q, 1))
    for s in range(0, b, per_call):
        e = min(b, s + per_call)
        stacked = (a[s:e].unsqueeze(1) * keep[s:e, :, :, None, None]).flatten(0, 1)
        parts.append(probs_of(head(stacked), s, e))
    return torch.cat(parts)


@torch.no_grad()
def group_shares(
    head: Head, activations: Tensor, groups: Tensor, n_groups: int, pooled_head: PooledHead | None,
) -> tuple[Tensor, Tensor] | None:
    """Each channel group's share of the logits, for masks that are unions of groups.

    ``groups``: S x B x C group ids (S groupings of every image's channels, ``-1`` = in no
    group). With a (checked) :class:`PooledHead` ``h(A * keep) = b + sum_g keep_g W (pool(A)
    * 1_g)``, so a mask that keeps whole groups costs a sum of shares, and all groups of all
    groupings cost one linear call. Returns the bias (classes) and the shares S x B x (G + 1)
    x classes (float64; the last group: the channels in no group), or None without a pooled
    head (or when the check fails, with a warning).
    """
    a = activations
    if not _usable(head, pooled_head, a):
        return None
    s, b, c = groups.shape
    ids = torch.arange(n_groups + 1, device=a.device).view(-1, 1)
    g = torch.where(groups >= 0, groups, n_groups).to(a.device)
    rows = pooled_head.pool(a).unsqueeze(1) * (g.unsqueeze(-2) == ids).to(a.dtype)  # S x B x G+1 x C
    z = pooled_head.linear(torch.cat([rows.flatten(0, 2), rows.new_zeros(1, c)])).double()
    bias = z[-1]
    return bias, (z[:-1] - bias).view(s, b, n_groups + 1, -1)


def masked_target_probs(
    head: Head,
    activations: Tensor,
    keep: Tensor,
    targets: Tensor,
    pooled_head: PooledHead | None = None,
    max_rows: int = 1024,
) -> Tensor:
    """B x Q: ``p_t`` of ``h(A * keep[:, q])`` (:func:`masked_probs` with ``targets``)."""
    return masked_probs(head, activations, keep, targets, pooled_head, max_rows)
