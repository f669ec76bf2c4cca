"""The time-series classifiers (FCN, ResNet of Fawaz et al.) in the concept module: their
architecture, the 1-D reading of their last convolution, the pooled head against the
whole head, and one clear error for each wrong combination, before any training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clustercam.callbacks.concept_explain import ConceptExplainCallback
from clustercam.exceptions import UserError
from clustercam.explain.concepts import ConceptSettings, concept_importance, run_concepts
from clustercam.models.components.ts_classifiers import (
    ResidualBlock,
    clustercam_fcn,
    clustercam_ts_resnet,
)
from clustercam.models.trainable_classifier import TrainableClassifierModule


def _convs(net: nn.Module) -> list[tuple[int, int, int]]:
    return [(m.in_channels, m.out_channels, m.kernel_size[0]) for m in net.modules() if isinstance(m, nn.Conv1d)]


def test_fcn_and_resnet_have_the_published_blocks_and_keep_the_length() -> None:
    fcn = clustercam_fcn(in_chans=2, num_classes=3)
    assert _convs(fcn) == [(2, 128, 8), (128, 256, 5), (256, 128, 3)]
    res = clustercam_ts_resnet(in_chans=2, num_classes=3)
    blocks = [m for m in res.modules() if isinstance(m, ResidualBlock)]
    assert [_convs(b.convs) for b in blocks] == [
        [(2, 64, 8), (64, 64, 5), (64, 64, 3)], [(64, 128, 8), (128, 128, 5), (128, 128, 3)],
        [(128, 128, 8), (128, 128, 5), (128, 128, 3)]]
    assert isinstance(blocks[2].shortcut, nn.BatchNorm1d)  # same width: BatchNorm only
    for net in (fcn, res):
        net.eval()
        for length in (31, 64):  # "same" padding for odd and even lengths, kernels 8 / 5 / 3
            x = torch.randn(2, 2, length)
            f = net.forward_features(x)
            assert f.shape == (2, 128, length) and bool((f >= 0).all())
            assert torch.allclose(net(x), net.get_classifier()(f.mean(-1)), atol=1e-6)
            assert torch.equal(net.forward_head(f, pre_logits=True), f.mean(-1))


def _fcn_module(shape=(2, 40), **kwargs) -> TrainableClassifierModule:
    torch.manual_seed(0)
    m = TrainableClassifierModule("clustercam_fcn", num_classes=3, input_shape=shape,
                                  model_kwargs={"widths": [16, 16, 12]}, **kwargs)
    m.freeze_net()
    return m


def test_concepts_of_the_fcn_read_time_steps_and_the_pooled_head_is_the_whole_head() -> None:
    m = _fcn_module()
    assert m.feature_shape == (12, 1, 40) and m.net.in_chans == 2
    x, y = torch.randn(4, 2, 40), torch.tensor([0, 1, 2, 0])
    out = m._step((x, y, torch.arange(4)))
    assert out["layer_output"].shape == (4, 12, 40) and out["activations"].shape == (4, 12, 1, 40)
    head = m.concept_head(x, out)
    pooled = m.pooled_head
    assert pooled is not None and pooled.affine and m.describe()["layout"] == "ncl"
    s = ConceptSettings(n_concepts=3, sub_concepts=2, n_init=2, control_repeats=2)
    batch = run_concepts(head, out["activations"], y, settings=s, logits=out["logits"], pooled_head=pooled)
    assert batch.maps.shape[-2:] == (1, 40) and torch.isfinite(batch.importance[:, :, :3]).all()
    labels = batch.concept_labels[s.configs[0]]
    closed = concept_importance(head, out["activations"], labels, y, n_concepts=3, pooled_head=pooled)
    # by hand: zero each concept's channels in the layer's own B x C x L output, run the whole head
    p = torch.softmax(m.net.forward_head(out["layer_output"]).double(), -1)[torch.arange(4), y]
    for k in range(3):
        keep = ((labels != k) & (labels >= 0)) | (labels == -1)
        q = torch.softmax(m.net.forward_head(out["layer_output"] * keep[:, :, None]).double(), -1)[torch.arange(4), y]
        want = (p - q) / p * 100
        assert torch.allclose(closed[:, k].double(), want, atol=1e-4, equal_nan=True)
        assert torch.allclose(batch.importance[:, 0, k].double(), want, atol=1e-4, equal_nan=True)


def test_image_data_for_a_series_classifier_and_the_reverse_are_clear_errors() -> None:
    with pytest.raises(UserError, match=r"classifies series .* gives images \(C x H x W\) of shape \[3, 32, 32\]"):
        TrainableClassifierModule("clustercam_fcn", num_classes=3, input_shape=(3, 32, 32))
    with pytest.raises(UserError, match=r"classifies images .* gives series \(C x L\) of shape \[1, 150\]"):
        TrainableClassifierModule("resnet18", num_classes=3, input_shape=(1, 150))


def test_a_layer_without_a_time_axis_is_a_clear_error() -> None:
    with pytest.raises(UserError, match=r"layer 'fc' .* no positions"):
        _fcn_module(layer="fc")


def test_more_concepts_than_the_layers_channels_fail_when_the_run_sets_up() -> None:
    m = _fcn_module()
    cb = ConceptExplainCallback("unused", n_concepts=[5, 13])
    with pytest.raises(UserError, match=r"n_concepts=13 is larger than the 12 channels of the final features"):
        cb.setup(None, m, "fit")
