"""Resumable concept runs: a run killed half way (SIGTERM, SIGKILL) and resumed with
``resume=true`` writes the same files as an uninterrupted run, class concepts' included; the
shard merge on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clustercam import outputs
from clustercam.callbacks.concept_shards import ShardStore, by_index, merge_maps, run_key
from clustercam.exceptions import UserError
from clustercam.explain.concepts import ConceptBatch, ConceptSettings, run_concepts
from clustercam.runtime.status import read_status
from tests.helpers import REPO, synset_folder
from tests.helpers.run import OFFLINE

SETTINGS = ConceptSettings(n_concepts=3, sub_concepts=0, n_init=2)


def _batch(first: int, n: int) -> ConceptBatch:
    torch.manual_seed(first)
    head = lambda a: a.mean((2, 3))[:, :4]  # noqa: E731
    out = run_concepts(head, torch.rand(n, 16, 3, 3), torch.arange(n) % 4, settings=SETTINGS)
    return out.replace(idx=torch.arange(first, first + n), maps=None, sub_maps=None, degenerate=None,
                       concept_labels=None)


def test_shards_merge_to_the_rows_of_one_run_in_index_order(tmp_path):
    key = run_key(SETTINGS, ["a", "b"], {"weights": "random"})
    first = ShardStore(tmp_path, 0, key)
    b0, b1, b2 = _batch(0, 2), _batch(2, 2), _batch(4, 1)
    maps = {"idx": torch.tensor([0, 1]), "maps": torch.rand(2, 5), "sub_maps": torch.rand(2, 7)}
    first.write(b0, maps)
    first.write(b1, None)
    manifest = json.loads((tmp_path / outputs.SHARDS / outputs.SHARD_MANIFEST.format(rank=0)).read_text())
    assert manifest["key"] == key and sorted(manifest["shards"].values()) == [[0, 1], [2, 3]]
    again = ShardStore(tmp_path, 0, key)
    assert again.read() == {0, 1, 2, 3}
    old, old_maps = again.load(sorted(again.found))
    merged = by_index(ConceptBatch.cat([b2, *reversed(old)]))  # new rows first, old out of order
    whole = ConceptBatch.cat([b0, b1, b2])
    assert merged.tensors().keys() == whole.tensors().keys()
    for k, v in whole.tensors().items():
        assert torch.equal(merged.tensors()[k].nan_to_num(-7), v.nan_to_num(-7)), k
    later = {"idx": torch.tensor([4]), "maps": torch.rand(1, 5), "sub_maps": torch.rand(1, 7)}
    kept = merge_maps([later, *old_maps], 2)  # the two lowest indices, sorted
    assert kept["idx"].tolist() == [0, 1] and torch.equal(kept["maps"], maps["maps"])
    with pytest.raises(UserError, match="other concept settings, images or weights"):
        ShardStore(tmp_path, 0, run_key(SETTINGS, ["a", "c"], {"weights": "random"})).read()
    ShardStore(tmp_path, 0, key).clear()
    assert ShardStore(tmp_path, 0, key).read() == set()


N_IMAGES = 30
ARGS = ["print_config=false", "experiment=concepts_imagenet", "model.pretrained=false",
        "model.name=test_resnet", "logger=none", "callbacks.concepts.class_concepts=true",
        "callbacks.concepts.nmf_max_images=2", "callbacks.concepts.class_figures=1",
        "data.batch_size=2", "callbacks.concepts.max_figures=3", "callbacks.concepts.control_repeats=3"]


def _start(images: Path, out: Path, *extra: str) -> subprocess.Popen:
    log = open(out.parent / f"{out.name}_{len(list(out.parent.glob('*.txt')))}.txt", "w")
    return subprocess.Popen([sys.executable, "-m", "clustercam.train", *ARGS, f"data.data_dir={images}",
                             f"paths.output_dir={out}", *extra], cwd=REPO,
                            env={**os.environ, **OFFLINE, "OMP_NUM_THREADS": "1"},
                            stdout=log, stderr=subprocess.STDOUT)


def _finished(out: Path) -> set[int]:
    done: set[int] = set()
    for path in (out / outputs.SHARDS).glob(outputs.SHARD_MANIFEST.format(rank="*")):
        try:
            done |= {i for idx in json.loads(path.read_text())["shards"].values() for i in idx}
        except (OSError, ValueError):  # not there yet
            pass
    return done


def _files(out: Path) -> dict[str, bytes]:
    keep = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".csv", ".png", ".md")]
    return {str(p.relative_to(out)): p.read_bytes() for p in keep}


@pytest.fixture(scope="module")
def images_and_whole_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    images = synset_folder(root / "images", per_class=N_IMAGES // 2)
    proc = _start(images, root / "whole")
    assert proc.wait(timeout=600) == 0
    return images, root / "whole"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_killed_run_resumed_writes_the_files_of_an_uninterrupted_run(images_and_whole_run, sig, tmp_path):
    images, whole = images_and_whole_run
    out = tmp_path / "run"
    proc = _start(images, out)
    deadline = time.time() + 300
    while len(_finished(out)) < N_IMAGES // 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)  # freeze it to check it is about half way, then kill
    done = _finished(out)
    assert proc.poll() is None and N_IMAGES // 2 <= len(done) < N_IMAGES, done
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    proc.wait(timeout=120)
    assert proc.returncode == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    assert read_status(out)["status"] == ("interrupted" if sig == signal.SIGTERM else "running")
    assert not (out / outputs.CONCEPTS).exists()

    resumed = _start(images, out, "resume=true")
    assert resumed.wait(timeout=600) == 0, sorted(out.parent.glob("*.txt"))[-1].read_text()[-3000:]
    log = sorted(out.parent.glob("*.txt"))[-1].read_text()
    status = read_status(out)  # SIGTERM may let the batch under way finish first
    assert status["status"] == "finished" and len(done) <= status["resumed_images"] < N_IMAGES
    assert f"resume: {status['resumed_images']} of {N_IMAGES} images already done" in log

    want, got = _files(whole), _files(out)
    assert sorted(got) == sorted(want) and any(name.endswith(".png") for name in want)
    assert outputs.CLASS_CONCEPTS in want and any("class_concepts/" in name for name in want)  # its galleries
    npz = [np.load(d / outputs.CLASS_CONCEPT_CHANNELS) for d in (whole, out)]  # zip times differ: the arrays
    assert sorted(npz[0].files) == sorted(npz[1].files)
    for name in npz[0].files:
        assert np.array_equal(npz[0][name], npz[1][name]), name
    for name in want:
        if name == outputs.CONCEPT_METRICS:  # its seconds column is a timing: every run differs
            a, b = (pd.read_csv(d / name, dtype=str).drop(columns="seconds") for d in (whole, out))
            pd.testing.assert_frame_equal(a, b)
            continue
        if name == outputs.CONCEPT_SUMMARY:
            want[name], got[name] = (_untimed(x[name]) for x in (want, got))
        assert got[name] == want[name], name


def _untimed(text: bytes) -> bytes:
    """The summary without its ``Time (s)`` columns (the clustering's seconds)."""
    lines, timed = [], None
    for line in text.decode().splitlines():
        cells = line.split("|")
        if not line.startswith("|"):
            timed = None
        elif timed is None:
            timed = [i for i, c in enumerate(cells) if c.strip() == "Time (s)"]
        lines.append("|".join(c for i, c in enumerate(cells) if i not in (timed or [])))
    return "\n".join(lines).encode()
