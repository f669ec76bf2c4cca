"""What the class concepts keep in memory over a run, known as soon as the layer's shape and
the classes' sizes are: a run that cannot hold it stops at its first batch with the
numbers and the settings that shrink them, instead of being killed near its end.

Per concept configuration (one per method), pass 1 keeps one C x C int32 co-association
count matrix per class (one for all images with ``scope: dataset``): 16 MiB a class at
C = 2048, whatever the folder size, so 1,000 classes x 2 methods hold 31 GiB. The NMF
baseline keeps up to ``nmf_max_images`` images a class of C x positions float32 (512 KiB an
image at 2048 x 8 x 8; ``scope: dataset``: one sample of that many images over all classes;
``both`` draws the dataset's sample from the class samples, at no cost). Each image leaves
its labels (int8, C a configuration) and, with a pooling + linear head, its C pooled
float32 values. Each DDP process holds all the count matrices and its share of the images,
and at the end receives every process's NMF sample (the counts are summed in place).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from clustercam.exceptions import UserError
from clustercam.explain.concepts.classes.coassociation import ClassConceptSettings, warn_class

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
                         class_sizes: Sequence[int], *, pooled: bool = True, processes: int = 1) -> ClassConceptMemory:
    """What one of ``processes`` (DDP ranks, the images split evenly) keeps for the class
    concepts of ``n_configs`` configurations: C = ``n_channels`` at ``positions`` (h x w, or
    a series' length), classes of ``class_sizes`` images; ``pooled``: the one pass keeps
    each image's pooled values.

    Example:
        >>> s = ClassConceptSettings(nmf_max_images=4)
        >>> m = class_concept_memory(s, n_configs=2, n_channels=8, positions=9, class_sizes=[3, 6])
        >>> m.coassociation, m.nmf_sample   # 2 x 2 classes x 8 x 8 x 4 (+ presence); (3 + 4) x 8 x 9 x 4
        (1152, 2016)
    """
    c, r = int(n_channels), max(1, int(processes))
    share = [math.ceil(int(n) / r) for n in class_sizes]
    groups = 1 if settings.scope == "dataset" else len(share)
    coassociation = int(n_configs) * groups * (c * c + c) * 4  # counts and presence, int32
    k = int(settings.nmf_max_images)
    rows = min(sum(share), k) if settings.scope == "dataset" else sum(min(n, k) for n in share)
    per_image = int(n_configs) * c + (4 * c if pooled else 0) + IMAGE_OVERHEAD
    gathered = rows * r if r > 1 else 0  # every process's sample, gathered at the end
    return ClassConceptMemory(coassociation, (rows + gathered) * c * int(positions) * 4, sum(share) * per_image)


def check_class_concept_memory(settings: ClassConceptSettings, n_configs: int, n_channels: int, positions: int,
                               class_sizes: Sequence[int], available: int | None, *, pooled: bool = True,
                               processes: int = 1, local_processes: int = 1, prefix: str = "") -> None:
    """Raise a :class:`~clustercam.exceptions.UserError` where the ``local_processes`` of this
    machine (of ``processes`` in all) would keep more than ``available`` bytes (None: unknown,
    no check), naming the settings (``prefix`` + name) that fit; warn
    (:class:`~clustercam.explain.concepts.classes.coassociation.ClassConceptWarning`) where
    they would keep more than half of it."""
    def need(s: ClassConceptSettings) -> int:
        return local_processes * class_concept_memory(s, n_configs, n_channels, positions, class_sizes,
                                                      pooled=pooled, processes=processes).total

    if available is None or need(settings) <= available // 2:
        return
    m = class_concept_memory(settings, n_configs, n_channels, positions, class_sizes, pooled=pooled,
                             processes=processes)
    what = (f"the class concepts of {len(class_sizes)} classes ({n_configs} configurations, {n_channels} channels x "
            f"{positions} positions) keep {m}" + (f" in each of {local_processes} processes" if local_processes > 1 else ""))
    if need(settings) <= available:
        warn_class(f"{what}: more than half of the {size_text(available)} of memory available")
        return
    ways = [(f"{prefix}scope=dataset", replace(settings, scope="dataset")),
            (f"{prefix}nmf_max_images=0 (no NMF baseline)", replace(settings, nmf_max_images=0))]
    fit = [f"{way} ({size_text(need(s))})" for way, s in ways if s != settings and need(s) <= available]
    raise UserError(f"{what}, more than the {size_text(available)} of memory available: set "
                    + "".join(f"{w}, " for w in fit) + ("or " if fit else "") + f"{prefix}class_concepts=false")
