"""Cluster-cardinality discrimination (paper eq. 12 and Table I).

Amplify each channel of the target layer by cluster c's Grad-CeAM channel weight,
re-encode, and count how many samples the *original* centroids now assign to c.
If the weighted channels really drive the assignment, c should gain members.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.explain.assignments import nearest
from clustercam.explain.checks import check_embedding, check_inputs
from clustercam.explain.deprecation import reordered_parameters
from clustercam.explain.hooks import (
    eval_mode,
    hooked,
    layer_layout,
    module_device,
    module_dtype,
    resolve_layer,
)
from clustercam.explain.layouts import LayoutSpec
from clustercam.explain.maps import minmax_normalise

Normalise = Literal["minmax", "raw"]


@dataclass
class CardinalityResult:
    """The cardinality table (paper Table I): per cluster, members before and after eq. 12.

    Attributes:
        before: K (long), samples the original centroids assign to each cluster.
        after: K (long), samples assigned to cluster c once their target-layer channels are
            amplified by c's weights (eq. 12).
        ratio: K (float), ``after / before``; NaN where ``before`` is 0.

    Example:
        >>> import torch
        >>> from clustercam.explain import CardinalityResult
        >>> table = CardinalityResult(before=torch.tensor([4, 2, 0]),
        ...                           after=torch.tensor([6, 2, 1]),
        ...                           ratio=torch.tensor([1.5, 1.0, float("nan")]))
        >>> table.rows()[0]
        {'cluster': 0, 'before': 4, 'after': 6, 'ratio': 1.5}
        >>> table.summary()
        {'median': 1.25, 'mean': 1.25, 'min': 1.0, 'max': 1.5, 'empty_clusters': 1}
    """

    before: Tensor  # K, long
    after: Tensor  # K, long
    ratio: Tensor  # K, float (NaN where before == 0)

    def rows(self) -> list[dict[str, float | int]]:
        """One row per cluster, for a CSV or a W&B table.

        Returns:
            Dicts ``{"cluster", "before", "after", "ratio"}``, cluster 0 first.
        """
        return [
            {"cluster": c, "before": int(b), "after": int(a), "ratio": float(r)}
            for c, (b, a, r) in enumerate(
                zip(self.before.tolist(), self.after.tolist(), self.ratio.tolist())
            )
        ]

    def summary(self) -> dict[str, float]:
        """Median, mean, min and max of the ratio over the clusters non-empty before.

        Returns:
            ``{"median", "mean", "min", "max", "empty_clusters"}``; the four statistics are
            NaN (with a warning) when every cluster is empty.
        """
        valid = self.ratio[torch.isfinite(self.ratio)]
        empty = int((self.before == 0).sum())
        if valid.numel() == 0:
            warnings.warn("every cluster is empty: the cardinality summary is NaN", stacklevel=2)
            nan = math.nan
            return {"median": nan, "mean": nan, "min": nan, "max": nan, "empty_clusters": empty}
        v = valid.double()
        return {
            # the usual median (mean of the two middle values for an even count)
            "median": float(v.quantile(0.5)),
            "mean": float(v.mean()),
            "min": float(v.min()),
            "max": float(v.max()),
            "empty_clusters": empty,
        }


def amplification_weights(channel_weights: Tensor, normalise: Normalise = "minmax") -> Tensor:
    """Eq. 12's per-sample channel multipliers ``||ReLU(W_c)||_[0, 2]``.

    Args:
        channel_weights: N x K x C, Grad-CeAM's weights (eq. 9).
        normalise: ``minmax`` (ReLU, then min-max over the channels to [0, 2]; a constant
            row gives 1) or ``raw`` (the weights as they are: what the authors' code did with
            its reference-target weights).

    Returns:
        N x K x C multipliers.

    Raises:
        UserError: an unknown ``normalise``.

    Example:
        >>> import torch
        >>> from clustercam.explain.gradceam import amplification_weights
        >>> amplification_weights(torch.tensor([[[-1.0, 0.0, 2.0]]]))
        tensor([[[0., 0., 2.]]])
    """
    if normalise == "raw":
        return channel_weights
    if normalise != "minmax":
        raise UserError(f"unknown normalise {normalise!r}; choose 'minmax' or 'raw'")
    return 2 * minmax_normalise(channel_weights.clamp_min(0), 1, constant=0.5)


@reordered_parameters("encoder", "target_layer", "x", "centroids", "channel_weights", "normalise",
                      "batch_size", when=lambda args, kwargs: len(args) > 5)
def cardinality(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    channel_weights: Tensor,
    *,
    normalise: Normalise = "minmax",
    batch_size: int | None = 256,
    layout: LayoutSpec = "auto",
) -> CardinalityResult:
    """The discrimination table (paper Table I): ``ratio_c = #{in c after} / #{in c before}``.

    Every sample is re-encoded once per cluster with its target-layer channels A_k multiplied
    by that cluster's amplification weights (eq. 12) and assigned to the nearest *original*
    centroid; all K variants of a chunk go through the rest of the encoder as one batch, so
    layers after the target must treat samples independently (no skip connection may jump
    over the target layer).

    Args:
        encoder: maps x to embeddings N x m.
        target_layer: the module (or its dotted name) whose channels are amplified.
        x: N x C x L (series) or N x C x H x W (images).
        centroids: K x m.
        channel_weights: N x K x C, Grad-CeAM's ``channel_weights`` (any target).
        normalise: ``minmax`` (eq. 12: ReLU, then [0, 2] per sample) or ``raw``.
        batch_size: encoder inputs per chunk (samples x K); None: one chunk.
        layout: how the target layer's output is read (as for :func:`grad_ceam`): the
            channels of a token or channels-last layer are scaled at its grid positions.

    Returns:
        A :class:`CardinalityResult`: counts before / after and their ratio per cluster.

    Raises:
        UserError: weights of the wrong shape, non-finite weights, a bad ``normalise``.

    Example:
        >>> import torch
        >>> from clustercam.explain import cardinality, grad_ceam
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> net = ResNetCAE((1, 32), filters=(4, 4), embedding_dim=3)
        >>> x = torch.randn(20, 1, 32)
        >>> mu = net.encoder.eval()(x)[:3].detach()
        >>> w = grad_ceam(net.encoder, "features", x, mu, return_maps=False).channel_weights
        >>> table = cardinality(net.encoder, "features", x, mu, w)
        >>> int(table.before.sum()), sorted(table.summary())
        (20, ['empty_clusters', 'max', 'mean', 'median', 'min'])
    """
    check_inputs(x, centroids)
    n, k = x.shape[0], centroids.shape[0]
    if channel_weights.dim() != 3 or channel_weights.shape[:2] != (n, k):
        raise UserError(
            f"channel_weights must be N x K x C = {n} x {k} x C, got {tuple(channel_weights.shape)}"
        )
    if not torch.isfinite(channel_weights).all():
        bad = (~torch.isfinite(channel_weights)).flatten(1).any(1).nonzero().flatten()[:5].tolist()
        raise UserError(
            f"channel_weights contain NaN or infinite values (samples {bad} ...); recompute them "
            "with grad_ceam (a diverged encoder gives non-finite gradients)"
        )
    layer = resolve_layer(encoder, target_layer)
    device = module_device(encoder, x.device)
    dtype = module_dtype(encoder)
    mu = centroids.detach().to(device=device, dtype=dtype)
    amp = amplification_weights(channel_weights.detach(), normalise)
    step = n if batch_size is None else max(1, batch_size // k)
    before = torch.empty(n, dtype=torch.long)
    after = torch.empty(n, k, dtype=torch.long)
    current: dict[str, Tensor] = {}

    def scale(output: Tensor) -> Tensor:
        w = current["w"]  # b x K x C
        lay = layer_layout(encoder, layer, output, current["x"], layout)
        a = output if lay is None else lay.read(output)  # channels first
        if a.shape[1] != w.shape[-1]:
            raise UserError(
                f"channel_weights have {w.shape[-1]} channels but the target layer outputs "
                f"{a.shape[1]}"
            )
        b = a.shape[0]
        view = (b, k, w.shape[-1]) + (1,) * (a.dim() - 2)
        scaled = (a[:, None] * w.reshape(view)).reshape(b * k, *a.shape[1:])
        return scaled if lay is None else lay.write(scaled, output.repeat_interleave(k, 0))

    with eval_mode(encoder), torch.no_grad():
        for start in range(0, n, step):
            xb = x[start : start + step].to(device=device, dtype=dtype)
            z0 = encoder(xb)
            check_embedding(z0, mu)
            before[start : start + len(xb)] = nearest(z0, mu).cpu()
            current["w"] = amp[start : start + step].to(device=device, dtype=dtype)
            current["x"] = xb
            with hooked(layer, scale):
                z1 = encoder(xb)
            if z1.shape[0] != len(xb) * k:
                raise UserError(
                    "the layers after the target layer mix samples (a skip connection over "
                    "the target layer?): cannot batch the K amplified copies"
                )
            after[start : start + len(xb)] = nearest(z1, mu).cpu().reshape(len(xb), k)
    count_before = torch.bincount(before, minlength=k)
    hits = after == torch.arange(k)[None, :]
    count_after = hits.sum(0)
    ratio = torch.where(
        count_before > 0, count_after.double() / count_before.clamp_min(1).double(), math.nan
    )
    if (count_before == 0).any():
        empty = (count_before == 0).nonzero().flatten().tolist()
        warnings.warn(
            f"clusters {empty} are empty before amplification: their ratio is NaN and they "
            "are excluded from the summary",
            stacklevel=2,
        )
    return CardinalityResult(before=count_before, after=count_after, ratio=ratio)
