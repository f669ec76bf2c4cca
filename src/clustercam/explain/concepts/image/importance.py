"""Concept importance by ablation (paper eq. 3), every concept of a batch in one head call."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.checks import check_activations
from clustercam.explain.concepts.image.ablation import PooledHead, masked_probs
from clustercam.explain.concepts.image.extract import concept_counts
from clustercam.explain.deprecation import renamed_parameters


@torch.no_grad()
@renamed_parameters(labels="concept_labels")
def concept_importance(
    head: Callable[[Tensor], Tensor],
    activations: Tensor,
    concept_labels: Tensor,
    targets: Tensor | Sequence[int] | None,
    *,
    n_concepts: int | None = None,
    return_probs: bool = False,
    pooled_head: PooledHead | None = None,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """B x n_concepts importance in percent: ``I_l = (p_t - p_l) / p_t * 100`` (paper eq. 3).

    ``p_t``: softmax probability of class ``targets[b]`` (``None``: the predicted class)
    from ``head(A)``; ``p_l``: the same with concept l's channels zeroed. Negative when
    removing the concept makes the model more confident; NaN for an empty concept. The
    B x n_concepts ablations go through ``head`` at once; with a :class:`PooledHead` (a
    model whose head is pooling + one linear layer) as rows of its linear layer, without
    copies of ``A`` (:func:`~clustercam.explain.concepts.image.ablation.masked_target_probs`).
    With ``return_probs`` also returns ``p_t`` (B) and ``p_l`` (B x n_concepts).

    Example:
        >>> import torch
        >>> from clustercam.explain import concept_importance
        >>> head = lambda a: torch.stack([a[:, 0].mean((1, 2)), a[:, 1].mean((1, 2))], 1)
        >>> a = torch.ones(1, 2, 2, 2) * torch.tensor([3.0, 1.0]).view(1, 2, 1, 1)
        >>> concept_labels = torch.tensor([[0, 1]])   # concept 0 = channel 0, concept 1 = channel 1
        >>> imp = concept_importance(head, a, concept_labels, targets=[0])
        >>> [round(v, 1) for v in imp[0].tolist()]   # p_0: 0.881, 0.269 without C0, 0.953 without C1
        [69.5, -8.1]
    """
    check_activations(activations)
    labels = concept_labels
    if labels.shape != activations.shape[:2]:
        raise UserError(f"concept_labels must be B x C = {tuple(activations.shape[:2])}, got {tuple(labels.shape)}")
    b = activations.shape[0]
    n = int(labels.max()) + 1 if n_concepts is None else int(n_concepts)
    if n < 1:
        raise UserError(f"n_concepts must be >= 1, got {n}")
    labels = labels.to(activations.device)
    ids = torch.arange(n, device=activations.device)
    keep = torch.cat([torch.ones_like(labels, dtype=torch.bool).unsqueeze(1),  # the original A
                      labels.unsqueeze(1) != ids[None, :, None]], 1)  # B x (1 + n) x C
    probs = masked_probs(head, activations, keep, pooled_head=pooled_head, max_rows=max(1024, b * (n + 1)))
    base, abl = probs[:, 0], probs[:, 1:]
    if targets is None:
        t = base.argmax(-1)
    else:
        t = torch.as_tensor(targets, dtype=torch.long, device=probs.device).view(-1)
        if len(t) != b:
            raise UserError(f"targets has {len(t)} entries for {b} images")
        if bool(((t < 0) | (t >= probs.shape[-1])).any()):
            raise UserError(f"targets must be class indices in [0, {probs.shape[-1]}), got {t.tolist()}")
    p_t = base.gather(1, t[:, None]).squeeze(1)
    p_l = abl.gather(2, t[:, None, None].expand(b, n, 1)).squeeze(-1)
    imp = (p_t[:, None] - p_l) / p_t[:, None] * 100
    empty = concept_counts(labels, n).to(imp.device) == 0
    imp = imp.masked_fill(empty, float("nan"))
    if return_probs:
        return imp, p_t, p_l.masked_fill(empty, float("nan"))
    return imp


def importance_order(importance: Sequence[float]) -> list[int]:
    """Concept indices by decreasing importance, NaN (empty concepts) last."""
    imp = [float(v) for v in importance]
    return sorted(range(len(imp)), key=lambda i: (math.isnan(imp[i]), -imp[i] if not math.isnan(imp[i]) else 0))
