"""Time-series ResNet convolutional autoencoder (Grad-CeAM paper § IV-B)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.models.components.encoder import Autoencoder, Encoder

# 'same' padding with the paper's even kernel (k=8) is intended; torch warns on every call
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel", category=UserWarning)


class ResidualBlock1d(nn.Module):
    """Conv k=8 -> BN -> ReLU -> Conv k=5 -> BN -> ReLU -> Conv k=3 -> BN, + 1x1 conv shortcut.

    The output is ``ReLU(body(x) + shortcut(x))``, the length kept (``same`` padding).

    Args:
        in_channels: of x.
        out_channels: of every convolution.
        kernels: the body's kernel sizes.
    """

    def __init__(self, in_channels: int, out_channels: int, kernels: Sequence[int] = (8, 5, 3)):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, k in enumerate(kernels):
            layers += [nn.Conv1d(c, out_channels, k, padding="same"), nn.BatchNorm1d(out_channels)]
            if i < len(kernels) - 1:
                layers.append(nn.ReLU())
            c = out_channels
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, 1), nn.BatchNorm1d(out_channels)
        )
        self.act = nn.ReLU()

    def residual_branches(self) -> tuple[nn.Module, nn.Module, nn.Module] | None:
        """(body, shortcut, act) when forward is ``act(body(x) + shortcut(x))`` exactly, else None.

        Declares the residual ``+`` to NEON's LRP (which then canonizes it; the explain layer
        imports no model class); a subclass that overrides ``forward`` opts out.
        """
        if type(self).forward is not ResidualBlock1d.forward:
            return None
        return self.body, self.shortcut, self.act

    def forward(self, x: Tensor) -> Tensor:
        """N x out_channels x L from N x in_channels x L."""
        return self.act(self.body(x) + self.shortcut(x))


class ResNetCAE(Autoencoder):
    """The time-series ResNet autoencoder: residual blocks -> GAP -> linear; the decoder mirrors it.

    The decoder maps the embedding linearly to length x last filters, runs the blocks in
    reverse and a final Conv1d to the input channels with a linear output (the series are
    z-normalised). The encoder's ``features`` (the blocks) is the Grad-CeAM target layer.

    Args:
        input_shape: (channels, length).
        filters: the width of each residual block (:class:`ResidualBlock1d`).
        embedding_dim: m.
        pooling: ``gap`` or ``flatten`` (:class:`~clustercam.models.components.encoder.Encoder`).

    Raises:
        UserError: an input shape that is not (channels, length), no filters.

    Example:
        >>> import torch
        >>> from clustercam.models.components.resnet_cae import ResNetCAE
        >>> net = ResNetCAE((2, 24), filters=(4, 8), embedding_dim=3)
        >>> x = torch.randn(5, 2, 24)
        >>> tuple(net.encoder(x).shape), tuple(net(x).shape), net.target_layer
        ((5, 3), (5, 2, 24), 'features')
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        filters: Sequence[int] = (64, 128, 128),
        embedding_dim: int = 10,
        pooling: str = "gap",
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise UserError(f"ResNetCAE needs input_shape (channels, length), got {input_shape}")
        if not filters:
            raise UserError("filters must list at least one block width")
        self.input_shape = tuple(int(s) for s in input_shape)
        c_in, length = self.input_shape
        blocks, c = [], c_in
        for f in filters:
            blocks.append(ResidualBlock1d(c, f))
            c = f
        self.encoder = Encoder(nn.Sequential(*blocks), (c, length), embedding_dim, pooling)
        rev = list(reversed(filters))
        dec_blocks, c = [], rev[0]
        for f in rev:
            dec_blocks.append(ResidualBlock1d(c, f))
            c = f
        self.decoder = _SeriesDecoder(embedding_dim, rev[0], length, nn.Sequential(*dec_blocks), c, c_in)



class _SeriesDecoder(nn.Module):
    def __init__(
        self, m: int, channels: int, length: int, blocks: nn.Module, c_last: int, c_out: int
    ) -> None:
        super().__init__()
        self.channels, self.length = channels, length
        self.fc = nn.Linear(m, channels * length)
        self.blocks = blocks
        self.out = nn.Conv1d(c_last, c_out, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).reshape(z.shape[0], self.channels, self.length)
        return self.out(self.blocks(h))
