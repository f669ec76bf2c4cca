"""Optimiser settings checked when the model is built, not at the first training step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from clustercam.exceptions import UserError


def check_optimizer(factory: Callable[..., torch.optim.Optimizer] | None, what: str = "model.optimizer") -> None:
    """Build an optimizer factory once on a dummy parameter, so a bad setting fails now.

    A negative learning rate or an unknown keyword then fails when the model is built,
    named, rather than after the data are loaded.

    Args:
        factory: ``factory(params=...)`` (a Hydra ``_partial_``), or None (nothing to check).
        what: the config key, for the message.

    Raises:
        UserError: a factory that is not callable, or one the optimizer refuses.

    Example:
        >>> import functools
        >>> import torch
        >>> from clustercam.models.optim import check_optimizer
        >>> check_optimizer(functools.partial(torch.optim.Adam, lr=-1.0))
        Traceback (most recent call last):
        ...
        clustercam.exceptions.UserError: model.optimizer: Invalid learning rate: -1.0
    """
    if factory is None:
        return
    if not callable(factory):
        raise UserError(f"{what} must be an optimizer factory (a Hydra _partial_), got {type(factory).__name__}")
    try:
        factory(params=[torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        raise UserError(f"{what}: {err}") from None
