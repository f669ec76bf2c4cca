"""A vision-transformer autoencoder: Grad-CeAM on a token encoder, trained like the CAEs.

The encoder is a small ViT (timm's ``PatchEmbed`` and transformer ``Block`` s): non-overlapping
``patch_size`` patches embedded to ``width`` channels, learned position embeddings, ``depth``
pre-norm transformer blocks, a LayerNorm (``norm``, the Grad-CeAM target layer) and the mean
over the tokens, then a linear layer to the embedding. No class token: every token is a
patch, so the target layer's output (B x tokens x width) is read as the patch grid
(:mod:`clustercam.explain.layouts`). The decoder is the CAEs' (linear, reshape to the patch
grid, stride-2 transposed convolutions back to the input size, a 3 x 3 convolution).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.models.components.cae import (
    OUTPUT_ACTIVATIONS,
    ImageDecoder,
    transposed_output_padding,
)
from clustercam.models.components.encoder import Autoencoder


class ViTEncoder(nn.Module):
    """Patch embedding -> position embeddings -> transformer blocks -> ``norm`` -> token mean -> linear.

    Declares what the methods read: ``num_prefix_tokens = 0`` and ``patch_embed`` (the token
    grid) for the layout reader, ``linear_head`` (z = fc(mean of ``norm``'s tokens)) for
    Grad-CeAM's closed form.
    """

    target_layer = "norm"
    num_prefix_tokens = 0

    def __init__(self, input_shape: Sequence[int], patch_size: int = 4, width: int = 64, depth: int = 3,
                 heads: int = 4, mlp_ratio: float = 2.0, embedding_dim: int = 10) -> None:
        super().__init__()
        from timm.layers import PatchEmbed
        from timm.models.vision_transformer import Block

        c, h, w = (int(s) for s in input_shape)
        if patch_size < 1 or h % patch_size or w % patch_size:
            raise UserError(f"patch_size must divide the input size {h} x {w}, got {patch_size}")
        if width % heads:
            raise UserError(f"width ({width}) must be a multiple of heads ({heads})")
        if depth < 1 or embedding_dim < 1:
            raise UserError(f"depth and embedding_dim must be >= 1, got {depth} and {embedding_dim}")
        self.patch_embed = PatchEmbed(img_size=(h, w), patch_size=patch_size, in_chans=c, embed_dim=width)
        self.pos_embed = nn.Parameter(torch.randn(1, self.patch_embed.num_patches, width) * 0.02)
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, embedding_dim)

    def linear_head(self, layer: nn.Module) -> tuple[Tensor, str] | None:
        """(fc weight, ``gap``) for ``norm``: z = fc(mean over its tokens) exactly."""
        if type(self).forward is not ViTEncoder.forward or layer is not self.norm or type(self.fc) is not nn.Linear:
            return None
        return self.fc.weight, "gap"

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.blocks(self.patch_embed(x) + self.pos_embed)
        return self.fc(self.norm(tokens).mean(1))


class ViTAutoencoder(Autoencoder):
    """:class:`ViTEncoder` -> ``embedding_dim``; a convolutional decoder from the patch grid.

    ``input_shape`` is (channels, height, width); ``patch_size`` a power of 2 that divides
    both sizes (28 x 28 MNIST: 4, a 7 x 7 grid; 32 x 32 shapes: 4, 8 x 8). The decoder maps
    the embedding to ``decoder_width`` channels on the grid and doubles the size log2(patch)
    times (channels halved each time, at least 8). ``output_activation``: ``sigmoid`` for
    [0, 1] images, ``linear`` for standardised inputs.
    """

    def __init__(self, input_shape: Sequence[int], patch_size: int = 4, width: int = 64, depth: int = 3,
                 heads: int = 4, mlp_ratio: float = 2.0, embedding_dim: int = 10, decoder_width: int = 64,
                 output_activation: str = "sigmoid") -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise UserError(f"ViTAutoencoder needs input_shape (channels, height, width), got {tuple(input_shape)}")
        if patch_size < 1 or patch_size & (patch_size - 1):
            raise UserError(f"patch_size must be a power of 2 (the decoder doubles the grid), got {patch_size}")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise UserError(f"unknown output_activation {output_activation!r}; choose one of {OUTPUT_ACTIVATIONS}")
        self.input_shape = tuple(int(s) for s in input_shape)
        c, h, w = self.input_shape
        self.encoder = ViTEncoder(self.input_shape, patch_size, width, depth, heads, mlp_ratio, embedding_dim)
        stages = int(math.log2(patch_size))
        sizes = [(h // patch_size * 2**i, w // patch_size * 2**i) for i in range(stages + 1)][::-1]
        chans = [max(8, decoder_width // 2**i) for i in range(stages + 1)]
        layers: list[nn.Module] = []
        for i in range(stages):  # grid -> ... -> input size
            (th, tw), (ih, iw) = sizes[stages - i - 1], sizes[stages - i]
            op = (transposed_output_padding(th, ih, 3, 2, 1), transposed_output_padding(tw, iw, 3, 2, 1))
            layers += [nn.ConvTranspose2d(chans[i], chans[i + 1], 3, stride=2, padding=1, output_padding=op),
                       nn.ReLU()]
        layers.append(nn.Conv2d(chans[stages], c, 3, padding=1))
        if output_activation == "sigmoid":
            layers.append(nn.Sigmoid())
        grid = self.encoder.patch_embed.grid_size
        self.decoder = ImageDecoder(embedding_dim, (chans[0], *grid), nn.Sequential(*layers))

    @property
    def target_layer(self) -> str:
        return ViTEncoder.target_layer
