"""Image convolutional autoencoder (Grad-CeAM paper § IV-B) for MNIST, STL-10 and the like.

The encoder is d strided Conv2d + ReLU layers (``features``, the Grad-CeAM target layer),
then global average pooling (or flatten, as the authors' code) and a linear layer to the
embedding. The decoder mirrors it: linear -> reshape -> transposed convolutions -> a final
convolution to the input channels with a sigmoid, because the images are scaled to [0, 1].
Each transposed convolution gets the ``output_padding`` that restores the exact spatial
size of the matching encoder input, so odd sizes (28 -> 14 -> 7 -> 14 -> 28, or 27 -> 14
-> 7 -> 14 -> 27) reconstruct to the input shape.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from clustercam.exceptions import UserError
from clustercam.models.components.encoder import Autoencoder, Encoder

OUTPUT_ACTIVATIONS = ("sigmoid", "linear")


def conv_out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """The spatial size after a Conv2d (dilation 1).

    Args:
        size: the input's size along one axis.
        kernel: the kernel size.
        stride: the stride.
        padding: the padding on each side.

    Returns:
        The output's size along that axis.
    """
    return (size + 2 * padding - kernel) // stride + 1


def transposed_output_padding(target: int, size: int, kernel: int, stride: int, padding: int) -> int:
    """The ``output_padding`` that makes a ConvTranspose2d map ``size`` back to ``target``.

    Args:
        target: the size to restore (the matching convolution's input size).
        size: the transposed convolution's input size.
        kernel: the kernel size.
        stride: the stride.
        padding: the padding on each side.

    Returns:
        The output padding, in [0, stride).

    Raises:
        UserError: no output padding restores ``target``.

    Example:
        >>> from clustercam.models.components.cae import conv_out_size, transposed_output_padding
        >>> conv_out_size(27, 3, 2, 1), transposed_output_padding(27, 14, 3, 2, 1)
        (14, 0)
        >>> conv_out_size(28, 3, 2, 1), transposed_output_padding(28, 14, 3, 2, 1)
        (14, 1)
    """
    op = target - ((size - 1) * stride - 2 * padding + kernel)
    if not 0 <= op < max(stride, 1):  # cannot happen for a size produced by the matching conv
        raise UserError(
            f"cannot invert a conv (kernel {kernel}, stride {stride}, padding {padding}) "
            f"from {size} back to {target}"
        )
    return op


class ConvAutoencoder(Autoencoder):
    """The image autoencoder: Conv2d encoder -> GAP (or flatten) -> linear; a mirrored decoder.

    Layer i has ``filters[i]`` channels, a ``kernels[i]`` square kernel, stride
    ``strides[i]`` and padding ``kernels[i] // 2`` ("same"-like: 28 -> 14 -> 7 for MNIST,
    96 -> 48 -> 24 -> 12 for STL-10). The encoder's ``features`` (the convolutions) is the
    Grad-CeAM target layer.

    Args:
        input_shape: (channels, height, width).
        filters: channels per convolution.
        kernels: square kernel size per convolution.
        strides: stride per convolution.
        embedding_dim: m.
        pooling: ``gap`` or ``flatten`` (:class:`~clustercam.models.components.encoder.Encoder`).
        output_activation: ``sigmoid`` for [0, 1] images, ``linear`` for standardised inputs.

    Raises:
        UserError: an input shape that is not (channels, height, width), lists of different
            lengths or values < 1, an input too small for the layers, an unknown activation.

    Example:
        >>> import torch
        >>> from clustercam.models.components.cae import ConvAutoencoder
        >>> net = ConvAutoencoder((1, 27, 27), filters=(4, 8), embedding_dim=3)
        >>> x = torch.rand(2, 1, 27, 27)
        >>> tuple(net.encoder(x).shape), tuple(net(x).shape), net.feature_shape
        ((2, 3), (2, 1, 27, 27), (8, 7, 7))
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        filters: Sequence[int] = (32, 64),
        kernels: Sequence[int] = (3, 5),
        strides: Sequence[int] = (2, 2),
        embedding_dim: int = 10,
        pooling: str = "gap",
        output_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise UserError(
                f"ConvAutoencoder needs input_shape (channels, height, width), got {tuple(input_shape)}"
            )
        if not filters:
            raise UserError("filters must list at least one convolution width")
        if not len(filters) == len(kernels) == len(strides):
            raise UserError(
                f"filters, kernels and strides need one entry per layer, got {len(filters)}, "
                f"{len(kernels)} and {len(strides)}"
            )
        if any(int(v) < 1 for v in (*filters, *kernels, *strides)):
            raise UserError("filters, kernels and strides must all be >= 1")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise UserError(
                f"unknown output_activation {output_activation!r}; choose one of {OUTPUT_ACTIVATIONS}"
            )
        self.input_shape = tuple(int(s) for s in input_shape)
        c_in, h, w = self.input_shape
        filters, kernels, strides = list(map(int, filters)), list(map(int, kernels)), list(map(int, strides))

        # encoder: record every layer's input size so the decoder can invert it exactly
        sizes = [(h, w)]
        layers: list[nn.Module] = []
        c = c_in
        for f, k, s in zip(filters, kernels, strides):
            p = k // 2
            nh, nw = conv_out_size(sizes[-1][0], k, s, p), conv_out_size(sizes[-1][1], k, s, p)
            if nh < 1 or nw < 1:
                raise UserError(
                    f"input of spatial size {h}x{w} is too small for {len(filters)} conv layers "
                    f"with kernels {kernels} and strides {strides}"
                )
            layers += [nn.Conv2d(c, f, k, stride=s, padding=p), nn.ReLU()]
            sizes.append((nh, nw))
            c = f
        self.feature_shape = (c, *sizes[-1])
        self.encoder = Encoder(nn.Sequential(*layers), self.feature_shape, embedding_dim, pooling)

        # decoder: transposed convs in reverse order; the first layer keeps filters[0] channels
        # and a final 3x3 conv maps them to the input channels
        dec: list[nn.Module] = []
        for i in reversed(range(len(filters))):
            k, s, p = kernels[i], strides[i], kernels[i] // 2
            c_out = filters[i - 1] if i > 0 else filters[0]
            (th, tw), (ih, iw) = sizes[i], sizes[i + 1]
            op = (
                transposed_output_padding(th, ih, k, s, p),
                transposed_output_padding(tw, iw, k, s, p),
            )
            dec += [
                nn.ConvTranspose2d(filters[i], c_out, k, stride=s, padding=p, output_padding=op),
                nn.ReLU(),
            ]
        dec.append(nn.Conv2d(filters[0], c_in, 3, padding=1))
        if output_activation == "sigmoid":
            dec.append(nn.Sigmoid())
        self.decoder = ImageDecoder(embedding_dim, self.feature_shape, nn.Sequential(*dec))



class ImageDecoder(nn.Module):
    """Linear to the encoder's feature shape, reshape, transposed convolutions.

    No activation after the linear layer: with a ReLU there, MNIST training sat on a
    plateau (MSE 0.11, the same flat grey output for every digit) for 200+ Adam steps in
    3 of 3 seeds; without it, all 3 left it within 50 steps.
    """

    def __init__(self, m: int, feature_shape: tuple[int, int, int], body: nn.Module) -> None:
        super().__init__()
        self.feature_shape = feature_shape
        c, h, w = feature_shape
        self.fc = nn.Linear(m, c * h * w)
        self.body = body

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.fc(z).reshape(z.shape[0], *self.feature_shape))
