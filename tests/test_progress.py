"""The progress bars of a resumed concept run name the images already done: a real
``Trainer.test`` over the loader ``resume=true`` builds (:func:`subset_loader`), with the
tqdm and the Rich bar, against the same loop over every image."""

from __future__ import annotations

import io

import pytest
import torch
from lightning import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from clustercam.callbacks.concept_shards import subset_loader
from clustercam.callbacks.progress import ResumedRichProgressBar, ResumedTQDMProgressBar


class _Tiny(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def test_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    predict_step = test_step


def _loaders() -> tuple[DataLoader, DataLoader]:
    whole = DataLoader(TensorDataset(torch.rand(12, 2)), batch_size=3)
    return whole, subset_loader(whole, list(range(5, 12)))  # 5 of 12 done


def _trainer(bar) -> Trainer:
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_model_summary=False, callbacks=[bar])


def test_the_tqdm_bar_of_a_resumed_loop_names_the_images_done(capsys) -> None:
    whole, resumed = _loaders()
    _trainer(ResumedTQDMProgressBar()).test(_Tiny(), resumed, verbose=False)
    out = capsys.readouterr().out
    assert "Testing (5 of 12 images resumed)" in out and "3/3" in out  # 7 images left: 3 batches
    _trainer(ResumedTQDMProgressBar()).test(_Tiny(), whole, verbose=False)
    out = capsys.readouterr().out
    assert "resumed" not in out and "4/4" in out
    _trainer(ResumedTQDMProgressBar()).predict(_Tiny(), resumed)
    assert "Predicting (5 of 12 images resumed)" in capsys.readouterr().out


@pytest.mark.parametrize("resumed", [True, False])
def test_the_rich_bar_of_a_resumed_loop_names_the_images_done(resumed) -> None:
    out = io.StringIO()
    bar = ResumedRichProgressBar(console_kwargs={"file": out, "force_terminal": True, "width": 200})
    _trainer(bar).test(_Tiny(), _loaders()[1 if resumed else 0], verbose=False)
    text = out.getvalue()
    assert "Testing" in text
    assert ("Testing (5 of 12 images resumed)" in text) == resumed


def test_log_progress_logs_a_long_step_every_so_often_and_its_end_and_a_short_step_never(caplog) -> None:
    import logging

    from clustercam.callbacks.progress import log_progress

    now = [0.0]
    with caplog.at_level(logging.INFO, logger="clustercam.callbacks.progress"):
        step = log_progress("class concepts", every=30, clock=lambda: now[0])
        for done, t in [(1, 10), (2, 31), (3, 40), (4, 62), (5, 64)]:
            now[0] = t
            step(done, 5)
        lines = [r.getMessage() for r in caplog.records]
        assert lines == ["class concepts: 2 of 5 done (31 s, about 46 s left)",
                         "class concepts: 4 of 5 done (62 s, about 16 s left)",
                         "class concepts: 5 of 5 done (64 s, about 0 s left)"]
        caplog.clear()
        now[0] = 100.0
        short = log_progress("short", every=30, clock=lambda: now[0])
        for done in (1, 2):
            now[0] += 5
            short(done, 2)
        assert caplog.records == []
        now[0] = 0.0
        long_ = log_progress("long", every=60, clock=lambda: now[0])
        now[0] = 5400.0
        long_(1, 3)
        assert caplog.records[-1].getMessage() == "long: 1 of 3 done (90 min, about 180 min left)"
