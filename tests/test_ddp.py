"""Evaluating one checkpoint with 2 DDP CPU processes gives exactly the 1-process outputs."""

import json

import pytest

from tests.helpers.run import cli as run_cli
from tests.helpers.run import read_csv, train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    train(["experiment=trace", "trainer.max_epochs=1", "logger=none"], out)
    return out / "checkpoints" / "last.ckpt"


def _evaluate(out, ckpt, *extra):
    run_cli("experiment=trace", "train=false", f"ckpt_path={ckpt}", "logger=none",
            "callbacks.cluster_explain.figures=false", f"paths.output_dir={out}", *extra)
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics, read_csv(out / "cardinality.csv"), read_csv(out / "assignments.csv")


def test_ddp_two_cpu_processes_equal_one(tmp_path, checkpoint):
    # 100 test samples over 2 ranks with eval batch 32: ranks see 50 each, the last batches
    # are uneven, and sample order differs from one process: the gather must undo all that
    one = _evaluate(tmp_path / "one", checkpoint, "data.eval_batch_size=32")
    two = _evaluate(tmp_path / "two", checkpoint, "trainer=ddp", "trainer.accelerator=cpu",
                    "trainer.devices=2", "data.eval_batch_size=32")
    m1, m2 = one[0], two[0]
    for key in ("nmi", "ari", "acc", "n_samples", "cardinality_median", "cardinality_max"):
        assert m1[key] == m2[key], key
    assert m1["recon_loss"] == pytest.approx(m2["recon_loss"], rel=1e-6)
    assert one[1] == two[1]  # cardinality.csv, row for row
    assert one[2] == two[2]  # every sample's cluster


@pytest.mark.slow
def test_odd_split_over_two_ranks_drops_sampler_padding(tmp_path, checkpoint):
    # 99 samples: the DistributedSampler pads rank 1 with a repeat of sample 0
    _, _, one = _evaluate(tmp_path / "one", checkpoint, "data.max_samples=99")
    _, _, two = _evaluate(tmp_path / "two", checkpoint, "data.max_samples=99", "trainer=ddp",
                          "trainer.accelerator=cpu", "trainer.devices=2")
    assert len(two) == 99 and [r["index"] for r in two] == [str(i) for i in range(99)]
    assert one == two
