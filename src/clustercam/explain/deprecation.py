"""Renamed parameters keep working for one release, with a ``DeprecationWarning``.

The public vocabulary (``clusters`` for per-sample cluster ids, ``concept_labels`` for
per-channel concept ids, ``y`` for class labels, ``target=`` for a Grad-CeAM target) replaced
older names; calls written against those names still run and say what to write instead.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from clustercam.exceptions import UserError

F = TypeVar("F", bound=Callable[..., Any])


def renamed_parameters(**renames: str) -> Callable[[F], F]:
    """Accept each old keyword (``old="new"``) in place of its new name, with a warning.

    Args:
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
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise UserError(f"{fn.__name__}() got both {old}= (the old name) and {new}=; pass {new}= only")
                    warnings.warn(f"{fn.__name__}(): {old}= is renamed {new}= and will be removed in the next release",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
