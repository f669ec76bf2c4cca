"""Resumable class concepts: what pass 1 keeps of a batch goes into its shard, and a run that
stopped half way and is resumed (``resume=true``) writes the class concepts of an
uninterrupted run: the CSVs and figures byte for byte, the channel ids of the npz.

The subprocess kill (SIGTERM, SIGKILL) with class concepts on is in
``tests/test_concept_resume.py`` (slow); here a run stopped after two of four test batches
(``trainer.limit_test_batches=2``: its shards are what a killed run leaves) is resumed
in-process, with the one pass and with the second pass.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clustercam import outputs
from clustercam.explain.concepts import cluster_channels
from clustercam.explain.concepts.classes.coassociation import (
    ClassConceptSettings,
    ClassConceptWarning,
)
from clustercam.explain.concepts.classes.passes import ClassConceptRun
from clustercam.explain.concepts.image.ablation import PooledHead
from clustercam.runtime.status import read_status
from tests.helpers.run import cli, train
from tests.test_class_concepts_run import CLASS_TINY

CONFIGS = [("cgap", "kmeans", 3), ("cpha", "kmeans", 2)]
LINEAR = torch.nn.Linear(8, 3).requires_grad_(False)


def _batches(n_batches: int = 5, size: int = 4) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for b in range(n_batches):
        a = torch.rand(size, 8, 3, 3, generator=gen)
        labels = {c: cluster_channels(a, method=c[0], n_concepts=c[2], n_init=2, seed=b).labels for c in CONFIGS}
        masks = torch.rand(size, 3, 6, 6, generator=gen) > 0.6
        out.append({"a": a, "labels": labels, "y": torch.arange(size) % 3, "idx": torch.arange(b * size, (b + 1) * size),
                    "masks": masks, "keep": torch.tensor([True] * (size - 1) + [b != 2])})
    return out


def _run(pooled: bool) -> ClassConceptRun:
    settings = ClassConceptSettings(n_random=1, gallery_size=2, nmf_max_images=3, seed=5)
    head = PooledHead(pool=lambda x: x.mean((2, 3)), linear=LINEAR, checked=True) if pooled else None
    return ClassConceptRun(settings, CONFIGS, n_channels=8, n_classes=3, map_size=(3, 3), pooled_head=head)


def _observe(run: ClassConceptRun, b: dict) -> None:
    run.observe(b["a"], b["labels"], b["y"], b["idx"], b["keep"], targets=b["y"], masks=b["masks"])


def _scored(run: ClassConceptRun, batches: list[dict]) -> ClassConceptRun:
    with warnings.catch_warnings():  # tiny classes: NMF finds fewer concepts (both runs alike)
        warnings.simplefilter("ignore", ClassConceptWarning)
        run.finalise()
    if run.one_pass:
        run.score_observed()
    else:
        head = lambda x: LINEAR(x.mean((2, 3)))  # noqa: E731
        for b, seen in zip(batches, run.batches):
            run.score(head, b["a"], {c: v.long() for c, v in seen.partitions.items()}, seen.classes, seen.index,
                      seen.targets, b["masks"], seen.keep)
    return run


def _shard(state: dict) -> dict:
    """``state`` through torch.save / torch.load(weights_only=True), as a shard holds it."""
    buffer = io.BytesIO()
    torch.save({"classes": state}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["classes"]


@pytest.mark.parametrize("pooled", [True, False], ids=["one_pass", "two_passes"])
def test_replayed_batch_states_give_the_class_concepts_of_one_run(pooled) -> None:
    batches = _batches()
    whole = _run(pooled)
    killed = _run(pooled)
    states = []
    for b in batches:
        _observe(whole, b)
    for b in batches[:3]:  # the killed run finished three batches
        _observe(killed, b)
        states.append(_shard(killed.batch_state()))
    assert states[0]["sampled/idx"].tolist() == [0, 1, 2, 3]  # the sample (3 a class) took all of batch 0
    assert len(states[2]["sampled/idx"]) < 4  # ... and not every image later
    resumed = _run(pooled)
    resumed.replay(states)
    for b in batches[3:]:
        _observe(resumed, b)
    assert [ob.index.tolist() for ob in resumed.batches] == [ob.index.tolist() for ob in whole.batches]
    for k, v in whole.counts_state().items():
        assert torch.equal(resumed.counts_state()[k], v), k
    for k, v in whole.sample_state().items():
        assert torch.equal(resumed.sample_state()[k], v), k
    _scored(whole, batches)
    _scored(resumed, batches)
    assert whole.one_pass == pooled and resumed.one_pass == pooled
    for k, v in whole.concepts_state().items():
        assert torch.equal(resumed.concepts_state()[k], v), k
    want, got = whole.scores_state(), resumed.scores_state()
    assert want.keys() == got.keys()
    for k, v in want.items():
        assert torch.equal(got[k].nan_to_num(-7), v.nan_to_num(-7)), k
    assert whole.truth() and str(resumed.truth()) == str(whole.truth())


def test_signed_activations_replayed_drop_the_nmf_sample_and_the_one_pass() -> None:
    b = _batches(1)[0]
    killed = _run(True)
    with pytest.warns(ClassConceptWarning, match="signed"):
        killed.observe(b["a"] - 0.5, b["labels"], b["y"], b["idx"], masks=b["masks"])
    assert killed.sample is None and not killed.one_pass
    resumed = _run(True)
    with pytest.warns(ClassConceptWarning, match="signed"):
        resumed.replay([_shard(killed.batch_state())])
    assert resumed.sample is None and not resumed.one_pass and resumed.masked


# -- a run stopped half way and resumed, in-process ----------------------------------------------
RUN = [*CLASS_TINY, "train=false", "model.pretrained=false", "data.n_test=12", "callbacks.concepts.max_figures=2",
       "callbacks.concepts.nmf_max_images=1"]  # 4 batches of 3; the galleries' maps partly recomputed


def _class_files(out: Path) -> dict[str, bytes]:
    keep = [out / outputs.CLASS_CONCEPTS, out / outputs.CLASS_CONCEPTS_TRUTH, out / outputs.CONCEPTS,
            *sorted((out / "figures").rglob("*.png"))]
    return {str(p.relative_to(out)): p.read_bytes() for p in keep}


@pytest.mark.slow
@pytest.mark.parametrize("passes", [1, 2])
def test_a_run_stopped_half_way_and_resumed_writes_the_class_concepts_of_one_run(passes, tmp_path,
                                                                                  monkeypatch) -> None:
    from clustercam.models.classifier_module import ClassifierModule

    if passes == 2:
        monkeypatch.setattr(ClassifierModule, "pooled_head", property(lambda self: None))
    whole, out = tmp_path / "whole", tmp_path / "run"
    with pytest.warns(ClassConceptWarning):
        train(RUN, whole)
        train([*RUN, "+trainer.limit_test_batches=2"], out)  # stops after 6 of 12 images
        train([*RUN, "resume=true"], out)
    assert read_status(out)["resumed_images"] == 6
    metrics = [json.loads((d / outputs.METRICS).read_text()) for d in (whole, out)]
    assert [m["class_concepts/passes"] for m in metrics] == [passes, passes]
    want, got = _class_files(whole), _class_files(out)
    assert sorted(got) == sorted(want) and any("class_concepts" in n for n in want if n.endswith(".png"))
    for name in want:
        assert got[name] == want[name], name
    npz = [np.load(d / outputs.CLASS_CONCEPT_CHANNELS) for d in (whole, out)]
    assert sorted(npz[0].files) == sorted(npz[1].files) and len(npz[0].files) > 1
    for name in npz[0].files:
        assert np.array_equal(npz[0][name], npz[1][name]), name


@pytest.mark.slow
def test_ddp_a_run_stopped_half_way_and_resumed_gives_the_one_process_class_concepts(tmp_path) -> None:
    """2 CPU processes, 13 images in batches of 4: the first batch of each rank done, then
    resumed (rank zero replays both ranks' shards, 5 images left over the 2 ranks, one
    repeated by the sampler). Against one uninterrupted process: the per-image rows and the
    class concepts' channel ids exactly, the float scores to 1e-5 (a rank's batches hold other
    images than one process's: see tests/test_class_concepts_run.py)."""
    common = [*RUN, "data.n_test=13", "data.eval_batch_size=4", "callbacks.concepts.figures=false",
              "print_config=false"]
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]
    single, out = tmp_path / "single", tmp_path / "ddp"
    cli(*common, f"paths.output_dir={single}", f"hydra.run.dir={tmp_path / 'h1'}", timeout=500)
    cli(*common, *ddp, "+trainer.limit_test_batches=1", f"paths.output_dir={out}", f"hydra.run.dir={tmp_path / 'h2'}",
        timeout=500)
    cli(*common, *ddp, "resume=true", f"paths.output_dir={out}", f"hydra.run.dir={tmp_path / 'h3'}", timeout=500)
    assert read_status(out)["resumed_images"] == 8
    a, b = (pd.read_csv(d / outputs.CONCEPTS) for d in (single, out))
    assert a["image"].nunique() == 13 and a["image"].tolist() == b["image"].tolist()  # rows: image x method x concept
    for name in (outputs.CLASS_CONCEPTS, outputs.CLASS_CONCEPTS_TRUTH):
        a, b = pd.read_csv(single / name), pd.read_csv(out / name)
        assert a.shape == b.shape and len(a) > 0
        floats = [c for c in a.columns if a[c].dtype == float]
        pd.testing.assert_frame_equal(a.drop(columns=floats), b.drop(columns=floats))
        for c in floats:
            for x, y in zip(a[c], b[c]):
                assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-5, abs=1e-6), (name, c)
    na, nb = (np.load(d / outputs.CLASS_CONCEPT_CHANNELS) for d in (single, out))
    assert sorted(na.files) == sorted(nb.files) and all(np.array_equal(na[k], nb[k]) for k in na.files)
