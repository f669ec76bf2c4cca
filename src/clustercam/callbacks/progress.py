"""Lightning's progress bars, saying how many images a resumed concept run skipped.

With ``resume=true`` the test / predict loop walks only the images a killed run left
(:func:`~clustercam.callbacks.concept_shards.subset_loader`), so its bar counts those; these
bars (Lightning's Rich and tqdm bars, nothing else changed) name the rest in their
description: ``Testing (6 of 12 images resumed)``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from clustercam.callbacks.concept_shards import ResumedSubset
from clustercam.callbacks.evaluated import eval_loader


def resumed_description(description: str, trainer: Any) -> str:
    """``description`` with ``(N of M images resumed)`` where the running test / predict
    loop resumes a killed run (its dataset a :class:`ResumedSubset`), else unchanged."""
    try:
        ds = eval_loader(trainer).dataset
    except (AttributeError, IndexError, TypeError):  # no loop under way
        return description
    if not isinstance(ds, ResumedSubset):
        return description
    total = len(ds.dataset)
    return f"{description} ({total - len(ds)} of {total} images resumed)"


class _Resumed:
    @property
    def test_description(self) -> str:
        return resumed_description(super().test_description, self.trainer)  # type: ignore[misc]

    @property
    def predict_description(self) -> str:
        return resumed_description(super().predict_description, self.trainer)  # type: ignore[misc]


class ResumedRichProgressBar(_Resumed, RichProgressBar):
    """Lightning's :class:`~lightning.pytorch.callbacks.RichProgressBar` (same arguments);
    the test / predict bar of a resumed run says how many images were done before."""


class ResumedTQDMProgressBar(_Resumed, TQDMProgressBar):
    """Lightning's :class:`~lightning.pytorch.callbacks.TQDMProgressBar` (same arguments);
    the test / predict bar of a resumed run says how many images were done before."""
