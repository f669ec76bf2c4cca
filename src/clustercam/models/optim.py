"""Optimiser settings checked when the model is built, not at the first training step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from clustercam.exceptions import UserError


def check_optimizer(factory: Callable[..., torch.optim.Optimizer] | None, what: str = "model.optimizer") -> None:
    """Build ``factory`` once on a dummy parameter so a bad setting (a negative learning rate,
    an unknown keyword) fails now, named, rather than after the data are loaded."""
    if factory is None:
        return
    if not callable(factory):
        raise UserError(f"{what} must be an optimizer factory (a Hydra _partial_), got {type(factory).__name__}")
    try:
        factory(params=[torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        raise UserError(f"{what}: {err}") from None
