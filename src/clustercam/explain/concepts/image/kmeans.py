"""Batched PCA and k-means in torch: every image (and every restart) of a batch at once.

Each image is its own problem: P problems of N points (the kept channels, padded to the
largest count and masked) in d dimensions run side by side on any device, with the random
numbers of each problem drawn from its own generator so a result does not depend on which
other images share the batch, on the DDP rank, or on the device.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.parallel import call_all, cpu_workers, one_thread


def _eigh_vectors(cov: Tensor) -> Tensor:
    """Eigenvectors of a batch of small symmetric matrices (ascending eigenvalues): one
    LAPACK thread per matrix (see :func:`~.parallel.one_thread`), the batch split over
    torch's CPU threads in Python threads (LAPACK releases the GIL): 22 -> 12 ms for 80
    matrices of 64 x 64 on 2 cores. Each matrix is the same LAPACK call either way, and
    the result keeps eigh's column-major layout (the products that follow round by
    layout): same bits."""
    workers = min(cpu_workers(cov.device), len(cov) // 8)
    if workers < 2:
        with one_thread(cov.device):
            return torch.linalg.eigh(cov)[1]
    parts = [r.eigenvectors for r in call_all([partial(torch.linalg.eigh, m) for m in cov.tensor_split(workers)], workers)]
    return torch.cat([v.mT for v in parts]).mT  # LAPACK's column-major layout, as eigh's


def batched_pca(x: Tensor, mask: Tensor, n_components: int) -> Tensor:
    """Per-problem PCA scores: B x N x D -> B x N x n_components (zero rows where masked).

    Each problem is centred on its own valid rows; the components are the top eigenvectors
    of its covariance (D x D, small for 8 x 8 maps), all problems in one ``eigh`` call.
    Where D is more than twice N (long series: 128 channels over 500 time steps) the same
    scores come from the N x N Gram matrix ``xc xc^T`` (its eigenvectors times the square
    roots of the shared eigenvalues), a ~(D / N)^3 smaller eigenproblem.
    Signs are arbitrary, as in any PCA; clustering and the metrics do not depend on them.
    """
    m = mask.to(x.dtype).unsqueeze(-1)
    n = m.sum(1, keepdim=True).clamp_min(1)
    xm = x * m
    mean = xm.sum(1, keepdim=True) / n
    # the centred rows in x * m's buffer (one B x N x D buffer, not three: the same values)
    xc = (x - mean) * m if xm.requires_grad else torch.sub(x, mean, out=xm).mul_(m)
    k = min(n_components, x.shape[-1])
    if x.shape[-1] > 2 * x.shape[1]:
        gram = xc @ xc.transpose(1, 2)
        u = _eigh_vectors(gram)[..., -min(k, x.shape[1]):].flip(-1)  # B x N x k, masked rows 0
        vals = (u * (gram @ u)).sum(1, keepdim=True)
        scores = u * vals.clamp_min(0).sqrt()
        return torch.nn.functional.pad(scores, (0, k - scores.shape[-1]))  # k > N: zero scores, as eigh's
    cov = xc.transpose(1, 2) @ xc
    vecs = _eigh_vectors(cov)  # ascending eigenvalues
    comps = vecs[..., -k:].flip(-1)
    return xc @ comps



def _sqdist(xt: Tensor, xsq: Tensor, c: Tensor) -> Tensor:
    """Squared distances: x (transposed, Q x d x N; xsq = |x|^2, Q x N) against c Q x L x d
    -> Q x L x N (N contiguous: ~8x faster on CPU than Q x N x L at d <= 4, L = 3)."""
    d = torch.baddbmm(xsq.unsqueeze(1), c, xt, alpha=-2) + (c * c).sum(-1).unsqueeze(-1)
    return d.clamp_min_(0)


def _rows(x: Tensor, idx: Tensor) -> Tensor:
    """Rows of x (Q x N x d) at idx (Q x J) -> Q x J x d."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(*idx.shape, x.shape[-1]))


