"""Ablations through the head: ``p_t`` of ``h(A * keep)`` for many channel masks at once.

Every importance (paper eq. 3) and every fidelity curve point is such a mask. For a head
that is a channel-wise pooling followed by one linear layer (:class:`PooledHead`, e.g.
timm's average pool + fc), zeroing channels commutes with the pooling, so each mask costs
one row of the linear layer instead of a copy of ``A`` through the head.

A head that needs more than the activations (the rest of a network from an intermediate
layer needs the batch's inputs; a ViT's head needs the prefix tokens) is a
:class:`BatchHead`: bound to a batch of B images, it is told which image each row of
ablated activations belongs to. :func:`head_logits` calls either kind.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from clustercam.exceptions import UserError

Head = Callable[[Tensor], Tensor]


class BatchHead:
    """Logits from (ablated) activations of a batch of B images, by image.

    ``run(A_rows, rows)`` computes the logits of rows of activations (N x C x h x w) whose
    images are ``rows`` (N indices into the batch). ``head(A)`` is every image once
    (``A``: B rows); ``head(A, rows)`` any rows. ``max_rows``: rows per call (the ablation
    loops stay under it: a row may cost a whole forward pass).

    Example:
        >>> import torch
        >>> offsets = torch.tensor([[0.0, 1.0], [5.0, 0.0]])  # what each image adds to its logits
        >>> head = BatchHead(lambda a, rows: a.mean((2, 3))[:, :2] + offsets[rows], batch_size=2)
        >>> a = torch.zeros(2, 3, 1, 1)
        >>> head(a).tolist(), head(a[[1, 1]], torch.tensor([1, 1])).tolist()
        ([[0.0, 1.0], [5.0, 0.0]], [[5.0, 0.0], [5.0, 0.0]])
    """

    def __init__(self, run: Callable[[Tensor, Tensor], Tensor], batch_size: int, max_rows: int = 1024) -> None:
        self.run, self.batch_size, self.max_rows = run, int(batch_size), int(max_rows)

    def __call__(self, activations: Tensor, rows: Tensor | None = None) -> Tensor:
        if rows is None:
            if activations.shape[0] != self.batch_size:
                raise UserError(f"this head is bound to a batch of {self.batch_size} images, got activations "
                                f"of {activations.shape[0]}: pass the rows' images (head(a, rows)) or "
                                "select(rows) a subset first")
            rows = torch.arange(self.batch_size)
        rows = torch.as_tensor(rows, dtype=torch.long).view(-1)
        if len(rows) != activations.shape[0]:
            raise UserError(f"{len(rows)} row images for {activations.shape[0]} rows of activations")
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= self.batch_size):
            raise UserError(f"row images must be in [0, {self.batch_size}), got {rows.tolist()[:10]}")
        out = [self.run(activations[s: s + self.max_rows], rows[s: s + self.max_rows])
               for s in range(0, max(len(rows), 1), self.max_rows)]
        return torch.cat(out)

    def select(self, rows: Tensor) -> BatchHead:
        """The head of a subset of the batch (its images ``rows``, in that order)."""
        rows = torch.as_tensor(rows, dtype=torch.long).view(-1).cpu()
        return BatchHead(lambda a, r: self.run(a, rows[r.cpu()]), len(rows), self.max_rows)


def head_logits(head: Head, activations: Tensor, rows: Tensor) -> Tensor:
    """``head(A)`` for rows of activations whose images (in the batch) are ``rows``: a
    :class:`BatchHead` is told them, a plain head needs only the activations."""
    if isinstance(head, BatchHead):
        return head(activations, rows)
    return head(activations)


@dataclass(frozen=True)
class PooledHead:
    """``h(A) = linear(pool(A))`` with ``pool`` B x C x H x W -> B x C acting per channel.

    Declared by a model (``ClassifierModule.pooled_head``) whose head has that form, so
    that ablations are rows of the linear layer. :func:`masked_target_probs` checks the
    claim on the first images and falls back to the full head (with a warning) if not;
    ``checked`` (set by :func:`checked_pooled_head`) skips the check: a batch's pipeline
    checks once, not in each of its six ablation calls. ``affine``: ``linear`` is one
    linear layer (logits are sums of channel groups' shares, :func:`group_shares`); False
    for any other function of the pooled vector (e.g. a LayerNorm before the linear layer,
    as in ConvNeXt or a mean-pooled ViT): masks still commute with the pooling, so each
    ablation is one pooled row through ``linear``, only the shares' shortcut is gone.
    """

    pool: Callable[[Tensor], Tensor]
    linear: Callable[[Tensor], Tensor]
    checked: bool = False
    affine: bool = True


@torch.no_grad()
def check_pooled(head: Head, pooled: PooledHead, a: Tensor) -> bool:
    """Whether ``linear(pool(A * m)) == head(A * m)`` on a few images and a random mask."""
    k = min(2, a.shape[0])
    g = torch.Generator().manual_seed(0)
    m = (torch.rand(k, a.shape[1], generator=g) < 0.5).to(a.device, a.dtype)
    ref = head_logits(head, a[:k] * m[..., None, None], torch.arange(k))
    got = pooled.linear(pooled.pool(a[:k]) * m)
    return ref.shape == got.shape and bool(torch.allclose(got, ref, rtol=1e-3, atol=1e-4 * (1 + float(ref.abs().max()))))


def _usable(head: Head, pooled: PooledHead | None, a: Tensor) -> bool:
    """Whether to go through ``pooled`` (checked; a warning when it fails the check)."""
    if pooled is None:
        return False
    if pooled.checked or check_pooled(head, pooled, a):
        return True
    warnings.warn("pooled_head does not reproduce the head on masked activations "
                  "(not a channel-wise pooling + linear layer?): using the full head",
                  RuntimeWarning, stacklevel=3)
    return False


@torch.no_grad()
def checked_pooled_head(head: Head, pooled: PooledHead | None, activations: Tensor) -> PooledHead | None:
    """``pooled`` marked as checked against ``head`` on these activations, or None when it
    is None or fails the check (with the warning of :func:`masked_probs`).

    The one decision between the closed form (rows of the linear layer) and ablations
    through the head, for every caller that batches ablations of a head."""
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
    of at most ``max_rows`` (one call when B x Q fits; a :class:`BatchHead` may ask for
    fewer).
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
    max_rows = min(max_rows, getattr(head, "max_rows", max_rows))
    per_call = max(1, max_rows // max(q, 1))
    for s in range(0, b, per_call):
        e = min(b, s + per_call)
        stacked = (a[s:e].unsqueeze(1) * keep[s:e, :, :, None, None]).flatten(0, 1)
        rows = torch.arange(s, e).repeat_interleave(q)
        parts.append(probs_of(head_logits(head, stacked, rows), s, e))
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
    x classes (float64; the last group: the channels in no group), or None without an
    affine pooled head (or when the check fails, with a warning).
    """
    a = activations
    if pooled_head is None or not pooled_head.affine or not _usable(head, pooled_head, a):
        return None
    s, b, c = groups.shape
    groups = groups.to(a.device)
    pooled = pooled_head.pool(a).unsqueeze(1)  # B x 1 x C
    outside = groups < 0
    if s > 1 and bool((outside == outside[:1]).all()):
        # the same channels in no group in every grouping (the random groups deal the kept
        # channels): that row once per image. A row's logits do not depend on the other
        # rows of the linear call, so the shares are the same bits as with S copies
        ids = torch.arange(n_groups, device=a.device).view(-1, 1)
        rows = pooled * (groups.unsqueeze(-2) == ids).to(a.dtype)  # S x B x G x C
        rest = pooled[:, 0] * outside[0].to(a.dtype)  # B x C
        z = pooled_head.linear(torch.cat([rows.flatten(0, 2), rest, rest.new_zeros(1, c)])).double()
        bias = z[-1]
        shares = torch.empty(s, b, n_groups + 1, z.shape[-1], dtype=z.dtype, device=z.device)
        shares[:, :, :n_groups] = (z[: s * b * n_groups] - bias).view(s, b, n_groups, -1)
        shares[:, :, n_groups] = z[s * b * n_groups: -1] - bias
        return bias, shares
    ids = torch.arange(n_groups + 1, device=a.device).view(-1, 1)
    g = torch.where(groups >= 0, groups, n_groups)
    rows = pooled * (g.unsqueeze(-2) == ids).to(a.dtype)  # S x B x G+1 x C
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
