"""What a concept run computes for every image: the one place of its defaults and checks.

:class:`ConceptSettings` is what :func:`~clustercam.explain.concepts.run_concepts` takes and
what the concept callback is configured with (the callback config builds one
with ``_target_``), so an option is added here, once, with its check.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clustercam.exceptions import UserError
from clustercam.explain.concepts.vocabulary import (
    ALGORITHMS,
    BACKENDS,
    CONCEPT_METHODS,
    DETAILS,
    IMPORTANCE_TARGETS,
    ConceptConfig,
)


def _as_list(value: Any, what: str) -> list:
    if value is None:
        raise UserError(f"{what} must not be null")
    if isinstance(value, str | int):
        return [value]
    out = list(value)
    if not out:
        raise UserError(f"{what} must not be empty")
    return out


@dataclass(kw_only=True)
class ConceptSettings:
    """What to compute for every image (keyword arguments only).

    Args:
        method: ``cgap`` and/or ``cpha`` (one value or a list).
        algorithm: ``kmeans``, ``agglomerative``, ``birch`` and/or ``gmm``.
        n_concepts: one value or a list, each >= 2. The product method x algorithm x
            n_concepts is computed (:attr:`configs`).
        sub_concepts: the maximum number of sub-concepts per concept (0 = off, else >= 2).
        min_sub_channels: concepts with fewer channels are not split (None: 2 x sub_concepts).
        seed: the seed of the clusterings and of the random controls.
        n_init: k-means restarts (>= 1).
        backend: ``torch`` (batched k-means on the activations' device) or ``sklearn``.
        target: importance (eq. 3) of the ``label`` class (the paper) or the ``predicted`` one.
        detail: which configurations get sub-concepts and maps: ``first`` (the first
            algorithm and n_concepts, every method) or ``all``.
        algorithm_kwargs: per-algorithm constructor options, e.g. ``{"birch": {"threshold": 0.3}}``.
        fidelity: concept deletion / insertion curves against the random controls.
        control_repeats: R, the draws of each random control (orders, channel groups,
            partitions), >= 1.

    Raises:
        UserError: naming the first bad value.

    Example:
        >>> s = ConceptSettings(method="cgap", n_concepts=[3, 5], sub_concepts=0)
        >>> [c.name for c in s.configs], s.details
        (['cgap_kmeans_n3', 'cgap_kmeans_n5'], [ConceptConfig(method='cgap', algorithm='kmeans', n_concepts=3)])
    """

    method: str | Sequence[str] = ("cgap", "cpha")
    algorithm: str | Sequence[str] = "kmeans"
    n_concepts: int | Sequence[int] = 5
    sub_concepts: int = 3
    min_sub_channels: int | None = None
    seed: int = 0
    n_init: int = 10
    backend: str = "torch"
    target: str = "label"
    detail: str = "first"
    algorithm_kwargs: Mapping[str, Mapping[str, Any]] | None = None
    fidelity: bool = True
    control_repeats: int = 10
    configs: list[ConceptConfig] = field(init=False)
    details: list[ConceptConfig] = field(init=False)

    def __post_init__(self) -> None:
        self.methods = [str(m) for m in _as_list(self.method, "method")]
        self.algorithms = [str(a) for a in _as_list(self.algorithm, "algorithm")]
        self.n_list = [int(n) for n in _as_list(self.n_concepts, "n_concepts")]
        for m in self.methods:
            if m not in CONCEPT_METHODS:
                raise UserError(f"unknown concept method {m!r}; choose from {CONCEPT_METHODS}")
        for a in self.algorithms:
            if a not in ALGORITHMS:
                raise UserError(f"unknown clustering algorithm {a!r}; choose from {ALGORITHMS}")
        for n in self.n_list:
            if n < 2:
                raise UserError(f"n_concepts must be >= 2, got {n}")
        if self.sub_concepts and self.sub_concepts < 2:
            raise UserError(f"sub_concepts must be 0 (off) or >= 2, got {self.sub_concepts}")
        if self.n_init < 1:
            raise UserError(f"n_init must be >= 1, got {self.n_init}")
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}; choose from {BACKENDS}")
        if self.target not in IMPORTANCE_TARGETS:
            raise UserError(f"target must be one of {IMPORTANCE_TARGETS}, got {self.target!r}")
        if int(self.control_repeats) < 1:
            raise UserError(f"control_repeats must be >= 1, got {self.control_repeats}")
        if self.detail not in DETAILS:
            raise UserError(f"detail must be one of {DETAILS}, got {self.detail!r}")
        self.n_sub = int(self.sub_concepts or 0)
        self.algorithm_kwargs = {k: dict(v) for k, v in (self.algorithm_kwargs or {}).items()}
        self.configs = [ConceptConfig(*c) for c in itertools.product(self.methods, self.algorithms, self.n_list)]
        if self.detail == "first":
            self.details = [ConceptConfig(m, self.algorithms[0], self.n_list[0]) for m in self.methods]
        else:
            self.details = list(self.configs)
        self.l_max = max(self.n_list)

    def check_channels(self, channels: int, where: str = "the concept layer") -> None:
        """Raise when an ``n_concepts`` exceeds the layer's channels (every concept needs one).

        Raises:
            UserError: naming the largest ``n_concepts`` and the layer.
        """
        if self.l_max > int(channels):
            raise UserError(f"n_concepts={self.l_max} is larger than the {int(channels)} channels of {where}: "
                            f"choose n_concepts <= {int(channels)} (or a wider layer)")

    @classmethod
    def from_options(cls, settings: ConceptSettings | None = None, **options: Any) -> ConceptSettings:
        """``settings`` as given, else one built from keyword ``options`` (the callbacks'
        two ways of being configured).

        Raises:
            UserError: for both at once, or an option that is not a setting.
        """
        if settings is not None:
            if options:
                raise UserError(f"give the concept settings either as settings= or as keyword options, "
                                f"not both (got settings and {sorted(options)})")
            if not isinstance(settings, cls):
                raise UserError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")
            return settings
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"unknown concept settings {unknown}; the settings are {sorted(known)}")
        return cls(**options)