def _sample(weights: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF draws: row q picks index i with probability weights[q, i] / sum (u in (0, 1])."""
    cum = weights.cumsum(-1)
    idx = torch.searchsorted(cum, (u * cum[:, -1:]).contiguous())
    return idx.clamp_max(weights.shape[-1] - 1)


def kmeans_pp_uniforms(n_problems: int, n_init: int, k: int, seed: int, device: torch.device) -> Tensor:
    """The random numbers of k-means++ seeding: P x n_init x (1 + (k - 1) * (2 + log k)).

    Every problem (image) draws from its own generator seeded with ``seed`` (as
    scikit-learn's ``random_state=seed`` per image), so an image's concepts do not depend
    on which other images share its batch, on the DDP rank, or on the device.
    """
    n_local = 2 + int(math.log(k))
    gen = torch.Generator().manual_seed(int(seed))
    u = 1 - torch.rand(n_init, 1 + (k - 1) * n_local, generator=gen, dtype=torch.float64)
    return u.to(device).expand(n_problems, -1, -1)


def _kmeans_pp(x: Tensor, xt: Tensor, xsq: Tensor, valid: Tensor, k: int, u: Tensor) -> Tensor:
    """Greedy k-means++ seeding of Q problems (``2 + log(k)`` candidates per centre).

    ``x``: Q x N x d points, ``xt`` the same transposed (Q x d x N), ``xsq`` = |x|^2
    (Q x N); ``u``: Q x (1 + (k - 1) * n_local) uniforms in (0, 1], see
    :func:`kmeans_pp_uniforms`.
    """
    q, n, d = x.shape
    vf = valid.to(x.dtype)
    n_local = 2 + int(math.log(k))
    u = u.to(x.dtype)
    first = _sample(vf, u[:, :1])  # Q x 1, uniform over the valid rows
    centres = [_rows(x, first)]
    closest = _sqdist(xt, xsq, centres[0]).squeeze(1) * vf  # Q x N
    for step in range(1, k):
        weights = torch.where(closest.sum(1, keepdim=True) > 0, closest, vf)  # duplicates: uniform
        cand = _sample(weights, u[:, 1 + (step - 1) * n_local: 1 + step * n_local])  # Q x L
        cpts = _rows(x, cand)
        new = torch.minimum(closest.unsqueeze(1), _sqdist(xt, xsq, cpts)) * vf.unsqueeze(1)  # Q x L x N
        best = new.sum(2).argmin(-1)  # Q
        closest = torch.gather(new, 1, best.view(q, 1, 1).expand(q, 1, n)).squeeze(1)
        centres.append(torch.gather(cpts, 1, best.view(q, 1, 1).expand(q, 1, d)))
    return torch.cat(centres, 1)


def _min_over_clusters(score: Tensor) -> tuple[Tensor, Tensor]:
    """``score.min(1)`` of a Q x K x N score for small K: the values (``amin``) and the first
    index reaching them, one pass per cluster over Q x N. The same values and labels (ties
    go to the first cluster) at a fraction of the cost: torch's ``min`` with indices over a
    strided dimension runs ~4x slower on CPU (7.3 vs 1.7 ms, 160 x 5 x 2,048)."""
    best = score.amin(1)
    k = score.shape[1]
    if k == 1:
        return best, torch.zeros_like(best, dtype=torch.long)
    differs = score != best.unsqueeze(1)
    before = differs[:, 0].clone()  # no cluster up to this one reaches the minimum
    lab = before.to(torch.uint8 if k <= 256 else torch.long)
    for j in range(1, k - 1):
        before &= differs[:, j]
        lab += before
    return best, lab.long()


def _lloyd_step(
    xt: Tensor, xe: Tensor, c: Tensor, xsq: Tensor, vf: Tensor, ids: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One Lloyd iteration for Q problems: labels (Q x N), new centres (Q x K x d) and
    whether a problem had an empty cluster whose centre moved (Q).

    ``xt`` is x transposed (Q x d x N); ``xe`` stacks ``xt * vf`` and the validity weights
    ``vf`` (Q x (d + 1) x N). ``xsq`` = |x|^2 and ``vf`` are those of all problems, of
    which these are rows ``ids`` (only read to move an empty cluster, which is rare). The
    assignment only needs ``|c|^2 - 2 c.x``, computed as Q x K x N (one ``baddbmm``,
    reduced over K which is not the contiguous dimension: fast on CPU); sums and counts
    come from one ``scatter_add`` of ``xe`` along N, the contiguous dimension (2x faster
    than along the rows of Q x N x d, the same additions in the same order; a one-hot
    ``bmm`` is faster still but rounds the float32 sums differently and changed 17 of the
    benchmark's 7,360 partitions).
    """
    q, d, n = xt.shape
    k = c.shape[1]
    score = torch.baddbmm((c * c).sum(-1).unsqueeze(-1), c, xt, alpha=-2)  # Q x K x N
    best, lab = _min_over_clusters(score)  # Q x N
    acc = torch.zeros(q, d + 1, k, dtype=xt.dtype, device=xt.device).scatter_add_(
        2, lab.unsqueeze(1).expand(q, d + 1, n), xe)
    counts = acc[:, d]
    new_c = acc[:, :d].transpose(1, 2) / counts.clamp_min(1).unsqueeze(-1)
    empty = counts == 0
    moved = empty.any(1)
    if bool(moved.any()):  # move empty clusters onto the points farthest from their centres
        e = moved.nonzero().flatten()
        ve = vf[ids[e]]
        mind = (best[e] + xsq[ids[e]]) * ve - (1 - ve)
        far = mind.topk(k, dim=-1).indices  # E x K
        rank = (empty[e].long().cumsum(-1) - 1).clamp_min(0)
        pts = torch.gather(xt[e], 2, torch.gather(far, 1, rank).unsqueeze(1).expand(len(e), d, k))
        new_c[e] = torch.where(empty[e].unsqueeze(-1), pts.transpose(1, 2), new_c[e])
    return lab, new_c, moved


def batched_kmeans(
    x: Tensor,
    mask: Tensor,
    n_clusters: int,
    *,
    n_init: int = 10,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> tuple[Tensor, Tensor, Tensor]:
    """k-means on P independent problems at once: x P x N x d, mask P x N (valid rows).

    Greedy k-means++ seeding (as scikit-learn; each problem's random numbers come from its
    own generator seeded with ``seed``, so a problem's result does not depend on the
    others in the batch), ``n_init`` restarts run side by side as P x n_init problems,
    Lloyd iterations until the labels stop changing or the centre
    shift falls below ``tol`` x the mean feature variance (scikit-learn's criteria).
    A problem leaves the working batch in the iteration it converges, so it costs its own
    iterations only. Empty clusters move to the points farthest from their centres. Keeps the
    restart with the lowest inertia. Every problem needs at least ``n_clusters`` valid
    rows. Returns labels (P x N, ``-1`` where masked), centres (P x K x d), inertia (P).
    """
    p, n, d = x.shape
    k, r = n_clusters, n_init
    dev, dt = x.device, x.dtype
    valid = mask.bool()
    if bool((valid.sum(1) < k).any()):
        raise UserError(f"every problem needs at least n_clusters={k} valid rows")
    w = valid.to(dt)
    cnt = w.sum(1, keepdim=True)
    mean = (x * w[..., None]).sum(1) / cnt
    var = (((x - mean[:, None]) ** 2) * w[..., None]).sum(1) / cnt
    tol_q = (var.mean(-1) * tol).repeat_interleave(r)  # Q
    xq = x.repeat_interleave(r, 0)  # Q x N x d, restarts of a problem are adjacent
    vq = valid.repeat_interleave(r, 0)
    vfq = vq.to(dt)
    xsq = (xq * xq).sum(-1)  # Q x N
    u = kmeans_pp_uniforms(p, r, k, seed, dev).reshape(p * r, -1)
    xt = xq.transpose(1, 2).contiguous()
    c = _kmeans_pp(xq, xt, xsq, vq, k, u)

    xe = torch.cat([xt * vfq.unsqueeze(1), vfq.unsqueeze(1)], 1)  # Q x (d + 1) x N
    # the working set holds the problems still iterating: a converged problem's centres are
    # stored in the iteration it converges; it leaves the set once a quarter of the set has
    # converged (each removal copies the set), so each problem costs about its own iterations
    ids = torch.arange(p * r, device=dev)
    w_xt, w_xe, w_c, w_tol = xt, xe, c, tol_q
    w_lab: Tensor | None = None  # kept only while needed: see below
    exact = dev.type == "cpu"  # CUDA's scatter_add sums in no fixed order: compare labels there
    live = torch.ones(len(ids), dtype=torch.bool, device=dev)
    moved = torch.zeros(len(ids), dtype=torch.bool, device=dev)  # w_c has a relocated centre
    for _ in range(max_iter):
        lab, new_c, empty = _lloyd_step(w_xt, w_xe, w_c, xsq, vfq, ids)
        act = (((new_c - w_c) ** 2).sum((1, 2)) > w_tol) & live
        # unchanged labels give bit-identical means, so "labels unchanged" (scikit-learn's
        # strict convergence) already shows as a zero shift unless the centres being
        # compared came from a relocation: only then are the labels compared (and kept)
        if w_lab is not None:
            act &= ~((moved | (not exact)) & (lab == w_lab).all(1))
        done = live & ~act
        if bool(done.any()):
            c[ids[done]] = new_c[done]
        w_c, live, moved = new_c, act, empty
        w_lab = lab if not exact or bool(empty.any()) else None
        n_act = int(act.sum())
        if n_act == 0:
            break
        if n_act <= 0.75 * len(ids):
            keep = act.nonzero().flatten()
            ids, live, moved = ids[keep], live[keep], moved[keep]
            w_xt, w_xe, w_c, w_tol = w_xt[keep], w_xe[keep], w_c[keep], w_tol[keep]
            w_lab = None if w_lab is None else w_lab[keep]
    else:
        c[ids[live]] = w_c[live]
    score = torch.baddbmm((c * c).sum(-1).unsqueeze(-1), c, xt, alpha=-2)
    best, lab = _min_over_clusters(score)
    inertia = ((best + xsq).clamp_min(0) * vfq).sum(-1).view(p, r)
    pick_r = inertia.argmin(1)
    pick = torch.arange(p, device=dev) * r + pick_r
    return (lab[pick].masked_fill(~valid, -1), c[pick],
            inertia.gather(1, pick_r[:, None]).squeeze(1))


def _buckets(ks: Tensor, n_kept: Tensor, fill: float = 0.6) -> list[tuple[int, Tensor]]:
    """Problems grouped by k, then by kept-row count so that padding stays small: a bucket
    takes problems (largest first) down to ``fill`` x its largest count. Results do not
    depend on the grouping (padding rows are masked; each problem draws its own numbers)."""
    out = []
    for k in sorted(set(ks.tolist())):
        sel = (ks == k).nonzero().flatten()
        order = sel[torch.argsort(n_kept[sel], descending=True, stable=True)]
        counts = n_kept[order].tolist()
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and counts[end] >= fill * counts[start]:
                end += 1
            out.append((k, order[start:end].sort().values))
            start = end
    return out


def cluster_rows(
    raw: Tensor, mask: Tensor, ks: Tensor, pca: bool, dtype: torch.dtype = torch.float32,
    seed: int = 0, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
    source: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """k-means of P problems at once: the rows of ``raw[source[p]]`` (``raw``: S x C x F;
    ``source`` P indices, default ``arange(S)``) where ``mask[p]`` (P x C), problem p into
    ``ks[p]`` clusters, after a PCA to ``ks[p] - 1`` dimensions if ``pca`` (CGAP).
    ``source`` lets several problems (the parents of one image's sub-concepts) share one
    image's rows: only their kept rows are copied, not P x C x F.

    Kept rows first (stable, so in channel order), padded to the largest count of a bucket:
    the cost follows the kept rows, not C. Problems with the same k and similar counts
    (:func:`_buckets`) share one batched PCA and one batched k-means. Returns labels P x C (``-1`` outside ``mask``) and the clustered space
    P x C x dims (float64, zero rows outside ``mask``; dims = max(ks) - 1 for PCA, else F,
    zero-padded for problems with fewer).
    """
    _, c, f = raw.shape
    p, dev = mask.shape[0], raw.device
    src = torch.arange(p, device=dev) if source is None else source.to(dev)
    flat = raw.reshape(-1, f)
    labels = torch.full((p, c), -1, dtype=torch.long, device=dev)
    dims = min(int(ks.max()) - 1, f) if pca else f
    space = torch.zeros(p, c, dims, dtype=torch.float64, device=dev)
    n_all = mask.sum(1)
    for k, sel in _buckets(ks, n_all):
        m_sel = mask[sel]
        n_kept = n_all[sel]
        order = torch.argsort((~m_sel).to(torch.uint8), dim=1, stable=True)[:, : int(n_kept.max())]
        m_cmp = torch.arange(order.shape[1], device=dev) < n_kept[:, None]
        rows = (src[sel, None] * c + order).flatten()
        x_cmp = flat.index_select(0, rows).view(*order.shape, f)
        z = batched_pca(x_cmp, m_cmp, k - 1) if pca else x_cmp
        lab, _, _ = batched_kmeans(z.to(dtype), m_cmp, k, n_init=n_init, seed=seed,
                                   max_iter=max_iter, tol=tol)
        labels[sel] = torch.full((len(sel), c), -1, dtype=torch.long, device=dev).scatter(1, order, lab)
        z = torch.nn.functional.pad(z.double() * m_cmp.unsqueeze(-1), (0, dims - z.shape[-1]))
        space[sel] = torch.zeros(len(sel), c, dims, dtype=torch.float64, device=dev).scatter(
            1, order.unsqueeze(-1).expand(*order.shape, dims), z)
    return labels, space
