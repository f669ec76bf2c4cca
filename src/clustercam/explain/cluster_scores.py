"""A cluster score module: an encoder and its centroids as one score per cluster (N x K).

What the attribution libraries (captum, Quantus, pytorch-grad-cam) need to explain a
clustering as if it were a classifier; above :mod:`.assignments` and :mod:`.evidence`, whose
scores it outputs.
"""

from __future__ import annotations

from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.assignments import (
    ASSIGNMENTS,
    Assignment,
    log_soft_assignment,
    soft_assignment,
)
from clustercam.explain.evidence import check_beta, cluster_evidence

# what a cluster score module outputs per cluster (not the scores of :mod:`.scores`)
CLUSTER_SCORES: tuple[str, ...] = ("probability", "log_probability", "evidence")


class ClusterScoreModel(nn.Module):
    """An encoder wrapped to output per-cluster scores, N x K: a cluster target for any library.

    Makes a clustering look like a classifier to libraries that expect one (Quantus, captum,
    pytorch-grad-cam): the "class" of a sample is its cluster, and ``target=c`` explains
    cluster c. :func:`~clustercam.explain.attribution.cluster_target` builds one with the
    temperature measured on the data.

    Args:
        encoder: maps x to embeddings N x m.
        centroids: K x m (kept as a float buffer, so the module moves with ``.to()``).
        kind: the soft assignment, ``softmax`` (at ``temperature``) or ``student_t`` (DEC's
            kernel at ``alpha``).
        temperature: of the softmax (> 0).
        alpha: Student-t degrees of freedom.
        score: ``probability`` (the soft assignment q), ``log_probability`` (log q: for
            softmax the log soft assignment, the target of Grad-CeAM's ``assignment`` mode)
            or ``evidence`` (NEON's f_c: the hard minimum of the K - 1 margins for
            ``beta=None``, else their soft-min at ``beta``;
            :func:`clustercam.explain.evidence.cluster_evidence`).
        beta: of ``evidence``: None or a number > 0.

    Raises:
        UserError: an unknown score or kind, a temperature that is not > 0, a bad beta.

    Example:
        >>> import torch
        >>> from clustercam.explain.cluster_scores import ClusterScoreModel
        >>> enc = torch.nn.Flatten()
        >>> model = ClusterScoreModel(enc, torch.tensor([[0.0, 0.0], [4.0, 0.0]]), score="evidence")
        >>> model(torch.tensor([[[1.0, 0.0]]]))  # f_c of z = (1, 0)
        tensor([[ 8., -8.]])
    """

    def __init__(
        self,
        encoder: nn.Module,
        centroids: Tensor,
        kind: Assignment = "softmax",
        temperature: float = 1.0,
        alpha: float = 1.0,
        score: str = "probability",
        beta: float | None = None,
    ) -> None:
        super().__init__()
        if score not in CLUSTER_SCORES:
            raise UserError(f"unknown score {score!r}; choose one of {CLUSTER_SCORES}")
        if kind not in ASSIGNMENTS:
            raise UserError(f"unknown assignment {kind!r}; choose one of {ASSIGNMENTS}")
        if not temperature > 0:
            raise UserError(f"temperature must be > 0, got {temperature}")
        if score == "evidence":
            check_beta(beta)
            if beta == "auto":
                raise UserError("ClusterScoreModel needs a number for beta (or None): see "
                                 "clustercam.explain.evidence.default_beta")
        self.encoder = encoder
        self.register_buffer("centroids", centroids.detach().clone().float())
        self.kind, self.temperature, self.alpha = kind, temperature, alpha
        self.score, self.beta = score, beta

    def forward(self, x: Tensor) -> Tensor:
        """The cluster scores of x (N x C x ...): N x K, in the encoder's dtype."""
        z = self.encoder(x)
        if self.score == "evidence":
            return cluster_evidence(z, self.centroids, self.beta).to(z.dtype)
        if self.score == "log_probability" and self.kind == "softmax":
            return log_soft_assignment(z, self.centroids.to(z.dtype), self.temperature)
        q = soft_assignment(z, self.centroids, self.kind, self.temperature, self.alpha)
        return (q.log() if self.score == "log_probability" else q).to(z.dtype)
