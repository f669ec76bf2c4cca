"""The factorisation baseline of class concepts: NMF of a class's activations, as in deep
feature factorisation (Collins et al., 2018) and CRAFT (Fel et al., 2023).

A class's activations form the non-negative matrix ``X`` of (images x positions) rows and
C columns; ``X ~ W H`` with rank ``n_class`` (scikit-learn NMF, init ``nndsvda``, seeded, stopping
tolerance :data:`NMF_TOL` = 1e-3: on random-weight nf_resnet50 activations of the 110
benchmark photos of 11 classes it stopped the
all-images fit after 53 iterations instead of 135 at scikit-learn's 1e-4, with 98.3 % of the
channels in the same concept, 99.3 % on average over the classes).
Channel c goes to the component that explains most of it, ``argmax_k ||W_k|| H_kc`` (the
norm removes NMF's scale ambiguity between W and H); channels with no loading are dropped.
The result is a :class:`~clustercam.explain.concepts.classes.coassociation.ClassConcepts`, so it is
scored exactly like the co-association concepts.

At most ``max_images`` images per class enter the matrix: the ones with the smallest
seeded hash of their dataset index (a bottom-k sample). Unlike a classic reservoir it does
not depend on the batch order or on how the images are split over DDP ranks, and two
samples merge exactly. Memory: ``max_images x C x H x W`` floats per class (105 MB for
200 images of 2048 x 8 x 8 in float32).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.classes.coassociation import (
    DATASET,
    NMF_TOL,
    SCOPES,
    ClassConcepts,
    group_name,
    number_by_size,
    warn_class,
)
from clustercam.explain.concepts.parallel import call_all

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
NMF_ITERATIONS = ".*Maximum number of iterations.*"  # scikit-learn's warning at max_iter: expected, ignored


@contextmanager
def nmf_environment() -> Iterator[None]:
    """What every NMF fit runs under: one BLAS thread (the solver's products have k columns,
    too thin to share; measured 6x faster than OpenBLAS's two threads on 2 busy cores, the
    same factors) and scikit-learn's max_iter warning (:data:`NMF_ITERATIONS`) ignored.
    Neither setting is thread-safe to change: threads running fits side by side leave both
    to the thread that started them."""
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.filterwarnings("ignore", message=NMF_ITERATIONS)
        yield


def sample_keys(index: Tensor, seed: int = 0) -> Tensor:
    """A seeded pseudo-random int64 key per dataset index (splitmix64): the sample order."""
    with np.errstate(over="ignore"):
        z = index.detach().cpu().numpy().astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(1)).astype(np.int64))


def _bottom(key: Tensor, idx: Tensor, k: int) -> Tensor:
    """Positions of the k smallest (key, index) pairs, one per index (repeats dropped)."""
    order = torch.argsort(idx, stable=True)
    order = order[torch.argsort(key[order], stable=True)]
    first = torch.ones(len(order), dtype=torch.bool)
    first[1:] = idx[order][1:] != idx[order][:-1]  # a repeat has the same key: adjacent
    return order[first][:k]


class NMFSample:
    """Up to ``max_images`` images' activations per class (bottom-k by :func:`sample_keys`).

    ``update(activations, classes, index)`` per batch; ``state()`` gives rows (``idx``,
    ``group``, ``key``, ``activations``) to gather over ranks (e.g. with the callbacks'
    ``gather_split``, which also drops sampler repeats); ``from_state`` rebuilds the sample.
    Scope ``both``: the dataset sample is the bottom-k of the union of the class samples
    (every image of the global bottom-k is in its class's bottom-k), so it costs nothing.
    """

    def __init__(self, max_images: int = 200, seed: int = 0, scope: str = "class") -> None:
        if int(max_images) < 1:
            raise UserError(f"max_images must be >= 1, got {max_images}")
        if scope not in SCOPES:
            raise UserError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.max_images, self.seed, self.scope = int(max_images), int(seed), scope
        self._chunks: dict[int, list[tuple[Tensor, Tensor, Tensor]]] = {}
        self._compacted: set[int] = set()  # groups stored as their bottom-k, one chunk

    def _add(self, group: int, key: Tensor, idx: Tensor, acts: Tensor) -> Tensor:
        """Offer a group's rows; returns which of them the sample took (bool)."""
        chunks = self._chunks.setdefault(group, [])
        stored = sum(len(c[0]) for c in chunks)
        new = torch.ones(len(key), dtype=torch.bool)
        if stored >= self.max_images:  # only images that can still enter
            keys = torch.cat([c[0] for c in chunks])
            cut = torch.kthvalue(keys, self.max_images).values
            new = key <= cut
            key, idx, acts = key[new], idx[new], acts[new]
        if len(key):
            chunks.append((key, idx, acts))
            self._compacted.discard(group)
        if stored + len(key) > 2 * self.max_images:
            self._compact(group)
        return new

    def _compact(self, group: int) -> tuple[Tensor, Tensor, Tensor]:
        """A group's bottom-k as one chunk (key, idx, activations), selected once: read
        again, it is the stored chunk itself (no copy, no change)."""
        chunks = self._chunks.get(group, [])
        if not chunks:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0)
        if group in self._compacted:
            return chunks[0]
        key, idx, acts = (torch.cat([c[j] for c in chunks]) for j in range(3))
        sel = _bottom(key, idx, self.max_images)
        self._chunks[group] = [(key[sel], idx[sel], acts[sel])]
        self._compacted.add(group)
        return self._chunks[group][0]

    def compact(self) -> NMFSample:
        """Select every group's bottom-k now: afterwards :meth:`activations` only reads,
        so threads may call it side by side."""
        for g in self.groups():
            self._compact(g)
        return self

    @torch.no_grad()
    def update(self, activations: Tensor, classes: Tensor, index: Tensor, keep: Tensor | None = None) -> Tensor:
        """Offer B images (``activations`` B x C x H x W, their classes and dataset indices);
        returns which of them the sample took (B bool): the only rows a later sample can hold,
        so a killed run's shards keep those alone (``resume=true``)."""
        if activations.ndim != 4:
            raise UserError(f"activations must be B x C x H x W, got {tuple(activations.shape)}")
        classes = torch.as_tensor(classes).view(-1).long().cpu()
        index = torch.as_tensor(index).view(-1).long().cpu()
        if not len(classes) == len(index) == len(activations):
            raise UserError(f"{len(activations)} images, {len(classes)} classes, {len(index)} indices")
        taken = torch.zeros(len(index), dtype=torch.bool)
        at = torch.arange(len(index))
        if keep is not None:
            keep = torch.as_tensor(keep, dtype=torch.bool).view(-1).cpu()
            activations, classes, index, at = activations[keep.to(activations.device)], classes[keep], index[keep], at[keep]
        if self.scope == "dataset":
            classes = torch.full_like(classes, DATASET)
        key = sample_keys(index, self.seed)
        acts = activations.detach().float().cpu()
        for g in classes.unique().tolist():
            rows = classes == g
            taken[at[rows][self._add(int(g), key[rows], index[rows], acts[rows])]] = True
        return taken

    def groups(self) -> list[int]:
        return sorted(self._chunks)

    def activations(self, group: int) -> Tensor:
        """The sampled images' activations of a group (m x C x H x W), in key order."""
        if group == DATASET and self.scope == "both":
            parts = [self._compact(g) for g in self.groups()]
            if not parts:
                return torch.zeros(0)
            key, idx = (torch.cat([p[j] for p in parts]) for j in range(2))
            sel = _bottom(key, idx, self.max_images)  # rows of the classes' samples, end to end
            owner = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor([len(p[0]) for p in parts]))[sel]
            start = torch.tensor([0] + [len(p[0]) for p in parts]).cumsum(0)
            out = parts[0][2].new_empty((len(sel), *parts[0][2].shape[1:]))  # the chosen rows only, not every class's
            for i, p in enumerate(parts):
                out[owner == i] = p[2][sel[owner == i] - start[i]]
            return out
        return self._compact(group)[2]

    def find(self, index: Sequence[int]) -> tuple[list[int], Tensor | None]:
        """Those of the dataset indices ``index`` that the sample holds, and their
        activations (m x C x H x W; None for none): the galleries' maps need no second look
        at an image the sample kept."""
        wanted = torch.as_tensor(list(index), dtype=torch.long)
        found_idx, found_acts = [], []
        for g in self.groups():
            _, idx, acts = self._compact(g)
            hit = torch.isin(idx, wanted)
            if bool(hit.any()):
                found_idx.append(idx[hit])
                found_acts.append(acts[hit])
        if not found_idx:
            return [], None
        return torch.cat(found_idx).tolist(), torch.cat(found_acts)  # an image is in one group's sample

    def state(self) -> dict[str, Tensor]:
        """All sampled rows: ``idx``, ``group``, ``key`` (long) and ``activations`` (float32)."""
        parts = [(g, *self._compact(g)) for g in self.groups()]
        parts = [p for p in parts if len(p[1])]
        if not parts:
            return {"idx": torch.zeros(0, dtype=torch.long), "group": torch.zeros(0, dtype=torch.long),
                    "key": torch.zeros(0, dtype=torch.long), "activations": torch.zeros(0, 1, 1, 1)}
        return {"idx": torch.cat([p[2] for p in parts]),
                "group": torch.cat([torch.full_like(p[2], p[0]) for p in parts]),
                "key": torch.cat([p[1] for p in parts]),
                "activations": torch.cat([p[3] for p in parts])}

    @classmethod
    def from_state(cls, state: Mapping[str, Tensor], max_images: int = 200, seed: int = 0,
                   scope: str = "class") -> NMFSample:
        """Rebuild (and re-select) from the rows of one or several ranks' :meth:`state`."""
        sample = cls(max_images, seed, scope)
        group, idx = state["group"].long().cpu(), state["idx"].long().cpu()
        acts = state["activations"].float().cpu()
        for g in group.unique().tolist():
            rows = group == g
            sample._add(int(g), sample_keys(idx[rows], seed), idx[rows], acts[rows])
            sample._compact(int(g))
        return sample

    def merge(self, other: NMFSample) -> NMFSample:
        """Add another sample's rows (in place): the same sample as one over all images."""
        for g in other.groups():
            key, idx, acts = other._compact(g)
            self._add(g, key, idx, acts)
            self._compact(g)
        return self


