"""1-D CNN classifiers of time series, registered as timm models.

``clustercam_fcn``: the fully convolutional network of Wang et al. (IJCNN 2017): three
convolution blocks of 128, 256 and 128 filters with kernels 8, 5 and 3 (each convolution,
BatchNorm, ReLU; stride 1, "same" padding so the time axis keeps the input's length),
global average pooling over time and a linear layer. ``clustercam_ts_resnet``: the ResNet
classifier of Fawaz et al. (2019): three residual blocks of 64, 128 and 128 filters, each
three convolutions with kernels 8, 5 and 3, a shortcut (1 x 1 convolution + BatchNorm where
the width changes, BatchNorm otherwise), then the same pooling and linear head.

Both give the interface the concept code reads from timm models: ``forward_features``
(``B x C x L``, non-negative: after a ReLU), ``forward_head`` (``pre_logits=True``: the
pooled features), ``get_classifier`` (the linear layer), ``num_classes`` and ``in_chans``.
As the head is pooling + one linear layer, concept ablations of the final features keep
the closed form. Registered when :mod:`clustercam.models.timm_weights` builds a model, so
``model.name=clustercam_fcn`` works as any timm name (random initial weights only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from timm.models import register_model
from torch import Tensor, nn

from clustercam.exceptions import UserError

_TIMM_KEYS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def conv_block(c_in: int, c_out: int, kernel: int, relu: bool = True) -> nn.Sequential:
    """Convolution ("same" zero padding as Keras pads it: the extra step of an even kernel on
    the right; no bias, BatchNorm follows), BatchNorm, optional ReLU."""
    layers: list[nn.Module] = [nn.ConstantPad1d(((kernel - 1) // 2, kernel // 2), 0.0),
                               nn.Conv1d(c_in, c_out, kernel, bias=False), nn.BatchNorm1d(c_out)]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Three convolutions (kernels 8, 5, 3) plus a shortcut, then ReLU (Fawaz et al. 2019)."""

    def __init__(self, c_in: int, c_out: int, kernels: Sequence[int] = (8, 5, 3)) -> None:
        super().__init__()
        widths = [c_in] + [c_out] * len(kernels)
        self.convs = nn.Sequential(*[conv_block(widths[i], widths[i + 1], k, relu=i < len(kernels) - 1)
                                     for i, k in enumerate(kernels)])
        self.shortcut = (nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))
                         if c_in != c_out else nn.BatchNorm1d(c_out))
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class SeriesClassifier(nn.Module):
    """Blocks over time, global average pooling, linear: the timm-like shell of both nets.

    Args:
        blocks: the convolutional part (``B x in_chans x L`` to ``B x num_features x L``).
        num_features: its output channels.
        in_chans: the series' channels.
        num_classes: the classes (0: ``forward_head`` returns the pooled features).
    """

    def __init__(self, blocks: nn.Module, num_features: int, in_chans: int, num_classes: int) -> None:
        super().__init__()
        self.input_dims = 1  # series: the classifier module rejects image data by it
        self.in_chans, self.num_features, self.num_classes = in_chans, num_features, num_classes
        self.features = blocks
        self.fc: nn.Module = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        """``B x C x L`` activations of the last block."""
        if x.dim() != 3:
            raise UserError(f"a 1-D classifier takes series B x C x L, got an input of shape {tuple(x.shape)}")
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits of ``B x C x L`` features (or the pooled ``B x C`` with ``pre_logits``); a
        ``B x C x 1 x L`` grid (how the concept code holds 1-D maps) pools the same."""
        pooled = x.flatten(2).mean(-1)
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The linear layer on the pooled features."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new linear layer for ``num_classes`` (timm's interface; only average pooling)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _options(pretrained: bool, name: str, kwargs: dict[str, Any]) -> tuple[int, int]:
    if pretrained:
        raise UserError(f"{name} has no pretrained weights: train it (model.pretrained=false)")
    for key in _TIMM_KEYS:  # timm's factory options
        kwargs.pop(key, None)
    in_chans, num_classes = int(kwargs.pop("in_chans", 1)), int(kwargs.pop("num_classes", 2))
    if kwargs:
        raise UserError(f"{name} takes in_chans, num_classes, widths and kernels; got also {sorted(kwargs)}")
    if in_chans < 1:
        raise UserError(f"{name}: in_chans must be >= 1, got {in_chans}")
    return in_chans, num_classes


def _widths(name: str, widths: Sequence[int], kernels: Sequence[int], same: bool) -> tuple[list[int], list[int]]:
    widths, kernels = [int(w) for w in widths], [int(k) for k in kernels]
    if not widths or not kernels or min(widths + kernels) < 1 or (same and len(widths) != len(kernels)):
        raise UserError(f"{name}: widths and kernels must be positive" + (" and as many" if same else "")
                        + f", got {widths} and {kernels}")
    return widths, kernels


@register_model
def clustercam_fcn(pretrained: bool = False, widths: Sequence[int] = (128, 256, 128),
                   kernels: Sequence[int] = (8, 5, 3), **kwargs: Any) -> SeriesClassifier:
    """FCN of Wang et al. (2017); ``widths`` / ``kernels`` override the blocks (see the module)."""
    in_chans, num_classes = _options(pretrained, "clustercam_fcn", kwargs)
    widths, kernels = _widths("clustercam_fcn", widths, kernels, same=True)
    chans = [in_chans, *widths]
    blocks = nn.Sequential(*[conv_block(chans[i], chans[i + 1], k) for i, k in enumerate(kernels)])
    return SeriesClassifier(blocks, widths[-1], in_chans, num_classes)


@register_model
def clustercam_ts_resnet(pretrained: bool = False, widths: Sequence[int] = (64, 128, 128),
                         kernels: Sequence[int] = (8, 5, 3), **kwargs: Any) -> SeriesClassifier:
    """ResNet of Fawaz et al. (2019): one residual block per width, each with all ``kernels``."""
    in_chans, num_classes = _options(pretrained, "clustercam_ts_resnet", kwargs)
    widths, kernels = _widths("clustercam_ts_resnet", widths, kernels, same=False)
    chans = [in_chans, *widths]
    blocks = nn.Sequential(*[ResidualBlock(chans[i], chans[i + 1], kernels) for i in range(len(widths))])
    return SeriesClassifier(blocks, widths[-1], in_chans, num_classes)
