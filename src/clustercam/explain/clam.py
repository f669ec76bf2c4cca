"""CLAM: Score-CAM on a clustering's soft assignment (Ryan et al. 2020; Wang et al. 2020).

The only cluster activation map before Grad-CeAM. For a sample x and target-layer
activations A (C channels): each channel, resized to the input and min-max normalised,
masks the input (``x * H_j``); the soft assignment of the masked input,
``s_jk = q_k(f(x * H_j))`` (DEC's Student-t kernel), scores channel j for every cluster k at
once; ``w_kj = softmax_j(s_jk)`` and ``L_k = ReLU(sum_j w_kj A_j)``.

Cost: C forward passes per sample, whatever K. They are batched: the masked inputs of
several samples and channels go through the encoder together, ``batch_size`` of them per
forward, so memory is bounded by the batch, not by N x C. Gradient-free (no hooks during the
masked passes; one hooked forward per chunk of samples reads A).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.assignments import student_t_assignment
from clustercam.explain.checks import check_embedding, check_inputs
from clustercam.explain.hooks import (
    eval_mode,
    forward_with_layer,
    module_device,
    module_dtype,
    resolve_layer,
)
from clustercam.explain.layouts import LayoutSpec
from clustercam.explain.maps import input_maps, minmax_normalise, resize_maps


@dataclass
class CLAMResult:
    """CLAM maps for N samples x K' clusters (K' = K, or 1 with ``clusters`` given).

    ``heatmaps``: N x K' x input size, resized and min-max normalised per sample and cluster.
    ``raw``: N x K' x target-layer size, ``ReLU(sum_j w_kj A_j)`` unnormalised.
    ``channel_weights``: N x K' x C, the softmax weights w. ``scores``: N x C x K, the soft
    assignment of each channel's masked input to every cluster. ``embeddings``: N x m of the
    unmasked inputs. ``clusters``: N x K', the cluster each map explains.
    """

    heatmaps: Tensor
    raw: Tensor
    channel_weights: Tensor
    scores: Tensor
    embeddings: Tensor
    clusters: Tensor


def clam_masks(activations: Tensor, size: Sequence[int]) -> Tensor:
    """Score-CAM's masks: each channel resized to the input and min-max normalised to [0, 1].

    Resizing is linear / bilinear with ``align_corners=False``; a constant channel gives an
    all-zero mask.

    Args:
        activations: ... x C x layer spatial (L, or h x w).
        size: the input's spatial size (1 or 2 entries).

    Returns:
        ... x C x input spatial masks.

    Example:
        >>> import torch
        >>> a = torch.tensor([[[0.0, 2.0], [3.0, 3.0]]])  # 1 sample, 2 channels, length 2
        >>> clam_masks(a, (4,))
        tensor([[[0.0000, 0.2500, 0.7500, 1.0000],
                 [0.0000, 0.0000, 0.0000, 0.0000]]])
    """
    size = tuple(int(s) for s in size)
    return minmax_normalise(resize_maps(activations, size), len(size))


def _scores(encoder: nn.Module, x: Tensor, acts: Tensor, mu: Tensor, alpha: float,
            batch_size: int, scores: Tensor) -> None:
    """Write q(f(x_n * H_nj)) for every (sample, channel) pair of the chunk into ``scores``.

    ``batch_size`` pairs per forward; ``scores`` is n x C x K.
    """
    n, c = acts.shape[:2]
    flat = acts.reshape(n * c, *acts.shape[2:])
    out = scores.view(n * c, -1)
    size = tuple(x.shape[2:])
    for start in range(0, n * c, batch_size):
        stop = min(start + batch_size, n * c)
        masks = clam_masks(flat[start:stop], size)  # b x spatial
        owner = torch.arange(start, stop, device=x.device) // c
        z = encoder(x[owner] * masks[:, None])
        out[start:stop] = student_t_assignment(z, mu, alpha).to(out.dtype)


def clam(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    *,
    clusters: Tensor | None = None,
    alpha: float = 1.0,
    batch_size: int = 128,
    smooth: bool = False,
    layout: LayoutSpec = "auto",
) -> CLAMResult:
    """CLAM maps (Score-CAM on the Student-t soft assignment) for every sample and cluster.

    All K clusters come from the same C masked forward passes per sample; the passes of
    several samples and channels share each forward. Runs in eval mode without autograd;
    train/eval state is restored and the one hook that reads A is removed, also on errors.

    Args:
        encoder: maps x to N x m embeddings.
        target_layer: the encoder module (or its dotted name) whose channels mask the input.
        x: N x C_in x L (series) or N x C_in x H x W (images).
        centroids: K x m: a clustering layer's or k-means'.
        clusters: N cluster ids: only each sample's given cluster (K' = 1); None: all K.
        alpha: the Student-t kernel's degrees of freedom (DEC: 1).
        batch_size: masked inputs per forward pass (bounds memory; >= 1). On a CPU small
            batches run faster per input (cache); on a GPU raise it.
        smooth: moving average of series maps (radius ceil(L / 20)).
        layout: how the target layer's output is read as channels at positions
            (:mod:`clustercam.explain.layouts`; ``auto``: a transformer's tokens and a
            channels-last map as their grid, so each channel of a token layer masks the
            input as a patch-grid map; a callable overrides the reading).

    Returns:
        A :class:`CLAMResult`.

    Raises:
        UserError: bad ``alpha``, ``batch_size`` or ``clusters``, or x, the centroids or the
            embedding do not fit (named).

    Example:
        >>> import torch
        >>> from clustercam.explain import clam
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> enc = ResNetCAE((1, 32), filters=(4, 4), embedding_dim=3).encoder
        >>> x, mu = torch.randn(5, 1, 32), torch.randn(2, 3)
        >>> res = clam(enc, "features", x, mu, batch_size=8)
        >>> tuple(res.heatmaps.shape), tuple(res.channel_weights.shape), tuple(res.scores.shape)
        ((5, 2, 32), (5, 2, 4), (5, 4, 2))
        >>> bool(torch.allclose(res.channel_weights.sum(-1), torch.ones(5, 2)))
        True
    """
    if not alpha > 0:
        raise UserError(f"alpha must be > 0, got {alpha}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_inputs(x, centroids)
    n, k = x.shape[0], centroids.shape[0]
    if clusters is not None:
        clusters = torch.as_tensor(clusters, dtype=torch.long).flatten().cpu()
        if clusters.shape[0] != n or bool((clusters < 0).any()) or bool((clusters >= k).any()):
            raise UserError(f"clusters must be N = {n} cluster ids in [0, {k}), got {clusters.tolist()[:10]}")
    layer = resolve_layer(encoder, target_layer)
    device, dtype = module_device(encoder, x.device), module_dtype(encoder)
    mu = centroids.detach().to(device=device, dtype=dtype)
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    with eval_mode(encoder), torch.no_grad():
        _, probe = forward_with_layer(encoder, layer, x[:1].to(device=device, dtype=dtype), layout=layout)
        step = max(1, batch_size // probe.shape[1])  # samples per chunk: ~batch_size pairs
        for start in range(0, n, step):
            xb = x[start : start + step].to(device=device, dtype=dtype)
            z, acts = forward_with_layer(encoder, layer, xb, layout=layout)
            check_embedding(z, mu)
            s = torch.empty((xb.shape[0], acts.shape[1], k), dtype=dtype, device=device)
            _scores(encoder, xb, acts, mu, alpha, batch_size, s)
            parts.append((z.cpu(), acts.cpu(), s.cpu()))
    z = torch.cat([p[0] for p in parts])
    acts = torch.cat([p[1] for p in parts])
    scores = torch.cat([p[2] for p in parts])  # N x C x K
    weights = torch.softmax(scores, dim=1).transpose(1, 2)  # N x K x C
    explained = torch.arange(k).expand(n, k) if clusters is None else clusters[:, None]
    if clusters is not None:
        weights = weights[torch.arange(n), clusters][:, None]
    raw = torch.einsum("nkc,ncs->nks", weights, acts.flatten(2)).clamp_min(0)
    raw = raw.reshape(n, weights.shape[1], *acts.shape[2:])
    heat = input_maps(raw, tuple(x.shape[2:]), smooth=smooth)
    return CLAMResult(heatmaps=heat, raw=raw, channel_weights=weights, scores=scores,
                      embeddings=z, clusters=explained.clone())
