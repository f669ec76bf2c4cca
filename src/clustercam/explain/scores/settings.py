"""The options of the scores: which maps, how the curves perturb and follow the assignment.

:class:`ScoreSettings` is the one place their defaults and checks live; both
:func:`~clustercam.explain.score_explanations` and the explanation-scores callback take it
(built, by Hydra from a ``_target_`` node, or as keyword options).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clustercam.exceptions import UserError
from clustercam.explain.assignments import ASSIGNMENTS
from clustercam.explain.baselines import BASELINES
from clustercam.explain.scores.methods import (
    DEFAULT_MAP_METHODS,
    MapMethod,
    MethodSpec,
    resolve_methods,
)


@dataclass(frozen=True, kw_only=True)
class ScoreSettings:
    """How :func:`~clustercam.explain.score_explanations` scores the maps.

    Args:
        methods: the map methods compared: names (see :data:`MAP_METHODS`),
            :class:`~clustercam.explain.GradCeAMTarget` values, ``(name, callable)`` pairs or a
            mapping of them.
        method_options: settings per method, e.g. ``{"occlusion": {"window": 8}}``.
        all_clusters: every method computes the maps of all K clusters (its one-pass form
            where it has one) and is scored on each sample's own, so
            ``scores/<method>/map_seconds`` times N samples x K clusters.
        steps: points on each curve minus one (>= 1); each costs 2 encoder passes per sample.
        baseline: what a removed position becomes: ``auto`` (zero for series, a blurred copy
            for images), ``zero``, ``mean``, ``blur`` or a number.
        blur_sigma: of ``blur`` (None: a tenth of the shortest side, >= 1).
        assignment: the soft assignment the curves follow, ``softmax`` or ``student_t``.
        temperature: of the softmax: ``auto`` (the k-means inertia / N, else the spread of the
            embeddings) or a number > 0.
        alpha: Student-t degrees of freedom.
        gradceam_temperature: of the ``gradceam_assignment`` maps (None: 1, or the
            cluster-explain callback's temperature when a run has one).
        seed: the random maps, subsets and tie-breaking.
        smooth: moving average of series maps.
        batch_size: encoder inputs per chunk on the curves.
        maps_batch_size: samples per chunk of the map methods.

    Raises:
        UserError: an unknown method, method setting, baseline or assignment, a value out of range.

    Example:
        >>> s = ScoreSettings(methods=["random", "occlusion"], method_options={"occlusion": {"window": 4}})
        >>> s.steps, s.methods
        (10, ('random', 'occlusion'))
    """

    methods: Sequence[MethodSpec] | Mapping[str, MapMethod] = DEFAULT_MAP_METHODS
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    all_clusters: bool = False
    steps: int = 10
    baseline: str | float = "auto"
    blur_sigma: float | None = None
    assignment: str = "softmax"
    temperature: float | str = "auto"
    alpha: float = 1.0
    gradceam_temperature: float | None = None
    seed: int = 0
    smooth: bool = False
    batch_size: int = 512
    maps_batch_size: int = 256

    def __post_init__(self) -> None:
        methods = dict(self.methods) if isinstance(self.methods, Mapping) else tuple(self.methods)
        options = {str(k): dict(v or {}) for k, v in dict(self.method_options or {}).items()}
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "method_options", options)
        if self.steps < 1:
            raise UserError(f"steps must be >= 1, got {self.steps}")
        if isinstance(self.baseline, str) and self.baseline not in (*BASELINES, "auto"):
            raise UserError(f"unknown baseline {self.baseline!r}; choose auto, {', '.join(BASELINES)} or a number")
        if self.assignment not in ASSIGNMENTS:
            raise UserError(f"unknown assignment {self.assignment!r}; choose one of {ASSIGNMENTS}")
        t = self.temperature
        if t != "auto" and not (isinstance(t, int | float) and t > 0):
            raise UserError(f"temperature must be 'auto' or a number > 0, got {t!r}")
        for name in ("batch_size", "maps_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        resolve_methods(self.methods, self.method_options)  # unknown names and settings fail here

    def resolved_methods(self) -> dict[str, MapMethod]:
        """The map methods by name, each with its settings.

        Returns:
            Method name -> map method (:func:`~clustercam.explain.scores.resolve_methods`).
        """
        return resolve_methods(self.methods, self.method_options)
