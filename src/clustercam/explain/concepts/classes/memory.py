"""What the class concepts keep in memory over a run, known as soon as the layer's shape and
the classes' sizes are: a run that cannot hold it stops at its first batch with the
numbers and the settings that shrink them, instead of being killed near its end.

Per concept configuration (one per method), pass 1 keeps one C x C int32 co-association
count matrix per class (one for all images with ``scope: dataset``): 16 MiB a class at
C = 2048, whatever the folder size, so 1,000 classes x 2 methods hold 31 GiB. The NMF
baseline keeps up to ``nmf_max_images`` (k) images a class of C x positions float32 (512 KiB
an image at 2048 x 8 x 8), up to 2k while a class's sample waits to be cut back to k
(``scope: dataset``: one sample over all classes; ``both`` draws the dataset's sample from
the class samples); signed activations (transformer tokens) drop it. Each image leaves its
labels (int8, C a configuration; a class's last images also wait to be counted) and, with a
pooling + linear head, its pooled values (C float32, C more for a pool that is not the
average, 4C float64 with part masks). At the end each factorisation running (one a
worker thread, the largest first) copies its matrix three times: as (images x positions) x
C, and twice in the solver (``both`` also draws the dataset's rows out of the classes').
Each DDP process holds all the count matrices and its share of the images, and at the end
receives every process's NMF sample, twice while it is gathered (the counts are summed in
place). An upper bound: the parts that peak at different moments are added.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.classes.coassociation import (
    ClassConceptSettings,
    CoAssociation,
    warn_class,
)

IMAGE_OVERHEAD = 32  # bytes an image beside its labels and pooled values: index, class, target, flags


def size_text(n: float) -> str:
    """Bytes as a person reads them: ``"352 MiB"``, ``"31.3 GiB"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale or unit == "GiB" else f"{n / scale:.0f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class ClassConceptMemory:
    """Bytes one process keeps for the class concepts, by part (:func:`class_concept_memory`)."""

    coassociation: int
    nmf_sample: int
    per_image: int

    @property
    def total(self) -> int:
        return self.coassociation + self.nmf_sample + self.per_image

    def __str__(self) -> str:
        return (f"{size_text(self.total)} (co-association counts {size_text(self.coassociation)}, "
                f"NMF samples {size_text(self.nmf_sample)}, per-image numbers {size_text(self.per_image)})")


def class_concept_memory(settings: ClassConceptSettings, n_configs: int, n_channels: int, positions: int,
                         class_sizes: Sequence[int], *, pooled: bool = True, masks: bool = False,
                         signed: bool = False, n_concepts: int = 2, processes: int = 1,
                         workers: int = 1) -> ClassConceptMemory:
    """At most what one of ``processes`` (DDP ranks, the images split evenly) keeps for the
    class concepts of ``n_configs`` configurations (the largest with ``n_concepts``): C =
    ``n_channels`` at ``positions`` (h x w, or a series' length), classes of ``class_sizes``
    images; ``pooled``: the one pass keeps each image's pooled values (``masks``: with part
    masks); ``signed``: signed activations, no NMF sample; ``workers``: the NMF fits that run
    side by side at the end.

    Example:
        >>> s = ClassConceptSettings(nmf_max_images=4)
        >>> m = class_concept_memory(s, n_configs=2, n_channels=8, positions=9, class_sizes=[3, 6])
        >>> m.coassociation   # 2 configurations x 2 classes x (8 x 8 counts + 8 presences) x 4 bytes
        1152
        >>> m.nmf_sample      # (3 + 6 rows held, at most 2 x 4 a class; 3 x 4 copied by a fit) x 8 x 9 x 4
        6048
    """
    c, r, k = int(n_channels), max(1, int(processes)), int(settings.nmf_max_images)
    share = [math.ceil(int(n) / r) for n in class_sizes]
    groups = [sum(share)] if settings.scope == "dataset" else share
    coassociation = int(n_configs) * len(groups) * (c * c + c) * 4  # counts and presence, int32
    rows = 0
    if k and not signed:
        rows = sum(min(n, 2 * k) for n in groups)  # held, before a group is cut back to k
        sizes = [int(n) for n in class_sizes]
        whole = [sum(sizes)] if settings.scope == "dataset" else sizes
        both = [min(sum(sizes), k)] if settings.scope == "both" else []  # the dataset's fit
        fits = sorted([min(n, k) for n in whole] + both, reverse=True)  # after the gather: every process's images
        rows += sum(both) + 3 * sum(fits[: max(1, int(workers))])  # the fits running side by side, copied
        rows += 2 * r * sum(min(n, k) for n in groups) if r > 1 else 0  # every process's sample, gathered
    wide = int(n_concepts) > 127
    labels = int(n_configs) * c * (2 if wide else 1)
    values = (8 * c + (32 * c if masks else 0)) if pooled else 0
    waiting = int(n_configs) * c * (4 if wide else 1) * sum(min(n, CoAssociation.flush_images - 1) for n in groups)
    return ClassConceptMemory(coassociation, rows * c * int(positions) * 4,
                              sum(share) * (labels + values + IMAGE_OVERHEAD) + waiting)


def check_class_concept_memory(settings: ClassConceptSettings, configs: Sequence[Sequence], activations: Tensor,
                               class_sizes: Sequence[int], available: int | None, *, pooled: bool = True,
                               masks: bool = False, processes: int = 1, local_processes: int = 1,
                               workers: int = 1, signed: bool | None = None, prefix: str = "") -> None:
    """Before the first batch is added: raise a :class:`~clustercam.exceptions.UserError`
    where the ``local_processes`` of this machine (of ``processes`` in all) would keep more
    than ``available`` bytes (None: unknown, no check; ``workers``: the NMF fits side by
    side at the end; ``signed``: the activations have negative values, None: read from
    ``activations``) for the class concepts of ``configs``
    ((method, algorithm, n_concepts) each) over that batch's ``activations`` (B x C x ...),
    naming the settings (``prefix`` + name) that would fit; warn
    (:class:`~clustercam.explain.concepts.classes.coassociation.ClassConceptWarning`) where
    they would keep more than half of it."""
    c, positions = int(activations.shape[1]), int(activations[0, 0].numel()) if len(activations) else 1
    if signed is None:  # no NMF sample then
        signed = bool(activations.numel()) and float(activations.min()) < 0

    def memory(s: ClassConceptSettings) -> ClassConceptMemory:
        return class_concept_memory(s, len(configs), c, positions, class_sizes, pooled=pooled, masks=masks,
                                    signed=signed, n_concepts=max(int(cfg[2]) for cfg in configs), processes=processes,
                                    workers=workers)

    def need(s: ClassConceptSettings) -> int:
        return local_processes * memory(s).total

    if available is None or need(settings) <= available // 2:
        return
    what = (f"the class concepts of {len(class_sizes)} classes ({len(configs)} configurations, {c} channels x "
            f"{positions} positions) keep {memory(settings)}"
            + (f" in each of {local_processes} processes" if local_processes > 1 else ""))
    if need(settings) <= available:
        warn_class(f"{what}: more than half of the {size_text(available)} of memory available")
        return
    ways = [(f"{prefix}scope=dataset", replace(settings, scope="dataset")),
            (f"{prefix}nmf_max_images=0 (no NMF baseline)", replace(settings, nmf_max_images=0))]
    fit = [f"{way} ({size_text(need(s))})" for way, s in ways if s != settings and need(s) <= available]
    raise UserError(f"{what}, more than the {size_text(available)} of memory available: set "
                    + "".join(f"{w}, " for w in fit) + ("or " if fit else "") + f"{prefix}class_concepts=false")
