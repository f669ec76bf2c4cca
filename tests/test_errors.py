"""A user's mistake ends the run before any training step, in one message naming the value
and how to fix it; the command line prints it without a traceback; nothing already written
to the run directory is lost."""

import time

import pytest

from clustercam.exceptions import MissingFileError, UserError
from clustercam.runtime.errors import user_error_message
from tests.helpers import synset_folder
from tests.helpers.run import cli, train

IMAGES = "<images>"  # a tiny folder of synset images, made in the test's tmp_path
TINY = ["logger=none", "model.net.filters=[4,4]", "trainer.max_epochs=1"]

CASES = [
    # (overrides, words the message must contain)
    (["experiment=trace", "callbacks.cluster_explain.n_clusters=500", *TINY],
     ["n_clusters = 500", "100 samples", "callbacks.cluster_explain.n_clusters"]),
    (["experiment=trace", "ckpt_path=/no/such/file.ckpt", *TINY], ["/no/such/file.ckpt", "does not exist"]),
    (["experiment=trace", "model.optimizer.lr=-0.1", *TINY], ["model.optimizer", "-0.1"]),
    (["experiment=trace", "callbacks.cluster_explain.target_layer=features.9", *TINY],
     ["'features.9' is not a module", "features.0"]),
    (["experiment=trace", "callbacks.cluster_explain.mode=gradcam", *TINY], ["'gradcam'", "reference"]),
    (["experiment=trace", "data.name=NoSuchSet", "data.source=package", *TINY],
     ["'NoSuchSet' is not available", "data.data_root"]),
    (["experiment=concepts_imagenet", "model.pretrained=false"], ["data.data_dir", "synset"]),
    (["experiment=concepts_imagenet", f"data.data_dir={IMAGES}", "model.name=nf_resnet5O",
      "model.pretrained=false"], ["'nf_resnet5O'", "nf_resnet50"]),
    (["experiment=concepts_imagenet", "data.data_dir=/no/such/folder", "model.pretrained=false"],
     ["/no/such/folder", "does not exist"]),
    (["experiment=concepts_imagenet", f"data.data_dir={IMAGES}", "model.pretrained=false",
      "callbacks.concepts.n_concepts=1"], ["n_concepts must be >= 2, got 1"]),
    (["experiment=concepts_imagenet", f"data.data_dir={IMAGES}", "model.pretrained=false",
      "callbacks.concepts.scope=bogus"], ["scope must be one of", "'bogus'", "callbacks.concepts"]),
    (["experiment=concepts_imagenet", f"data.data_dir={IMAGES}", "model.pretrained=false",
      "callbacks.concepts.min_presence=2"], ["min_presence must be in (0, 1], got 2"]),
]


@pytest.mark.parametrize("overrides, words", CASES, ids=[str(i) for i in range(len(CASES))])
def test_each_mistake_is_one_clear_message_before_training(overrides, words, tmp_path):
    out = tmp_path / "run"
    if any(IMAGES in o for o in overrides):
        overrides = [o.replace(IMAGES, str(synset_folder(tmp_path / "images"))) for o in overrides]
    with pytest.raises(Exception) as info:  # noqa: B017 - the type is checked below
        train(overrides, out)
    message = user_error_message(info.value)
    assert message is not None, f"not reported as a user error: {info.value!r}"
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    assert (out / "config.yaml").is_file()  # what was written before the error stays
    assert not (out / "checkpoints").exists()  # no training step ran


def test_the_command_line_prints_one_line_without_a_traceback(tmp_path):
    t0 = time.perf_counter()
    proc = cli("experiment=trace", "callbacks.cluster_explain.n_clusters=500", "logger=none",
               f"paths.output_dir={tmp_path}", check=False, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert err[-2].startswith("error: n_clusters = 500") and "HYDRA_FULL_ERROR=1" in err[-1]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert time.perf_counter() - t0 < 90  # start-up and composition, no epoch
    full = cli("experiment=trace", "model.optimizer.lr=-0.1", "logger=none", f"paths.output_dir={tmp_path}",
               check=False, timeout=120, env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr


def test_bugs_are_not_dressed_up_as_user_errors():
    assert user_error_message(ZeroDivisionError("division by zero")) is None
    assert user_error_message(UserError("bad value 3")) == "error: bad value 3"
    for bug in (ValueError("bad value 3"), TypeError("unsupported operand"), KeyError("x"),
                ImportError("No module named 'numpyy'")):
        assert user_error_message(bug) is None, bug
    assert user_error_message(MissingFileError("'/x' does not exist")) == "error: '/x' does not exist"


BUGGY = """
class Buggy:
    def __init__(self, output_dir=None):
        raise TypeError("a bug: unsupported operand")


class Fine:
    def __init__(self, output_dir=None):
        self.output_dir = output_dir
"""


def test_a_config_that_cannot_be_built_is_a_user_error_a_bug_inside_the_target_is_not(tmp_path, monkeypatch):
    from hydra.utils import instantiate

    (tmp_path / "my_callbacks.py").write_text(BUGGY)
    (tmp_path / "broken_module.py").write_text("import numpyy  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = [({"_target_": "my_callbacks.Buggy"}, None),
             ({"_target_": "broken_module.X"}, None),  # the module's own import fails: a bug
             ({"_target_": "my_callbacks.Fine", "nope": 1}, "unexpected keyword argument 'nope'"),
             ({"_target_": "my_callbacks.Nope"}, "Error locating target 'my_callbacks.Nope'"),
             ({"_target_": "clustercam.explain.ScoreSettings", "steps": 0}, "error: steps must be >= 1")]
    for cfg, expected in cases:
        with pytest.raises(Exception) as info:  # noqa: B017 - Hydra's InstantiationException
            instantiate({"node": cfg})
        message = user_error_message(info.value)
        if expected is None:
            assert message is None, (cfg, message)
        else:
            assert message is not None and expected in message and "\n" not in message, (cfg, message)
            assert "(while building node)" in message


def test_a_programming_error_in_a_run_keeps_its_traceback_at_the_command_line(tmp_path):
    (tmp_path / "my_callbacks.py").write_text(BUGGY)
    proc = cli("experiment=trace", "logger=none", "+callbacks.buggy._target_=my_callbacks.Buggy",
               f"paths.output_dir={tmp_path / 'run'}", cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "TypeError: a bug: unsupported operand" in proc.stderr
    assert "error: " not in proc.stderr.splitlines()[-1]  # not dressed up as a user error
