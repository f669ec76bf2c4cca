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

Example:
    >>> from clustercam.explain import ASSIGNMENT, GRADCEAM_TARGET_NAMES, PAPER, REFERENCE
    >>> GRADCEAM_TARGET_NAMES
    ('paper', 'reference', 'assignment')
    >>> [(t.name, t.reduction, t.scale, t.relu) for t in (PAPER, REFERENCE, ASSIGNMENT)]
    [('paper', 'mean', 1.0, True), ('reference', 'sum', 2.0, False), ('assignment', 'mean', 1.0, True)]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.assignments import log_soft_assignment, log_student_t_assignment
from clustercam.explain.deprecation import renamed_parameters
from clustercam.explain.maps import minmax_normalise

PAPER_EPS = 1e-8
REFERENCE_EPS = 1e-3
REDUCTIONS = ("mean", "sum")

Loss = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class GradCeAMTarget:
    """What Grad-CeAM differentiates, how it pools the gradient and draws the map (eq. 7-10).

    The loss gives ``L_c(z)`` for all K clusters at once; its gradient at the target layer is
    pooled into channel weights ``W_c,k = scale * reduction_positions(dL_c / dA_k)`` (eq. 9)
    and the map is ``M_c = sum_k [ReLU](W_c,k) A_k`` (eq. 10, the ReLU when ``relu``).
    :data:`PAPER`, :data:`REFERENCE` and :data:`ASSIGNMENT` are the built-in values; anything
    that takes a target name takes a value of this class too.

    Args:
        loss: ``loss(z, centroids) -> N x K`` from embeddings N x m and centroids K x m,
            differentiable in z.
        reduction: how eq. 9 pools over the positions, ``mean`` (the paper) or ``sum``.
        scale: a finite non-zero factor on the pooled weights.
        relu: whether eq. 10 applies a ReLU to the weights.
        name: what results and tables call the target (default: the loss function's name
            without a ``_loss`` suffix).

    Raises:
        UserError: a loss that is not callable, an unknown reduction, a zero or non-finite
            scale.

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
        """L_c(z) for every sample and cluster (eq. 8 for the paper's target).

        Args:
            z: embeddings N x m.
            centroids: K x m.

        Returns:
            N x K, differentiable in z.

        Raises:
            UserError: the loss does not return an N x K tensor.
        """
        out = self.loss(z, centroids)
        if not isinstance(out, Tensor) or out.shape != (z.shape[0], centroids.shape[0]):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise UserError(
                f"target {self.name!r}: loss(z, centroids) must return N x K = "
                f"{(z.shape[0], centroids.shape[0])}, got {shape}"
            )
        return out

    def pool(self, grads: Tensor, dims: tuple[int, ...]) -> Tensor:
        """Eq. 9 over the position axes ``dims``: ``scale * mean`` (or ``sum``).

        Args:
            grads: dL/dA, e.g. K x N x C x spatial.
            dims: the position axes of ``grads``.

        Returns:
            ``grads`` without the ``dims`` axes (e.g. K x N x C).
        """
        pooled = grads.sum(dims) if self.reduction == "sum" else grads.mean(dims)
        return pooled * self.scale if self.scale != 1 else pooled

    def pool_total(self, total: Tensor, positions: int) -> Tensor:
        """Eq. 9 from the sum of dL/dA over the positions (when only the sum is known).

        Args:
            total: dL/dA summed over the positions, any shape.
            positions: how many positions were summed (the mean divides by it).

        Returns:
            The channel weights, the shape of ``total``.
        """
        pooled = total if self.reduction == "sum" else total / positions
        return pooled * self.scale if self.scale != 1 else pooled


def centroid_weights(centroids: Tensor) -> Tensor:
    """Eq. 5: ``s_c = sum_k |mu_k - mu_c|``, min-max normalised over the m features.

    How far centroid c lies from the others along each feature: the features that set c
    apart weigh most in the paper's loss (eq. 7-8).

    Args:
        centroids: K x m.

    Returns:
        K x m in [0, 1]; a row whose entries are all equal becomes 1.

    Example:
        >>> import torch
        >>> from clustercam.explain import centroid_weights
        >>> centroid_weights(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [3.0, 0.0, 1.0]]))
        tensor([[1.0000, 0.3333, 0.0000],
                [0.6667, 1.0000, 0.0000],
                [1.0000, 0.0000, 0.0000]])
    """
    s = (centroids[None, :, :] - centroids[:, None, :]).abs().sum(1)  # K x m
    return minmax_normalise(s, 1, constant=1.0)


def _distances(z: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Eq. 6 inputs: centroid weights K x m, d = |mu_k - z| (N x K x m), its min and max over k."""
    d = (centroids[None] - z[:, None, :]).abs()
    return centroid_weights(centroids), d, d.min(1, keepdim=True).values, d.max(1, keepdim=True).values


def paper_loss(z: Tensor, centroids: Tensor) -> Tensor:
    """Eq. 7-8 as printed: ``L_c = sum_j z_j s_c,j r_c,j``, the representation weights constant.

    ``r = (dmax - d_c) / (dmax - dmin + eps)`` (eq. 6) is detached, so the loss is linear in z.

    Args:
        z: embeddings N x m.
        centroids: K x m.

    Returns:
        N x K.
    """
    s, d, dmin, dmax = _distances(z, centroids)
    r = ((dmax - d) / (dmax - dmin + PAPER_EPS)).detach()
    return (z[:, None, :] * s[None] * r).sum(-1)


