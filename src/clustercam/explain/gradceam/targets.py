"""What Grad-CeAM differentiates: a target is a value, not a string branch.

A :class:`GradCeAMTarget` is the loss ``L_c(z)`` for all K clusters at once, how its
gradient dL/dA is pooled over positions into channel weights (eq. 9: ``mean``; the
authors' code: ``sum``), a scale on the pooled weights, and whether eq. 10 applies ReLU to
them. The three built in:

- ``paper`` (eq. 5-8 as printed): ``L_c = sum_j z_j s_c,j r_j`` with centroid weights
  ``s_c`` (eq. 5) and representation weights ``r = (dmax - d_c) / (dmax - dmin)`` (eq. 6)
  held constant; mean pooling, scale 1, ReLU.
- ``reference`` (the authors' released code): ``r = ((dmax - dmin) / (d_c - dmin + 1e-3))^2``
  with the gradient flowing through r, ``|z|`` for ``z``; sum pooling, scale 2, no ReLU.
- ``assignment`` (beyond the paper): ``L_c = log softmax_k(-||z - mu_k||^2 / T)[c]``; mean,
  scale 1, ReLU.

A user's own target (say a Student-t assignment) is a fourth value of the same kind and
works wherever a target name does: ``grad_ceam``, the cardinality table, the scores.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.assignments import log_soft_assignment
from clustercam.explain.deprecation import renamed_parameters
from clustercam.explain.maps import minmax_normalise

PAPER_EPS = 1e-8
REFERENCE_EPS = 1e-3
REDUCTIONS = ("mean", "sum")

Loss = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class GradCeAMTarget:
    """``loss(z, centroids) -> N x K`` (differentiable in z), pooled into channel weights
    ``W_c,k = scale * reduction_positions(dL_c / dA_k)`` (eq. 9), mapped as
    ``M_c = sum_k [ReLU](W_c,k) A_k`` (eq. 10, ReLU when ``relu``).

    Example:
        >>> import torch
        >>> from clustercam.explain import GradCeAMTarget, grad_ceam
        >>> def nearness(z, mu):  # closer is larger
        ...     return -torch.cdist(z, mu)
        >>> target = GradCeAMTarget(nearness, reduction="mean", scale=1.0, relu=True)
        >>> target.name
        'nearness'
        >>> enc = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
        >>> res = grad_ceam(enc, "1", torch.randn(5, 1, 16), torch.randn(3, 4), target=target)
        >>> tuple(res.heatmaps.shape), res.mode
        ((5, 3, 16), 'nearness')
    """

    loss: Loss
    reduction: str = "mean"
    scale: float = 1.0
    relu: bool = True
    name: str = field(default="")

    def __post_init__(self) -> None:
        if not callable(self.loss):
            raise UserError(f"loss must be callable (z, centroids) -> N x K, got {type(self.loss).__name__}")
        if self.reduction not in REDUCTIONS:
            raise UserError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if not math.isfinite(float(self.scale)) or float(self.scale) == 0:
            raise UserError(f"scale must be a finite non-zero number, got {self.scale!r}")
        if not self.name:
            fn = self.loss.func if isinstance(self.loss, functools.partial) else self.loss
            object.__setattr__(self, "name", getattr(fn, "__name__", "custom").removesuffix("_loss"))

    def losses(self, z: Tensor, centroids: Tensor) -> Tensor:
        """L_c(z) for every sample and cluster, N x K (checked)."""
        out = self.loss(z, centroids)
        if not isinstance(out, Tensor) or out.shape != (z.shape[0], centroids.shape[0]):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise UserError(
                f"target {self.name!r}: loss(z, centroids) must return N x K = "
                f"{(z.shape[0], centroids.shape[0])}, got {shape}"
            )
        return out

    def pool(self, grads: Tensor, dims: tuple[int, ...]) -> Tensor:
        """Eq. 9 over the position axes ``dims``: ``scale * mean`` (or ``sum``)."""
        pooled = grads.sum(dims) if self.reduction == "sum" else grads.mean(dims)
        return pooled * self.scale if self.scale != 1 else pooled

    def pool_total(self, total: Tensor, positions: int) -> Tensor:
        """Eq. 9 from the sum of dL/dA over the ``positions`` (when only the sum is known)."""
        pooled = total if self.reduction == "sum" else total / positions
        return pooled * self.scale if self.scale != 1 else pooled


def centroid_weights(centroids: Tensor) -> Tensor:
    """Eq. 5: s_c = sum_k |mu_k - mu_c|, min-max normalised over the m features (all equal -> 1)."""
    s = (centroids[None, :, :] - centroids[:, None, :]).abs().sum(1)  # K x m
    return minmax_normalise(s, 1, constant=1.0)


def _distances(z: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Eq. 6 inputs: centroid weights K x m, d = |mu_k - z| (N x K x m), its min and max over k."""
    d = (centroids[None] - z[:, None, :]).abs()
    return centroid_weights(centroids), d, d.min(1, keepdim=True).values, d.max(1, keepdim=True).values


