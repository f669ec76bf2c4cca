"""A diverging run stops at its first non-finite loss (or gradient norm) with one line naming
the step, the value, the last good checkpoint and the settings; nothing downstream runs."""

import json
import math
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from torch import nn

from clustercam import outputs
from clustercam.callbacks.divergence import DivergenceCallback, check_finite_embeddings
from clustercam.exceptions import TrainingDivergedError, UserError
from tests.helpers import REPO
from tests.helpers.run import cli, train


class Toy(L.LightningModule):
    """A linear model whose loss becomes NaN at optimizer step ``nan_at`` (on ``rank``)."""

    def __init__(self, nan_at: int | None = None, rank: int | None = None, sqrt: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.w = nn.Parameter(torch.zeros(3))
        self.nan_at, self.rank, self.sqrt = nan_at, rank, sqrt

    def training_step(self, batch, batch_idx):
        loss = self.lin(batch[0]).pow(2).mean() + 0 * self.w.sum()
        if self.sqrt:  # finite loss (0), infinite gradient (d sqrt(w) / dw at w = 0)
            loss = loss + torch.sqrt(self.w).sum()
        if self.global_step == self.nan_at and self.rank in (None, self.global_rank):
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4)


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    ckpt = L.pytorch.callbacks.ModelCheckpoint(tmp_path / "checkpoints", save_last=True,
                                               every_n_train_steps=1, save_top_k=-1)
    return L.Trainer(default_root_dir=tmp_path, max_epochs=3, logger=False, accelerator="cpu",
                     enable_progress_bar=False, enable_model_summary=False,
                     callbacks=[DivergenceCallback(), ckpt], **kwargs)


def test_the_first_nan_loss_stops_training_naming_the_last_good_checkpoint(tmp_path):
    model = Toy(nan_at=3)
    trainer = _trainer(tmp_path)
    with pytest.raises(TrainingDivergedError) as err:
        trainer.fit(model)
    text = str(err.value)
    assert text.startswith("training diverged at epoch 0, step 3 (batch 3): the training loss is nan.")
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"Last good checkpoint: {last}." in text
    assert "model.optimizer.lr (now 0.01" in text and "trainer.precision (now 32-true" in text
    assert isinstance(err.value, UserError)  # one line at the command line
    # the NaN step took no optimizer step and saved nothing: the checkpoint is step 3's start
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 3 and trainer.global_step == 3
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert torch.equal(saved["state_dict"]["lin.weight"], model.lin.weight.detach())


def test_a_non_finite_gradient_norm_stops_training_when_clipping_is_on(tmp_path):
    with pytest.raises(TrainingDivergedError, match=r"step 0 \(batch 0\): the gradient norm is inf.*"
                                                    r"trainer.gradient_clip_val \(now 1.0\)"):
        _trainer(tmp_path, gradient_clip_val=1.0).fit(Toy(sqrt=True))
    # without clipping the gradient is not looked at: the infinite step is taken, and the
    # loss of the next step (sqrt of -inf) stops the run
    with pytest.raises(TrainingDivergedError, match=r"step 1 \(batch 1\): the training loss is nan"):
        _trainer(tmp_path / "off").fit(Toy(sqrt=True))


def test_nan_embeddings_are_never_clustered():
    check_finite_embeddings(torch.zeros(3, 2))
    z = torch.zeros(5, 2)
    z[3, 1] = math.inf
    with pytest.raises(TrainingDivergedError, match=r"1 of 5 embeddings are NaN or infinite \(first indices \[3\]\)"):
        check_finite_embeddings(z)


def test_a_diverging_learning_rate_ends_the_run_as_diverged_with_nothing_downstream(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"training diverged at epoch 0, step \d+ .*Look at "
                                                    r"the learning rate model.optimizer.lr \(now 1e\+08"):
        train(["experiment=trace", "logger=none", "model.optimizer.lr=1e8", "trainer.max_epochs=3",
               "data.max_samples=40"], out)
    status = json.loads((out / outputs.STATUS).read_text())
    assert status["status"] == "diverged" and status["what"] == "training loss"
    assert status["message"].startswith("training diverged at epoch 0")
    assert json.loads((out / "metrics.json").read_text()) == {"status": "diverged"}
    assert (out / "config.yaml").is_file()
    assert not (out / "cardinality.csv").exists() and not (out / "assignments.csv").exists()


@pytest.mark.slow
def test_a_multirun_job_that_diverges_lets_the_sweep_go_on(tmp_path):
    proc = cli("-m", "experiment=trace", "logger=none", "trainer.max_epochs=1", "data.max_samples=20",
               "callbacks.cluster_explain.figures=false", "model.optimizer.lr=1e8,1e-3",
               f"hydra.sweep.dir={tmp_path}")
    assert "training diverged" in proc.stdout + proc.stderr
    states = [json.loads((tmp_path / j / outputs.STATUS).read_text())["status"] for j in ("0", "1")]
    assert states == ["diverged", "finished"]
    assert (tmp_path / "1" / "cardinality.csv").is_file()


DDP_SCRIPT = """
import sys
sys.path[:0] = [{src!r}, {repo!r}]
from pathlib import Path
from tests.callbacks.test_divergence import Toy, _trainer
trainer = _trainer(Path({out!r}), strategy="ddp", devices=2)
trainer.fit(Toy(nan_at=2, rank=1))
"""


@pytest.mark.slow
def test_ddp_a_nan_on_one_rank_stops_both_at_the_same_step(tmp_path):
    script = tmp_path / "ddp_nan.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(src=str(REPO / "src"), repo=str(REPO),
                                                        out=str(tmp_path / "run"))))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "TrainingDivergedError: training diverged" in ln]
    assert len(lines) == 2, proc.stderr[-3000:]  # both ranks, the same step, rank 1 named
    assert all("at epoch 0, step 2 (batch 2): the training loss is nan on rank 1." in ln for ln in lines)
