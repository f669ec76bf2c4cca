"""What the concept callback asks of an in-memory image datamodule: pictures and names.

:class:`ImageViews` gives any :class:`~clustercam.data.base.ClusterDataModule` of images (or
of series: ``display_image`` is then the C x L series, which the figures draw as a series)
``display_image(i)``, ``image_name(i)`` and ``class_names`` (per evaluated image) for
figures and CSV rows; a subclass sets ``classes`` (the class names, by label).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


class ImageViews:
    """Mixin for a ``ClusterDataModule`` whose evaluated split holds C x H x W images in [0, 1]."""

    classes: Sequence[str] = ()


    def display_image(self, index: int) -> Tensor:
        """Image ``index`` of the evaluated split as the model sees it (C x H x W)."""
        return self.split(self.eval_split).x[index]  # type: ignore[attr-defined]

    def image_name(self, index: int) -> str:
        """A stable name for image ``index`` of the evaluated split (CSV rows, figure files)."""
        return f"{str(getattr(self, 'name', 'image')).lower()}_{self.eval_split}_{index:05d}"  # type: ignore[attr-defined]

    @property
    def class_names(self) -> list[str]:
        """The class name of every evaluated image, in index order."""
        y = self.split(self.eval_split).y  # type: ignore[attr-defined]
        known = list(self.classes)
        return [known[int(t)] if int(t) < len(known) else str(int(t)) for t in y]
