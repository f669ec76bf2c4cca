"""Settings objects: one dataclass holds a pipeline's options, their defaults and their checks.

A pipeline (:func:`~clustercam.explain.score_explanations`,
:func:`~clustercam.explain.explain_clusters`) and the callback that runs it take the same
object, either built (``settings=ScoreSettings(steps=4)``, or by Hydra from a ``_target_``
node) or as keyword options (``steps=4``), so a new option is added in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any, TypeVar

from clustercam.exceptions import UserError

S = TypeVar("S")


def with_options(cls: type[S], settings: S | Mapping[str, Any] | None, options: Mapping[str, Any],
                 owner: str) -> S:
    """A settings object from what the caller gave: ``settings`` with ``options`` on top.

    Args:
        cls: the settings dataclass.
        settings: what the caller built: an instance of ``cls``, a mapping of its fields, or
            None for the defaults.
        options: keyword options, by field name.
        owner: who took them, for the message (e.g. ``score_explanations()``).

    Returns:
        An instance of ``cls`` (checked by its ``__post_init__``).

    Raises:
        UserError: an option that is not a field of ``cls``, or ``settings`` of another type.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True, kw_only=True)
        ... class Opts:
        ...     steps: int = 10
        >>> with_options(Opts, None, {"steps": 4}, "f()")
        Opts(steps=4)
        >>> with_options(Opts, Opts(steps=2), {}, "f()")
        Opts(steps=2)
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise UserError(f"{owner}: unknown settings {unknown}; {cls.__name__} takes {names}")
    if settings is None:
        return cls(**options)
    if isinstance(settings, Mapping):
        return with_options(cls, None, {**settings, **options}, owner)
    if not isinstance(settings, cls):
        raise UserError(f"{owner}: settings must be a {cls.__name__}, got {type(settings).__name__}")
    return replace(settings, **options) if options else settings  # type: ignore[type-var]
