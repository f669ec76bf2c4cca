"""Renamed and reordered parameters keep working for one release, with a ``DeprecationWarning``.

The public vocabulary (``clusters`` for per-sample cluster ids, ``concept_labels`` for
per-channel concept ids, ``y`` for class labels, ``target=`` for a Grad-CeAM target) replaced
older names, and every cluster explanation now takes ``(encoder, target_layer, x, centroids,
*, clusters=None, <options>)``; calls written against the old names or the old positional
order still run and say what to write instead.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from clustercam.exceptions import UserError

F = TypeVar("F", bound=Callable[..., Any])


def renamed_parameters(*, owner: str | None = None, config: bool = False, **renames: str) -> Callable[[F], F]:
    """Accept each old keyword (``old="new"``) in place of its new name, with a warning.

    Args:
        owner: who the warning names (default: the function, ``name()``), e.g. a config group.
        config: the call comes from a config that always holds the new names (with their
            defaults) and the old ones as null placeholders: an old name that is None counts as
            not given, and one that is given replaces the new name's value.
        **renames: old keyword name -> new keyword name.

    Returns:
        A decorator for the function whose parameters were renamed.

    Raises:
        UserError: when a call passes both the old and the new name.

    Example:
        >>> @renamed_parameters(mode="target")
        ... def f(x, *, target="paper"):
        ...     return target
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     f(1, mode="reference"), caught[0].category.__name__
        ('reference', 'DeprecationWarning')
    """

    def decorate(fn: F) -> F:
        who = owner or f"{fn.__name__}()"

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if config and old in kwargs and kwargs[old] is None:
                    del kwargs[old]
                if old in kwargs:
                    if config:
                        kwargs.pop(new, None)
                    if new in kwargs:
                        raise UserError(f"{who} got both {old}= (the old name) and {new}=; pass {new}= only")
                    warnings.warn(f"{who}: {old}= is renamed {new}= and will be removed in the next release",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def reordered_parameters(
    *old_order: str,
    when: Callable[[tuple[Any, ...], dict[str, Any]], bool],
    defaults: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """Accept calls written in the old positional order, with a warning.

    Args:
        *old_order: the parameters the old signature took positionally, in that order, by
            their new names.
        when: ``when(args, kwargs)`` is True for a call in the old order (e.g. a tensor where
            ``target_layer`` now stands, or more positionals than the data).
        defaults: values for new required parameters that the old signature did not have.

    Returns:
        A decorator for the function whose positional order changed.

    Raises:
        TypeError: when an old-order call gives a parameter twice or too many positionals.

    Example:
        >>> @reordered_parameters("x", "target", when=lambda args, kwargs: len(args) > 1)
        ... def f(x, *, target="paper"):
        ...     return target
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     f(1, "reference"), caught[0].category.__name__
        ('reference', 'DeprecationWarning')
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not when(args, kwargs):
                return fn(*args, **kwargs)
            if len(args) > len(old_order):
                raise TypeError(f"{fn.__name__}() takes at most {len(old_order)} positional "
                                f"arguments in its old order, got {len(args)}")
            for name, value in zip(old_order, args):
                if name in kwargs:
                    raise TypeError(f"{fn.__name__}() got multiple values for argument {name!r}")
                kwargs[name] = value
            for name, value in (defaults or {}).items():
                kwargs.setdefault(name, value)
            warnings.warn(f"{fn.__name__}(): this positional order is deprecated and will be removed in "
                          f"the next release; call {fn.__name__}{_new_form(fn)}",
                          DeprecationWarning, stacklevel=2)
            return fn(**kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _new_form(fn: Callable[..., Any]) -> str:
    """``(encoder, target_layer, x, centroids, *, ...)``: the positional part of the new signature."""
    params = inspect.signature(fn).parameters.values()
    data = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    return f"({', '.join(data)}, *, <options>)"