def reference_loss(z: Tensor, centroids: Tensor) -> Tensor:
    """The authors' released code: ``L_c = sum_j |z_j| s_c,j r_c,j``.

    With ``r = ((dmax - dmin) / (d_c - dmin + 1e-3))^2`` in place of eq. 6, the gradient
    flowing through r.

    Args:
        z: embeddings N x m.
        centroids: K x m.

    Returns:
        N x K.
    """
    s, d, dmin, dmax = _distances(z, centroids)
    r = ((dmax - dmin) / (d - dmin + REFERENCE_EPS)).pow(2)
    return (z.abs()[:, None, :] * s[None] * r).sum(-1)


def assignment_loss(z: Tensor, centroids: Tensor, temperature: float = 1.0) -> Tensor:
    """``L_c = log softmax_k(-||z - mu_k||^2 / T)[c]``: the log soft assignment to c.

    Args:
        z: embeddings N x m.
        centroids: K x m.
        temperature: T (> 0).

    Returns:
        N x K.
    """
    return log_soft_assignment(z, centroids, temperature)


PAPER = GradCeAMTarget(paper_loss, reduction="mean", scale=1.0, relu=True, name="paper")
"""Eq. 7-10 as printed: the loss linear in z, mean pooling, ReLU on the weights."""
REFERENCE = GradCeAMTarget(reference_loss, reduction="sum", scale=2.0, relu=False, name="reference")
"""The authors' released code: their representation weights, sum pooling times 2, no ReLU."""
ASSIGNMENT = GradCeAMTarget(assignment_loss, reduction="mean", scale=1.0, relu=True, name="assignment")
"""Beyond the paper: the log soft assignment (temperature 1), mean pooling, ReLU."""
# the built-in targets by name (not the concept runs' class targets)
GRADCEAM_TARGETS: dict[str, GradCeAMTarget] = {t.name: t for t in (PAPER, REFERENCE, ASSIGNMENT)}
"""The built-in targets by name."""
GRADCEAM_TARGET_NAMES: tuple[str, ...] = tuple(GRADCEAM_TARGETS)
"""The names a target can be given by: ``("paper", "reference", "assignment")``."""


def assignment_target(temperature: float = 1.0) -> GradCeAMTarget:
    """The ``assignment`` target at temperature T.

    Args:
        temperature: T (> 0); 1 gives :data:`ASSIGNMENT` itself.

    Returns:
        A :class:`GradCeAMTarget` named ``assignment``.

    Raises:
        UserError: a temperature that is not > 0.
    """
    if not temperature > 0:
        raise UserError(f"temperature must be > 0, got {temperature}")
    if temperature == 1.0:
        return ASSIGNMENT
    loss = functools.partial(assignment_loss, temperature=float(temperature))
    return GradCeAMTarget(loss, reduction="mean", scale=1.0, relu=True, name="assignment")


def student_t_loss(z: Tensor, centroids: Tensor, alpha: float = 1.0) -> Tensor:
    """L_c = log q_c with DEC's Student-t kernel: a deep clustering model's own assignment.

    Args:
        z: N x m embeddings.
        centroids: K x m.
        alpha: the kernel's degrees of freedom (> 0).

    Returns:
        N x K log-probabilities.
    """
    return log_student_t_assignment(z, centroids, alpha)


def student_t_target(alpha: float = 1.0) -> GradCeAMTarget:
    """The ``assignment`` target with DEC's Student-t kernel at ``alpha`` (name ``student_t``).

    It is what a DEC / IDEC / DCEC model's clustering layer outputs; mean, scale 1, ReLU.

    Args:
        alpha: the kernel's degrees of freedom (> 0; DEC: 1).

    Returns:
        The :class:`GradCeAMTarget` named ``student_t``.

    Raises:
        UserError: ``alpha`` is not > 0 (checked here, not at the first map).
    """
    loss = functools.partial(student_t_loss, alpha=float(alpha))
    loss(torch.zeros(1, 1), torch.zeros(2, 1))  # a bad alpha fails here, not at the first map
    return GradCeAMTarget(loss, reduction="mean", scale=1.0, relu=True, name="student_t")


@renamed_parameters(mode="target")
def resolve_target(target: str | GradCeAMTarget, temperature: float = 1.0) -> GradCeAMTarget:
    """A target from its name (``paper``, ``reference``, ``assignment``) or a target itself.

    Args:
        target: a :class:`GradCeAMTarget` (returned as it is) or one of
            :data:`GRADCEAM_TARGET_NAMES`. ``mode=`` is the old name.
        temperature: of the ``assignment`` name (> 0; checked for every target).

    Returns:
        The :class:`GradCeAMTarget`.

    Raises:
        UserError: an unknown name or a temperature that is not > 0.

    Example:
        >>> from clustercam.explain.gradceam import resolve_target
        >>> resolve_target("paper").reduction, resolve_target("assignment", 0.5).name
        ('mean', 'assignment')
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