def nmf_channel_groups(x: Tensor | np.ndarray, n_components: int, seed: int = 0,
                       max_iter: int = 200, tol: float = NMF_TOL) -> Tensor:
    """C labels from the NMF of a non-negative rows x C matrix: channel c -> the component
    with the largest ``||W_k|| H_kc``; ``-1`` for channels with no loading (all-zero
    columns included). Components numbered by decreasing size.

    Example:
        >>> import torch
        >>> w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])   # 3 rows, 2 factors
        >>> h = torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
        >>> nmf_channel_groups(w @ h, 2).tolist()                   # channel 3: no loading
        [0, 0, 1, -1]
    """
    with nmf_environment():
        return _nmf_labels(x, n_components, seed, max_iter, tol)


def _nmf_labels(x: Tensor | np.ndarray, n_components: int, seed: int, max_iter: int, tol: float = NMF_TOL) -> Tensor:
    """:func:`nmf_channel_groups` under the caller's :func:`nmf_environment`."""
    from sklearn.decomposition import NMF
    from threadpoolctl import threadpool_limits

    x = torch.as_tensor(x).detach().cpu()
    x = x.float() if x.dtype != torch.float64 else x
    if x.ndim != 2:
        raise UserError(f"x must be rows x channels, got shape {tuple(x.shape)}")
    if len(x) and float(x.min()) < 0:
        raise UserError(f"NMF needs non-negative activations, got min {float(x.min()):.3g}")
    labels = torch.full((x.shape[1],), -1, dtype=torch.long)
    cols = (x > 0).any(0) if len(x) else torch.zeros(x.shape[1], dtype=torch.bool)
    k = min(int(n_components), int(cols.sum()), len(x))
    if k == 0:
        return labels
    xs = (x if bool(cols.all()) else x[:, cols]).numpy()  # the tensor's memory where no column is all zero
    model = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=max_iter, tol=tol)
    # one OpenMP thread (a per-thread setting, safe in threads): the solver's stopping test
    # sums its violation over OpenMP threads, so its iterations would depend on their number
    with threadpool_limits(1, user_api="openmp"):
        w = model.fit_transform(xs)
    contribution = model.components_ * np.linalg.norm(w, axis=0)[:, None]  # k x C'
    best = torch.as_tensor(contribution.argmax(0), dtype=torch.long)
    loaded = torch.as_tensor(contribution.max(0) > 0)
    sub = torch.where(loaded, best, -1)
    labels[cols] = number_by_size(sub, k)
    return labels