def paper_loss(z: Tensor, centroids: Tensor) -> Tensor:
    """Eq. 7-8 as printed: L_c = sum_j z_j s_c,j r_c,j, r = (dmax - d_c) / (dmax - dmin + eps) constant."""
    s, d, dmin, dmax = _distances(z, centroids)
    r = ((dmax - d) / (dmax - dmin + PAPER_EPS)).detach()
    return (z[:, None, :] * s[None] * r).sum(-1)


def reference_loss(z: Tensor, centroids: Tensor) -> Tensor:
    """The authors' code: L_c = sum_j |z_j| s_c,j r_c,j, r = ((dmax - dmin) / (d_c - dmin + 1e-3))^2."""
    s, d, dmin, dmax = _distances(z, centroids)
    r = ((dmax - dmin) / (d - dmin + REFERENCE_EPS)).pow(2)
    return (z.abs()[:, None, :] * s[None] * r).sum(-1)


def assignment_loss(z: Tensor, centroids: Tensor, temperature: float = 1.0) -> Tensor:
    """L_c = log softmax_k(-||z - mu_k||^2 / T)[c]: the log soft assignment to c."""
    return log_soft_assignment(z, centroids, temperature)


PAPER = GradCeAMTarget(paper_loss, reduction="mean", scale=1.0, relu=True, name="paper")
REFERENCE = GradCeAMTarget(reference_loss, reduction="sum", scale=2.0, relu=False, name="reference")
ASSIGNMENT = GradCeAMTarget(assignment_loss, reduction="mean", scale=1.0, relu=True, name="assignment")
# the built-in targets by name (not the concept runs' class targets)
GRADCEAM_TARGETS: dict[str, GradCeAMTarget] = {t.name: t for t in (PAPER, REFERENCE, ASSIGNMENT)}
GRADCEAM_TARGET_NAMES: tuple[str, ...] = tuple(GRADCEAM_TARGETS)


def assignment_target(temperature: float = 1.0) -> GradCeAMTarget:
    """The ``assignment`` target at temperature T."""
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature}")
    if temperature == 1.0:
        return ASSIGNMENT
    loss = functools.partial(assignment_loss, temperature=float(temperature))
    return GradCeAMTarget(loss, reduction="mean", scale=1.0, relu=True, name="assignment")


@renamed_parameters(mode="target")
def resolve_target(target: str | GradCeAMTarget, temperature: float = 1.0) -> GradCeAMTarget:
    """A target from its name (``paper``, ``reference``, ``assignment``) or a target itself.

    ``temperature`` (> 0) only applies to the ``assignment`` name.
    """
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise UserError(f"temperature must be > 0, got {temperature!r}")
    if isinstance(target, GradCeAMTarget):
        return target
    if isinstance(target, str) and target in GRADCEAM_TARGETS:
        return assignment_target(temperature) if target == "assignment" else GRADCEAM_TARGETS[target]
    raise UserError(
        f"unknown Grad-CeAM target {target!r}; choose one of {GRADCEAM_TARGET_NAMES} or pass a "
        "GradCeAMTarget"
    )

