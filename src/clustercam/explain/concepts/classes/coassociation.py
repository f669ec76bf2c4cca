"""Class-level concepts: the channel groups a whole class shares, from its images' own partitions.

The concepts paper clusters the channels of ONE image (its § 5 names this as the main
limitation). Here the per-image labels ``L_i(c)`` of eq. 1 (``-1`` = dropped channel) of
the images of a class t are summarised by

- presence ``p_c = mean_i [L_i(c) >= 0]`` and co-association
  ``S(c, c') = mean_i [L_i(c) = L_i(c') >= 0]`` (the evidence-accumulation matrix of
  Fred & Jain, 2005), accumulated batch by batch as integer counts;
- class concepts: the channels with ``p_c >= min_presence``, average-linkage agglomerative
  clustering on ``1 - S`` into ``n_class`` groups, numbered by decreasing size.

Memory: one C x C int32 count matrix per class (16 MiB for C = 2048; int32 is exact up to
2**31 images, float32 would stop being exact at 2**24); the ``dataset`` scope of
``both`` is the sum of the class matrices, so it costs nothing while accumulating. A
class's images are added to its matrix 64 at a time (their labels wait, C small integers
each): one C x C product per 64 images of a class instead of one per batch and class,
whose C x C cost does not shrink with the few images a batch holds of each class. Counts
of several accumulators (DDP ranks) add up exactly: :meth:`CoAssociation.state` gives the
tensors to all-reduce, :meth:`CoAssociation.from_state` rebuilds one from them.
Scoring the class concepts (stability, importance, gallery): :mod:`.scores`, from the
first pass's pooled numbers or a second pass over the images (:mod:`.passes`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.classes.linkage import (
    average_linkage_groups,
    coassociation_distances,
)
from clustercam.explain.concepts.image.extract import _relabel_by_size, concept_counts
from clustercam.explain.deprecation import renamed_parameters

DATASET = -1  # the group key of the class concepts over all images (scope dataset / both)
SCOPES = ("class", "dataset", "both")
SOURCES = ("coassociation", "nmf", "random")


class ClassConceptWarning(UserWarning):
    """A class whose concepts cannot be found or scored as asked (one image, no kept
    channel, fewer channels than concepts): its scores are NaN."""


def warn_class(message: str) -> None:
    warnings.warn(message, ClassConceptWarning, stacklevel=3)


def group_name(group: int, class_names: Sequence[str] | Mapping[int, str] | None = None) -> str:
    """``"all"`` for the dataset scope, else the class name (or its index)."""
    if group == DATASET:
        return "all"
    if class_names is None:
        return str(group)
    if isinstance(class_names, Mapping):
        return str(class_names.get(group, group))
    return str(class_names[group]) if 0 <= group < len(class_names) else str(group)


#: scikit-learn NMF's stopping tolerance for the NMF baseline (scikit-learn's own default is 1e-4)
NMF_TOL = 1e-3

# the flat config's names of the class-level options (callbacks.concepts.<name>)
FLAT_OPTIONS = ("min_presence", "n_class", "gallery_size", "nmf_max_images", "nmf_tol", "scope", "class_random")


@dataclass(kw_only=True)
class ClassConceptSettings:
    """What the class level computes, for every concept configuration.

    ``min_presence``: share of a class's images in which a channel must be kept to be
    clustered; ``n_class``: class concepts (None: the configuration's ``n_concepts``);
    ``gallery_size``: top images per class concept; ``nmf_max_images``: images per class
    in the NMF baseline's sample (0: no NMF); ``nmf_tol``: scikit-learn NMF's stopping
    tolerance (1e-3: half the iterations of its default 1e-4 on a large class, 98-99 % of
    the channels in the same concept); ``scope``: ``class`` (per class),
    ``dataset`` (once over all images) or ``both``; ``n_random``: random channel groups
    (same sizes) as the chance level of the truth table; ``seed`` (NMF, sampling, random
    groups).
    """

    min_presence: float = 0.5
    n_class: int | None = None
    gallery_size: int = 6
    nmf_max_images: int = 200
    nmf_tol: float = NMF_TOL
    scope: str = "class"
    n_random: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.min_presence, bool) or not 0 < float(self.min_presence) <= 1:
            raise UserError(f"min_presence must be in (0, 1], got {self.min_presence!r}")
        if self.n_class is not None and (isinstance(self.n_class, bool) or int(self.n_class) < 1):
            raise UserError(f"n_class must be >= 1 or null (= n_concepts), got {self.n_class!r}")
        for name in ("gallery_size", "nmf_max_images", "n_random"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise UserError(f"{name} must be an integer >= 0, got {value!r}")
        if self.scope not in SCOPES:
            raise UserError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if isinstance(self.nmf_tol, bool) or not float(self.nmf_tol) > 0:
            raise UserError(f"nmf_tol must be > 0, got {self.nmf_tol!r}")

    @staticmethod
    def pop_flat_options(options: dict[str, Any]) -> dict[str, Any]:
        """Take the class-level keys out of a flat config's options (``callbacks.concepts.<name>``).

        Args:
            options: the callback's keyword options; the class-level keys are removed from it.

        Returns:
            Those keys by field name (the config's ``class_random`` is ``n_random``).
        """
        flat = {k: options.pop(k) for k in FLAT_OPTIONS if k in options}
        if "class_random" in flat:
            flat["n_random"] = flat.pop("class_random")
        return flat

    @classmethod
    def from_flat(cls, settings: ClassConceptSettings | None, flat: dict[str, Any],
                  seed: int) -> ClassConceptSettings | None:
        """``settings`` as given, or one built from the flat options with the run's ``seed``.

        Args:
            settings: an explicit settings object, or None.
            flat: what :meth:`pop_flat_options` took out.
            seed: the concept settings' seed.

        Returns:
            The settings (None: neither given, the caller's default).

        Raises:
            UserError: for both at once.
        """
        if not flat:
            return settings
        if settings is not None:
            raise UserError(f"give the class-concept settings either as class_settings= or as keyword "
                            f"options, not both (got class_settings and {sorted(flat)})")
        return cls(seed=seed, **flat)

    def n_for(self, n_concepts: int) -> int:
        """The number of class concepts of a configuration with ``n_concepts`` image concepts."""
        return int(n_concepts if self.n_class is None else self.n_class)


@dataclass
class ClassConcepts:
    """The class concepts of one configuration: one row of ``labels`` per group.

    ``groups``: the class index of each row (:data:`DATASET` for all images);
    ``labels``: G x C long, the class concept of each channel (``-1``: not clustered),
    numbered 0 .. n_concepts - 1 by decreasing size; ``n_images``: G, the images the
    concepts were found from; ``source``: ``coassociation``, ``nmf`` or ``random``.
    """

    groups: list[int]
    labels: Tensor
    n_concepts: int
    n_images: Tensor
    source: str = "coassociation"

    def counts(self) -> Tensor:
        """G x n_concepts: channels per class concept."""
        return concept_counts(self.labels, self.n_concepts)

    def row(self, group: int) -> int:
        return self.groups.index(group)

    def views(self, classes: Tensor) -> list[Tensor]:
        """Per scope present, the group row of each image (B long, -1: no such group)."""
        classes = classes.long().cpu()
        out = []
        class_rows = {g: r for r, g in enumerate(self.groups) if g != DATASET}
        if class_rows:
            lookup = torch.full((max(class_rows) + 1,), -1, dtype=torch.long)
            lookup[list(class_rows)] = torch.tensor(list(class_rows.values()))
            inside = (classes >= 0) & (classes < len(lookup))
            out.append(torch.where(inside, lookup[classes.clamp(0, len(lookup) - 1)], -1))
        if DATASET in self.groups:
            out.append(torch.full_like(classes, self.groups.index(DATASET)))
        return out


def number_by_size(groups: Tensor, n: int) -> Tensor:
    """Group ids (C long, ``-1`` = none) renumbered 0.. by decreasing size, ties by lowest
    first channel, so the numbering does not depend on the clustering's arbitrary ids."""
    ok = groups >= 0
    if not bool(ok.any()):
        return groups.clone()
    pos = torch.arange(len(groups))
    first = torch.full((n,), len(groups), dtype=torch.long).scatter_reduce(
        0, groups[ok], pos[ok], "amin")
    rank = torch.argsort(torch.argsort(first))  # old id -> its order of first appearance
    out = torch.where(ok, rank[groups.clamp_min(0)], -1)
    return _relabel_by_size(out[None], n)[0]


def coassociation_concepts(
    co: Tensor, presence: Tensor, n_images: int, n_class: int, min_presence: float = 0.5
) -> Tensor:
    """C labels of the class concepts from co-association counts (average linkage on 1 - S).

    ``co``: C x C counts of ``[L_i(c) = L_i(c') >= 0]``, ``presence``: C counts of
    ``[L_i(c) >= 0]``, over ``n_images``. Channels with ``p_c >= min_presence`` (and
    ``p_c > 0``) are clustered into ``min(n_class, their number)`` groups, numbered by
    decreasing size (ties: lowest channel first); the others get ``-1``.

    Example:
        >>> import torch
        >>> co = torch.tensor([[3, 2, 0, 1], [2, 3, 1, 0], [0, 1, 3, 1], [1, 0, 1, 2]])
        >>> coassociation_concepts(co, co.diagonal(), n_images=3, n_class=2).tolist()
        [0, 0, 1, 1]
    """
    c = len(presence)
    labels = torch.full((c,), -1, dtype=torch.long)
    if n_images <= 0:
        return labels
    p = presence.double().cpu() / n_images
    sel = ((p >= min_presence) & (presence.cpu() > 0)).nonzero().flatten()
    m = len(sel)
    k = min(int(n_class), m)
    if m == 0:
        return labels
    if k == 1:
        groups = torch.zeros(m, dtype=torch.long)
    else:
        groups = torch.as_tensor(average_linkage_groups(coassociation_distances(co, sel, n_images), k), dtype=torch.long)
    labels[sel] = number_by_size(groups, k)
    return labels


class CoAssociation:
    """Batch-by-batch presence and co-association counts per class.

    ``update(concept_labels, classes)`` adds B images' per-image concept labels (B x C, ``-1`` dropped);
    ``finalise(n_class, min_presence)`` clusters each class once. ``scope``: ``class`` /
    ``both`` keep one C x C int32 matrix per class (``both`` adds their sum as the
    dataset group); ``dataset`` keeps one matrix for all images. ``merge`` / ``state`` /
    ``from_state``: counts of several ranks add up exactly.

    Example:
        >>> import torch
        >>> acc = CoAssociation(n_channels=4, n_classes=1)
        >>> acc.update(torch.tensor([[0, 0, 1, 1], [0, 0, 1, -1], [0, 1, 1, 0]]), torch.zeros(3))
        >>> acc.finalise(n_class=2).labels.tolist()
        [[0, 0, 1, 1]]
    """

    flush_images = 64  # a class's pending images are counted this many at a time

    def __init__(self, n_channels: int, n_classes: int, scope: str = "class",
                 device: torch.device | str = "cpu", *, counts: Mapping[str, Tensor] | None = None) -> None:
        if int(n_channels) < 1 or int(n_classes) < 1:
            raise UserError(f"n_channels and n_classes must be >= 1, got {n_channels}, {n_classes}")
        if scope not in SCOPES:
            raise UserError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.n_channels, self.n_classes, self.scope = int(n_channels), int(n_classes), scope
        g = 1 if scope == "dataset" else self.n_classes
        if counts is None:
            self._co = torch.zeros(g, self.n_channels, self.n_channels, dtype=torch.int32, device=device)
            self.presence = torch.zeros(g, self.n_channels, dtype=torch.int32, device=device)
            self.images = torch.zeros(g, dtype=torch.int64, device=device)
        else:  # a state's tensors themselves (from_state: the summed counts are not copied again)
            self._co, self.presence, self.images = (counts[k].to(device, t).contiguous() for k, t in
                                                    (("co", torch.int32), ("presence", torch.int32), ("images", torch.int64)))
            if self._co.shape != (g, self.n_channels, self.n_channels):
                raise UserError(f"counts of shape {tuple(self._co.shape)} for {g} groups of {self.n_channels} channels")
        self._pending: dict[int, list[Tensor]] = {}  # group -> labels of images not counted yet

    @property
    def co(self) -> Tensor:
        """G x C x C int32 co-association counts (every image added so far)."""
        for g in list(self._pending):
            self._flush(g)
        return self._co

    def _flush(self, g: int) -> None:
        """Count group ``g``'s pending images into its matrix: ``M M^T`` of their stacked
        one-hot memberships (C x images * n), exact in float32 (integer sums < 2**24)."""
        pending = self._pending.pop(g, [])
        if not pending:
            return
        labels = torch.cat(pending).long()
        n = max(int(labels.max()) + 1, 1)
        kept = labels >= 0
        onehot = F.one_hot(labels.clamp_min(0), n).to(torch.float32) * kept.unsqueeze(-1)
        m = onehot.permute(1, 0, 2).reshape(self.n_channels, -1)  # C x (b * n)
        self._co[g] += (m @ m.T).to(torch.int32)

    @torch.no_grad()
    @renamed_parameters(labels="concept_labels")
    def update(self, concept_labels: Tensor, classes: Tensor, keep: Tensor | None = None) -> None:
        """Add B images: ``concept_labels`` B x C (``-1`` dropped), ``classes`` B, ``keep`` B
        bool (False: not counted, e.g. a DistributedSampler's padding repeat)."""
        labels = concept_labels
        if labels.ndim != 2 or labels.shape[1] != self.n_channels:
            raise UserError(f"concept_labels must be B x {self.n_channels}, got {tuple(labels.shape)}")
        classes = torch.as_tensor(classes).view(-1).long()
        if len(classes) != len(labels):
            raise UserError(f"{len(classes)} classes for {len(labels)} images")
        top = self.n_classes if self.scope != "dataset" else math.inf
        if len(classes) and bool(((classes < 0) | (classes >= top)).any()):
            raise UserError(f"classes must be in [0, {self.n_classes}), got {classes.unique().tolist()}")
        dev = self._co.device
        labels, classes = labels.to(dev).long(), classes.to(dev)
        if keep is not None:
            keep = torch.as_tensor(keep, dtype=torch.bool, device=dev).view(-1)
            labels, classes = labels[keep], classes[keep]
        if self.scope == "dataset":
            classes = torch.zeros_like(classes)
        if not len(labels):
            return
        small = torch.int8 if int(labels.max()) < 128 else torch.int32
        kept = labels >= 0
        for g in classes.unique().tolist():
            rows = classes == g
            self.presence[g] += kept[rows].sum(0, dtype=torch.int32)
            self.images[g] += int(rows.sum())
            pending = self._pending.setdefault(g, [])
            pending.append(labels[rows].to(small))
            if sum(len(p) for p in pending) >= self.flush_images:
                self._flush(g)

    def state(self) -> dict[str, Tensor]:
        """The counts, to SUM over ranks (``all_reduce``) before :meth:`from_state`."""
        return {"co": self.co, "presence": self.presence, "images": self.images}

    @classmethod
    def from_state(cls, state: Mapping[str, Tensor], scope: str = "class") -> CoAssociation:
        co = state["co"]
        n_classes = 1 if scope == "dataset" else co.shape[0]
        return cls(co.shape[-1], n_classes, scope, device=co.device, counts=state)

    def merge(self, other: CoAssociation) -> CoAssociation:
        """Add another accumulator's counts (in place); the result equals one accumulator
        over both sets of batches, exactly."""
        if other.co.shape != self.co.shape or other.scope != self.scope:
            raise UserError(f"cannot merge {tuple(other.co.shape)} ({other.scope}) into "
                             f"{tuple(self.co.shape)} ({self.scope})")
        self.co.add_(other.co.to(self._co.device))
        self.presence += other.presence.to(self._co.device)
        self.images += other.images.to(self._co.device)
        return self

    def _groups(self) -> list[tuple[int, Tensor, Tensor, int]]:
        """(group key, co, presence, images) per non-empty group, dataset last."""
        if self.scope == "dataset":
            return [(DATASET, self.co[0], self.presence[0], int(self.images[0]))]
        out = [(g, self.co[g], self.presence[g], int(self.images[g]))
               for g in range(self.n_classes) if int(self.images[g]) > 0]
        if self.scope == "both":
            # int32 like the class counts (exact below 2**31 images); 10x faster than the int64 default
            out.append((DATASET, self.co.sum(0, dtype=torch.int32), self.presence.sum(0), int(self.images.sum())))
        return out

    def presence_share(self, group: int) -> Tensor:
        """C: ``p_c`` of a group (NaN if it has no image)."""
        for g, _, pres, n in self._groups():
            if g == group:
                return pres.double().cpu() / n
        return torch.full((self.n_channels,), math.nan, dtype=torch.float64)

    def similarity(self, group: int) -> Tensor:
        """C x C: ``S(c, c')`` of a group (its diagonal is the presence)."""
        for g, co, _, n in self._groups():
            if g == group:
                return co.double().cpu() / n
        return torch.full((self.n_channels,) * 2, math.nan, dtype=torch.float64)

    def clusterings(self, n_class: int, min_presence: float = 0.5) -> list[tuple[int, int, Callable[[], Tensor]]]:
        """The clusterings :meth:`finalise` runs, as (group, images, task -> C labels) per
        group with images: independent, so a caller may run them side by side (threads:
        they only read the counts) and hand the labels to :meth:`concepts_from`."""
        if int(n_class) < 1:
            raise UserError(f"n_class must be >= 1, got {n_class}")
        return [(g, n, partial(coassociation_concepts, co, pres, n, int(n_class), min_presence))
                for g, co, pres, n in self._groups()]

    def finalise(self, n_class: int, min_presence: float = 0.5,
                 class_names: Sequence[str] | None = None) -> ClassConcepts:
        """Cluster every group with images; warns (:class:`ClassConceptWarning`) for groups
        with one image, no kept channel, or fewer clustered channels than ``n_class``."""
        found = [(g, n, task()) for g, n, task in self.clusterings(n_class, min_presence)]
        return self.concepts_from(found, n_class, min_presence, class_names)

    def concepts_from(self, found: Sequence[tuple[int, int, Tensor]], n_class: int, min_presence: float = 0.5,
                      class_names: Sequence[str] | None = None) -> ClassConcepts:
        """The :class:`ClassConcepts` of the (group, images, labels) of :meth:`clusterings`,
        with :meth:`finalise`'s warnings (in the caller's thread)."""
        groups, rows, sizes = [], [], []
        for g, n, labels in found:
            name = group_name(g, class_names)
            got = int(labels.max()) + 1
            if got == 0:
                warn_class(f"class {name}: no channel is kept in {min_presence:.0%} of its "
                           f"{n} images: no class concept, NaN scores")
            elif got < n_class:
                warn_class(f"class {name}: {got} channels pass min_presence for {n_class} "
                           f"class concepts; concepts {got}..{n_class - 1} are empty (NaN)")
            if n == 1:
                warn_class(f"class {name} has one image: its class concepts are that image's "
                           "concepts; stability and importance_std are NaN")
            groups.append(g)
            rows.append(labels)
            sizes.append(n)
        labels = torch.stack(rows) if rows else torch.zeros(0, self.n_channels, dtype=torch.long)
        return ClassConcepts(groups, labels, int(n_class), torch.tensor(sizes, dtype=torch.long))


def random_groups(concepts: ClassConcepts, n_random: int, seed: int = 0) -> list[ClassConcepts]:
    """``n_random`` controls: per group, the clustered channels shuffled into groups of the
    same sizes as the class concepts (the chance level of any score of a channel group)."""
    counts = concepts.counts()
    out = []
    for r in range(int(n_random)):
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + r)
        labels = torch.full_like(concepts.labels, -1)
        for g in range(len(concepts.groups)):
            pool = (concepts.labels[g] >= 0).nonzero().flatten()
            perm = pool[torch.randperm(len(pool), generator=gen)]
            ids = torch.repeat_interleave(torch.arange(concepts.n_concepts), counts[g])
            labels[g, perm] = ids
        out.append(ClassConcepts(list(concepts.groups), labels, concepts.n_concepts,
                                 concepts.n_images.clone(), source="random"))
    return out
