"""What the concept functions accept: names, counts, activations (post-ReLU, finite)."""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.vocabulary import ALGORITHMS, BACKENDS, CONCEPT_METHODS


class DegenerateClusteringWarning(UserWarning):
    """An image could not be clustered as asked (too few distinct channels, one cluster...)."""


class NegativeActivationWarning(UserWarning):
    """Activations with negative values: CGAP/CPHA assume post-ReLU (non-negative) features."""


# the last tensor found finite: (weak reference, version counter, minimum). The pipeline
# hands the same activations to clustering, sub-concepts, maps and fidelity; one pass over
# them is enough while the tensor is not modified in place (which bumps its version)
_CHECKED: list = [None, -1, 0.0]
# tensors a caller checked once and holds unchanged for a while (:func:`checked_once`): by
# id, with a weak reference that confirms the object and its minimum; also inference
# tensors, which have no version counter (Lightning's test loop makes those)
_HELD: dict[int, tuple[weakref.ref, float]] = {}
_HELD_LOCK = threading.Lock()


def _checked_min(activations: Tensor) -> float | None:
    held = _HELD.get(id(activations))
    if held is not None and held[0]() is activations:
        return held[1]
    ref, version, lowest = _CHECKED
    if ref is not None and not activations.is_inference() and ref() is activations and activations._version == version:
        return lowest
    return None


def _finite_min(activations: Tensor) -> float:
    """The minimum of finite activations (0 for none).

    Raises:
        UserError: for NaN or infinite values, naming the first images that hold them.
    """
    if not activations.numel():
        return 0.0
    lowest, highest = torch.aminmax(activations)  # NaN propagates: both finite iff all are
    if not bool(torch.isfinite(lowest) & torch.isfinite(highest)):
        finite = torch.isfinite(activations).flatten(1).all(1)
        bad = (~finite).nonzero().flatten()
        raise UserError(
            f"activations contain NaN or infinite values in {len(bad)} images "
            f"(first indices {bad[:5].tolist()})"
        )
    return float(lowest)


@contextmanager
def checked_once(activations: Tensor) -> Iterator[None]:
    """Check ``activations`` (:func:`check_activations`, no warning) once; inside the block
    the concept functions handed this very tensor skip the pass over it (the caller
    promises not to modify it there). The concept pipeline hands one batch to a dozen
    functions, each of which checks its input: on an inference tensor (whose changes
    cannot be seen) each check was a full pass, ~1 ms a photo each.

    Raises:
        UserError: as :func:`check_activations`.
    """
    _check_form(activations)
    lowest = _checked_min(activations)
    lowest = _finite_min(activations) if lowest is None else lowest
    key = id(activations)
    with _HELD_LOCK:
        _HELD[key] = (weakref.ref(activations), lowest)
    try:
        yield
    finally:
        with _HELD_LOCK:
            _HELD.pop(key, None)


def check_activations(activations: Tensor, warn_negative: bool = True) -> None:
    """B x C x H x W, floating point, finite; a warning if any value is negative.

    "Dropped" channels are the all-zero ones, which only happen in non-negative (post-ReLU)
    features; signed activations keep every channel (CGAP's PCA and CPHA's argmax need no
    sign) and their concept maps are clipped at 0.
    """
    _check_form(activations)
    lowest = _checked_min(activations)
    if lowest is None:
        lowest = _finite_min(activations)
        if not activations.is_inference():  # inference tensors keep no version counter
            _CHECKED[:] = [weakref.ref(activations), activations._version, lowest]
    if warn_negative and lowest < 0:
        warnings.warn(
            f"activations have negative values (min {lowest:.3g}): read as signed activations (a "
            "transformer's tokens, a layer before its ReLU): every channel is kept (none is dropped as "
            "all-zero) and a concept map is max(0, sum of its channels); the paper clusters post-ReLU features",
            NegativeActivationWarning,
            stacklevel=3,
        )


def _check_form(activations: Tensor) -> None:
    if not isinstance(activations, Tensor):
        raise UserError(f"activations must be a torch.Tensor, got {type(activations).__name__}")
    if activations.ndim != 4:
        hint = " (one image? add a batch dimension: a[None])" if activations.ndim == 3 else ""
        raise UserError(
            f"activations must have shape B x C x H x W, got shape {tuple(activations.shape)}{hint}"
        )
    if not activations.is_floating_point():
        raise UserError(f"activations must be floating point, got dtype {activations.dtype}")


def check_args(method: str, n_concepts: int, algorithm: str, n_init: int, backend: str) -> None:
    if method not in CONCEPT_METHODS:
        raise UserError(f"unknown concept method {method!r}; choose one of {CONCEPT_METHODS}")
    if algorithm not in ALGORITHMS:
        raise UserError(f"unknown clustering algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    if isinstance(n_concepts, bool) or not isinstance(n_concepts, int | np.integer):
        raise UserError(f"n_concepts must be an integer >= 2, got {n_concepts!r}")
    if n_concepts < 2:
        raise UserError(f"n_concepts must be >= 2, got {n_concepts}")
    if n_init < 1:
        raise UserError(f"n_init must be >= 1, got {n_init}")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def warn_degenerate(message: str) -> None:
    """A :class:`DegenerateClusteringWarning` attributed to the caller's caller."""
    warnings.warn(message, DegenerateClusteringWarning, stacklevel=3)
