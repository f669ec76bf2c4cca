"""Progress a user sees: Lightning's bars saying how many images a resumed concept run
skipped, and log lines for a long end-of-run step.

With ``resume=true`` the test / predict loop walks only the images a killed run left
(:func:`~clustercam.callbacks.concept_shards.subset_loader`), so its bar counts those; these
bars (Lightning's Rich and tqdm bars, nothing else changed) name the rest in their
description: ``Testing (6 of 12 images resumed)``. After the bar has reached its end, the
class concepts cluster every class (minutes for a thousand classes): :func:`log_progress`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def log_progress(what: str, every: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 log: logging.Logger | None = None) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` that logs ``what``'s count, time and time left at most
    every ``every`` seconds (and once at the end of a step that logged before); a step
    shorter than ``every`` logs nothing."""
    log = log or logging.getLogger(__name__)
    start = last = clock()
    logged = False

    def progress(done: int, total: int) -> None:
        nonlocal last, logged
        now = clock()
        if now - last < every and not (done == total and logged):
            return
        last, logged = now, True
        left = (now - start) / max(done, 1) * (total - done)
        log.info("%s: %d of %d done (%s, about %s left)", what, done, total, _duration(now - start), _duration(left))

    return progress
