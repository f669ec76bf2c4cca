"""The control maps the scores compare every method against.

Chance (``random``), contiguous chance (``random_smooth``) and where the layer responds at
all, with no cluster in it (``activation``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from clustercam.explain.baselines import gaussian_blur
from clustercam.explain.deprecation import reordered_parameters
from clustercam.explain.hooks import (
    eval_mode,
    forward_with_layer,
    module_device,
    module_dtype,
    resolve_layer,
)
from clustercam.explain.maps import input_maps, minmax_normalise


def random_maps(shape: Sequence[int], seed: int = 0) -> Tensor:
    """A seeded uniform random map per sample: the chance baseline.

    Args:
        shape: N x spatial.
        seed: of the draw.

    Returns:
        Maps of ``shape`` in [0, 1).
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(tuple(shape), generator=gen)


def smooth_random_maps(shape: Sequence[int], seed: int = 0, sigma: float | None = None) -> Tensor:
    """Seeded random maps blurred into blobs: the control for contiguity.

    Deleting a contiguous chunk of a series or image can move an embedding more than
    deleting scattered positions, whatever the chunk holds, so a structured map should beat
    this one, not only the scattered ``random`` map.

    Args:
        shape: N x spatial.
        seed: of the draw.
        sigma: of the blur (None: a twentieth of the shortest side, >= 1).

    Returns:
        Maps of ``shape``, min-max normalised to [0, 1] per sample.
    """
    shape = tuple(shape)
    noise = random_maps(shape, seed)[:, None]
    sigma = sigma if sigma is not None else max(1.0, min(shape[1:]) / 20)
    return minmax_normalise(gaussian_blur(noise, sigma), len(shape) - 1)[:, 0]


@reordered_parameters("encoder", "target_layer", "x", "batch_size", when=lambda args, kwargs: len(args) > 3)
def activation_maps(
    encoder: nn.Module, target_layer: nn.Module | str, x: Tensor, *, batch_size: int = 512
) -> Tensor:
    """Where the target layer responds at all, with no cluster in it: the ``activation`` method.

    The mean of the target layer's activations over its channels, resized to the input and
    min-max normalised per sample.

    Args:
        encoder: the network holding the target layer.
        target_layer: the module (or its dotted name) whose output is averaged.
        x: N x C x L or N x C x H x W.
        batch_size: samples per chunk.

    Returns:
        N x spatial maps in [0, 1].

    Raises:
        UserError: a layer not in the encoder.
    """
    layer = resolve_layer(encoder, target_layer)
    device = module_device(encoder, x.device)
    dtype = module_dtype(encoder)
    size = tuple(x.shape[2:])
    parts = []
    with eval_mode(encoder):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device=device, dtype=dtype)
            _, a = forward_with_layer(encoder, layer, xb)
            parts.append(input_maps(a.mean(1, keepdim=True), size)[:, 0].cpu())  # b x spatial
    return torch.cat(parts)
