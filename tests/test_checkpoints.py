"""Checkpoints given by path are checked before the run: missing, not a Lightning checkpoint,
of another model, NaN weights: one line each naming the file and what is wrong."""

import json
import os

import pytest
import torch

from clustercam import outputs
from clustercam.exceptions import CheckpointError, MissingFileError, UserError
from clustercam.models.classifier_module import ClassifierModule
from clustercam.models.timm_weights import PretrainedWeightsError
from clustercam.models.trainable_classifier import TrainableClassifierModule
from clustercam.runtime.checkpoints import check_checkpoint, read_checkpoint
from clustercam.runtime.errors import user_error_message
from tests.helpers.run import train

TRACE = ["experiment=trace", "logger=none", "trainer.max_epochs=1", "data.max_samples=20",
         "callbacks.cluster_explain.figures=false", "model.net.filters=[8,8,8]"]


@pytest.fixture(scope="module")
def trace_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("trace")
    train(TRACE, out)
    return out / "checkpoints" / "last.ckpt"


def test_missing_random_and_bare_files_are_named_in_one_line(tmp_path):
    with pytest.raises(CheckpointError, match=r"ckpt_path='.*nope.ckpt' does not exist: give a Lightning") as err:
        check_checkpoint(tmp_path / "nope.ckpt")
    assert isinstance(err.value, MissingFileError)  # a missing file, as every setting's
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        read_checkpoint(tmp_path)
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(1024))
    with pytest.raises(CheckpointError, match=r"noise.ckpt' is not a Lightning checkpoint: 1024 bytes "
                                              r"that are neither torch's zip format nor a pickle"):
        read_checkpoint(noise)
    noise.write_bytes(b"\x80" + os.urandom(1023))  # a pickle's first byte, not torch's magic number
    with pytest.raises(CheckpointError, match=r"noise.ckpt' is not a Lightning checkpoint: 1024 bytes"):
        read_checkpoint(noise)
    legacy = tmp_path / "legacy.pt"  # the pre-zip format is still a torch file: read, then found wanting
    torch.save({"weight": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"legacy.pt' is not a Lightning checkpoint \(it holds a dict"):
        read_checkpoint(legacy)
    bare = tmp_path / "bare.pt"
    torch.save({"weight": torch.zeros(2)}, bare)  # a state dict, not a Lightning checkpoint
    with pytest.raises(CheckpointError, match=r"bare.pt' is not a Lightning checkpoint \(it holds a dict "
                                              r"with keys \['weight'\], no 'state_dict'\); weights of a "
                                              r"bare network go in model.checkpoint_path"):
        read_checkpoint(bare)
    for name in ("last", "best", None):  # Lightning's names pass through
        check_checkpoint(name, torch.nn.Linear(1, 1))


def test_a_checkpoint_of_the_other_model_family_is_refused_before_the_run(tmp_path):
    other = tmp_path / "classifier.ckpt"
    clf = TrainableClassifierModule("test_resnet", num_classes=6)
    torch.save({"state_dict": clf.state_dict(), "epoch": 0, "global_step": 0}, other)
    out = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"classifier.ckpt' is a checkpoint of another model: \d+ model "
                                              r"keys missing from the file .*file keys the model does not have"):
        train([*TRACE, "train=false", f"ckpt_path={other}"], out)
    status = json.loads((out / outputs.STATUS).read_text())
    assert status["status"] == "failed" and "classifier.ckpt' is a checkpoint of another model" in status["message"]
    assert (out / "config.yaml").is_file()


def test_other_sizes_and_nan_weights_are_refused(trace_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match=r"is a checkpoint of another model: \d+ shapes differ "
                                              r"\(net.encoder.features.0.body.0.weight: file \(8, 1, 8\), "
                                              r"model \(16, 1, 8\)"):
        train([*TRACE, "model.net.filters=[16,8,8]", "train=false", f"ckpt_path={trace_ckpt}"],
              tmp_path / "run")
    ckpt = torch.load(trace_ckpt, weights_only=False)
    first = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][first] = ckpt["state_dict"][first] * float("nan")
    torch.save(ckpt, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match=rf"nan.ckpt' holds NaN or infinite weights in 1 tensors "
                                              rf"\(e.g. \['{first}'\]\): saved by a diverged run\?"):
        train([*TRACE, "train=false", f"ckpt_path={tmp_path / 'nan.ckpt'}"], tmp_path / "run2")
    # the checkpoint that fits evaluates as before
    train([*TRACE, "train=false", f"ckpt_path={trace_ckpt}"], tmp_path / "run3")
    assert json.loads((tmp_path / "run3" / outputs.STATUS).read_text())["status"] == "finished"


def test_random_bytes_as_ckpt_path_give_one_line_at_the_command_line(tmp_path):
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(1024))
    out = tmp_path / "run"
    with pytest.raises(CheckpointError) as err:
        train([*TRACE, "train=false", f"ckpt_path={noise}"], out)
    line = user_error_message(err.value)  # what the command line prints, without a traceback
    assert line.startswith(f"error: ckpt_path='{noise}' is not a Lightning checkpoint: 1024 bytes")
    assert "\n" not in line and "weights_only" not in line
    assert json.loads((out / outputs.STATUS).read_text())["status"] == "failed"


def test_random_bytes_as_model_weights_give_one_line(tmp_path):
    for name in ("w.safetensors", "w.pth"):
        (tmp_path / name).write_bytes(os.urandom(1000))
    with pytest.raises(PretrainedWeightsError, match=r"w.safetensors' as safetensors: Error while deserializing"):
        ClassifierModule("test_resnet", checkpoint_path=str(tmp_path / "w.safetensors"), num_classes=6)
    with pytest.raises(PretrainedWeightsError, match=r"w.pth' as a state dict: 1000 bytes that are neither"):
        ClassifierModule("test_resnet", checkpoint_path=str(tmp_path / "w.pth"), num_classes=6)


def test_concept_maps_names_a_size_that_is_not_positive():
    from clustercam.explain import concept_maps

    a, labels = torch.rand(2, 6, 4, 4), torch.randint(0, 3, (2, 6))
    with pytest.raises(UserError, match=r"concept_maps: size must be positive .*got 0"):
        concept_maps(a, labels, 0)
    with pytest.raises(UserError, match=r"got \(8, 0\)"):
        concept_maps(a, labels, (8, 0))
    assert concept_maps(a, labels, 8).shape == (2, 3, 8, 8)
