"""Errors a user can fix, and how the command-line tools show them: one line, no traceback.

What counts as the user's: a :class:`~clustercam.exceptions.UserError` (raised on purpose,
naming the bad value; a missing dataset or weight file is a ``ResourceUnavailableError``
that says how to provide it), a config error of Hydra / OmegaConf (an unknown key, a
``_target_`` that cannot be found or called with the config's arguments) and Lightning's
``MisconfigurationException`` (device settings this machine cannot meet). At the command line
(``clustercam-train``, ``clustercam-reproduce``, ``clustercam-compare``,
``clustercam-concept-summary``) these end the run with ``error: <message>`` and exit status 1.
Every other exception is a bug and keeps its traceback; ``HYDRA_FULL_ERROR=1`` (or
``CLUSTERCAM_DEBUG=1``) shows the traceback of user errors too.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from clustercam.exceptions import ResourceUnavailableError, UserError  # noqa: F401 (re-exported)

F = TypeVar("F", bound=Callable[..., Any])
HINT = "(HYDRA_FULL_ERROR=1 shows the traceback)"
# frames of the machinery that loads and calls a _target_: an exception raised there (and not
# in the target's own code) means the config named something that cannot be built
MACHINERY = (f"{os.sep}hydra{os.sep}", f"{os.sep}omegaconf{os.sep}", f"{os.sep}importlib{os.sep}", "<frozen ")


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError]
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
    try:  # composing a config (the studies compose inside the wrapped function)
        from hydra.errors import (
            ConfigCompositionException,
            MissingConfigException,
            OverrideParseException,
            SearchPathException,
        )

        types += [ConfigCompositionException, MissingConfigException, OverrideParseException,
                  SearchPathException]
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def _frames(tb: TracebackType | None) -> Iterator[str]:
    while tb is not None:
        yield tb.tb_frame.f_code.co_filename
        tb = tb.tb_next


def _raised_by_the_config(exc: BaseException) -> bool:
    """True when no code of the target ran: every exception in the chain was raised by Hydra
    locating or calling the ``_target_`` (a misspelt name, a keyword the target does not take)."""
    seen = 0
    while exc is not None and seen < 10:
        if any(not any(m in f for m in MACHINERY) for f in _frames(exc.__traceback__)):
            return False
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return True


def user_error_message(exc: BaseException) -> str | None:
    """``error: ...`` for an error the user can fix (None for anything else: a bug).

    Hydra wraps errors raised while building a config node (``InstantiationException``):
    the message is the original error's, with the node it came from.
    """
    try:
        from hydra.errors import InstantiationException
    except ImportError:  # pragma: no cover
        InstantiationException = ()  # type: ignore[assignment]  # noqa: N806
    where = ""
    if isinstance(exc, InstantiationException):
        key = next((line.split(":", 1)[1].strip() for line in str(exc).splitlines()
                    if line.startswith("full_key:")), "")
        where = f" (while building {key})" if key else ""
        cause = exc.__cause__
        if cause is not None and isinstance(cause, _user_error_types()):
            exc = cause
        elif cause is None or not _raised_by_the_config(cause):
            return None  # a bug inside the target's own code
        else:  # the config named a target that cannot be found, or arguments it does not take
            text = " ".join(line.strip() for line in str(exc).splitlines() if not line.startswith("full_key:"))
            return f"error: {text}{where}"
    if not isinstance(exc, _user_error_types()):
        return None
    text = str(exc).strip() or type(exc).__name__
    return f"error: {text}{where}"


def _inside_a_target(exc: BaseException) -> BaseException | None:
    """The exception a ``_target_``'s own code raised, when Hydra wrapped it, noted with the
    config node; else None."""
    try:
        from hydra.errors import InstantiationException
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, InstantiationException) or exc.__cause__ is None:
        return None
    bug = exc.__cause__
    key = next((line.split(":", 1)[1].strip() for line in str(exc).splitlines()
                if line.startswith("full_key:")), "")
    if key and hasattr(bug, "add_note"):
        bug.add_note(f"(while building {key})")
    return bug


def debug_requested() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HYDRA_FULL_ERROR", "CLUSTERCAM_DEBUG"))


def exit_on_user_error(fn: F) -> F:
    """Decorate a command-line entry point: user errors end it with one line, exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if debug_requested():
                raise
            message = user_error_message(exc)
            if message is not None:
                raise SystemExit(f"{message}\n{HINT}") from None
            bug = _inside_a_target(exc)
            if bug is None:
                raise
            raise bug from None  # its own traceback (Hydra prints its wrapper as one line)

    return wrapper  # type: ignore[return-value]