def _group_labels(acts: Tensor, c: int, n_concepts: int, seed: int, max_iter: int, tol: float) -> Tensor:
    """:func:`_nmf_labels` of a group's sampled activations (m x C x H x W) as the
    (images x positions) x C matrix."""
    x = acts.permute(0, 2, 3, 1).reshape(-1, c) if acts.ndim == 4 and acts.shape[1] == c else torch.zeros(0, c)
    return _nmf_labels(x, n_concepts, seed, max_iter, tol)


def nmf_tasks(sample: NMFSample, groups: Sequence[int], n_concepts: int, n_channels: int, seed: int = 0,
              max_iter: int = 200, tol: float = NMF_TOL) -> list[tuple[int, Callable[[], Tensor]]]:
    """The NMFs of :func:`nmf_concepts`, one per group: (sampled images, task -> C labels).

    Independent and, once the sample is compacted here, reading nothing the others write:
    a caller may run them side by side in threads, inside one :func:`nmf_environment`
    around all of them (:func:`nmf_concepts` does).
    """
    sample.compact()
    acts = [sample.activations(g) for g in groups]
    return [(len(a), partial(_group_labels, a, n_channels, n_concepts, seed, max_iter, tol)) for a in acts]


def nmf_result(like: ClassConcepts, found: Sequence[tuple[int, Tensor]], class_names=None) -> ClassConcepts:
    """The NMF :class:`ClassConcepts` of the (sampled images, labels) of :func:`nmf_tasks`
    on ``like``'s groups, warning (in the caller's thread) for concepts NMF left empty."""
    for g, (m, labels) in zip(like.groups, found):
        got = int(labels.max()) + 1
        if got < like.n_concepts:
            warn_class(f"class {group_name(g, class_names)}: NMF found {got} of "
                       f"{like.n_concepts} concepts ({m} sampled images); the rest are empty")
    labels = torch.stack([f[1] for f in found]) if found else like.labels.clone()
    return ClassConcepts(list(like.groups), labels, like.n_concepts, like.n_images.clone(), source="nmf")


def nmf_concepts(sample: NMFSample, like: ClassConcepts, seed: int = 0, max_iter: int = 200,
                 class_names=None, workers: int = 0, tol: float = NMF_TOL) -> ClassConcepts:
    """NMF class concepts for the groups of ``like`` (the co-association concepts of the
    same configuration: same groups, ``n_concepts`` and ``n_images``); with ``workers``
    >= 2 the groups' NMFs run side by side in that many threads (the same labels: each
    is the same one-BLAS-thread fit), the largest first."""
    tasks = nmf_tasks(sample, like.groups, like.n_concepts, like.labels.shape[1], seed, max_iter, tol)
    with nmf_environment():
        labels = call_all([t for _, t in tasks], workers, [m for m, _ in tasks])
    return nmf_result(like, [(m, lab) for (m, _), lab in zip(tasks, labels)], class_names)
