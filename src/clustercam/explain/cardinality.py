"""Cluster-cardinality discrimination (SPEC § 3, paper eq. 12 and Table I).

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

from clustercam.explain._layers import (
    check_embedding,
    check_inputs,
    eval_mode,
    hooked,
    module_device,
    resolve_layer,
)

Normalise = Literal["minmax", "raw"]


@dataclass
class CardinalityResult:
    """Per-cluster counts before and after amplification, and their ratio (NaN if empty before)."""

    before: Tensor  # K, long
    after: Tensor  # K, long
    ratio: Tensor  # K, float (NaN where before == 0)

    def rows(self) -> list[dict[str, float | int]]:
        """Rows ``cluster, before, after, ratio`` for a CSV or a W&B table."""
        return [
            {"cluster": c, "before": int(b), "after": int(a), "ratio": float(r)}
            for c, (b, a, r) in enumerate(
                zip(self.before.tolist(), self.after.tolist(), self.ratio.tolist())
            )
        ]

    def summary(self) -> dict[str, float]:
        """Median, mean, min, max of the ratio over clusters that were non-empty before."""
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
    """Per-sample channel multipliers from N x K x C channel weights.

    ``minmax``: ReLU, then min-max over the channels to [0, 2] (a constant row gives 1).
    ``raw``: the weights as they are (what the authors' code did with reference-mode weights).
    """
    if normalise == "raw":
        return channel_weights
    if normalise != "minmax":
        raise ValueError(f"unknown normalise {normalise!r}; choose 'minmax' or 'raw'")
    w = channel_weights.clamp_min(0)
    lo = w.min(-1, keepdim=True).values
    hi = w.max(-1, keepdim=True).values
    span = hi - lo
    return torch.where(span > 0, 2 * (w - lo) / span.clamp_min(torch.finfo(w.dtype).tiny), 1.0)


def nearest(z: Tensor, centroids: Tensor) -> Tensor:
    """Index of the nearest centroid (squared Euclidean distance) for each row of z."""
    return torch.cdist(z.double(), centroids.double()).argmin(1)


def cardinality(
    encoder: nn.Module,
    target_layer: nn.Module | str,
    x: Tensor,
    centroids: Tensor,
    channel_weights: Tensor,
    normalise: Normalise = "minmax",
    batch_size: int | None = 256,
) -> CardinalityResult:
    """The discrimination table for K clusters.

    ``channel_weights`` (N x K x C) are Grad-CeAM's ``channel_weights``. Every sample is
    re-encoded once per cluster with its target-layer channels multiplied by that
    cluster's weights; all K variants of a chunk go through the rest of the encoder as one
    batch, so layers after the target must treat samples independently (no skip
    connection may jump over the target layer).
    """
    check_inputs(x, centroids)
    n, k = x.shape[0], centroids.shape[0]
    if channel_weights.dim() != 3 or channel_weights.shape[:2] != (n, k):
        raise ValueError(
            f"channel_weights must be N x K x C = {n} x {k} x C, got {tuple(channel_weights.shape)}"
        )
    layer = resolve_layer(encoder, target_layer)
    device = module_device(encoder, x.device)
    dtype = next((p.dtype for p in encoder.parameters()), torch.float32)
    mu = centroids.detach().to(device=device, dtype=dtype)
    amp = amplification_weights(channel_weights.detach(), normalise)
    step = n if batch_size is None else max(1, batch_size // k)
    before = torch.empty(n, dtype=torch.long)
    after = torch.empty(n, k, dtype=torch.long)
    current: dict[str, Tensor] = {}

    def scale(output: Tensor) -> Tensor:
        w = current["w"]  # b x K x C
        if output.shape[1] != w.shape[-1]:
            raise ValueError(
                f"channel_weights have {w.shape[-1]} channels but the target layer outputs "
                f"{output.shape[1]}"
            )
        b = output.shape[0]
        view = (b, k, w.shape[-1]) + (1,) * (output.dim() - 2)
        return (output[:, None] * w.reshape(view)).reshape(b * k, *output.shape[1:])

    with eval_mode(encoder), torch.no_grad():
        for start in range(0, n, step):
            xb = x[start : start + step].to(device=device, dtype=dtype)
            z0 = encoder(xb)
            check_embedding(z0, mu)
            before[start : start + len(xb)] = nearest(z0, mu).cpu()
            current["w"] = amp[start : start + step].to(device=device, dtype=dtype)
            with hooked(layer, scale):
                z1 = encoder(xb)
            if z1.shape[0] != len(xb) * k:
                raise RuntimeError(
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
