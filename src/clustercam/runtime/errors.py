"""Errors a user can fix, and how the command-line tools show them: one line, no traceback.

Library functions raise ``ValueError`` / ``TypeError`` naming the bad value; a missing
dataset or weight file raises :class:`ResourceUnavailableError` with the ways to provide
it. At the command line (``clustercam-train``, ``clustercam-reproduce``,
``clustercam-concept-summary``) these end the run with ``error: <message>`` and a non-zero
exit; ``HYDRA_FULL_ERROR=1`` (or ``CLUSTERCAM_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from clustercam.exceptions import ResourceUnavailableError, UserError  # noqa: F401 (re-exported)

F = TypeVar("F", bound=Callable[..., Any])
HINT = "(HYDRA_FULL_ERROR=1 shows the traceback)"




def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [ResourceUnavailableError, ValueError, TypeError,
                                         FileNotFoundError, KeyError, ImportError]
    try:  # Lightning's "your Trainer settings do not fit this machine" (devices, accelerator)
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        types.append(MisconfigurationException)
    except ImportError:  # pragma: no cover
        pass
    try:
        from omegaconf.errors import OmegaConfBaseException

        types.append(OmegaConfBaseException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def user_error_message(exc: BaseException) -> str | None:
    """``error: ...`` for an error the user can fix (None for anything else: a bug).

    Hydra wraps errors raised while building a config node (``InstantiationException``):
    the message is the original error's, with the node it came from.
    """
    where = ""
    try:
        from hydra.errors import InstantiationException
    except ImportError:  # pragma: no cover
        InstantiationException = ()  # type: ignore[assignment]  # noqa: N806
    if isinstance(exc, InstantiationException):
        key = next((line.split(":", 1)[1].strip() for line in str(exc).splitlines()
                    if line.startswith("full_key:")), "")
        where = f" (while building {key})" if key else ""
        if exc.__cause__ is not None:
            exc = exc.__cause__
    if not isinstance(exc, _user_error_types()):
        return None
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = text.strip() or type(exc).__name__
    return f"error: {text}{where}"


def debug_requested() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HYDRA_FULL_ERROR", "CLUSTERCAM_DEBUG"))


def exit_on_user_error(fn: F) -> F:
    """Decorate a command-line entry point: user errors end it with one line, exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            message = None if debug_requested() else user_error_message(exc)
            if message is None:
                raise
            raise SystemExit(f"{message}\n{HINT}") from None

    return wrapper  # type: ignore[return-value]
