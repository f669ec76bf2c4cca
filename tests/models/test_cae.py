"""Image CAE (the Grad-CeAM paper's § IV-B): exact reconstruction shapes, the layer plan, clear
errors."""

import pytest
import torch
from torch import nn

from clustercam.models.autoencoder_module import AutoencoderModule
from clustercam.models.components.cae import ConvAutoencoder, transposed_output_padding

MNIST = {"filters": [32, 64], "kernels": [3, 5], "strides": [2, 2]}
STL10 = {"filters": [32, 64, 64], "kernels": [3, 5, 5], "strides": [2, 2, 2]}


@pytest.mark.parametrize(
    ("shape", "layers", "feature_shape"),
    [((1, 28, 28), MNIST, (64, 7, 7)), ((3, 96, 96), STL10, (64, 12, 12))],
)
@pytest.mark.parametrize("pooling", ["gap", "flatten"])
def test_paper_layers_reconstruct_the_input_shape(shape, layers, feature_shape, pooling):
    torch.manual_seed(0)
    net = ConvAutoencoder(shape, **layers, pooling=pooling)
    assert net.feature_shape == feature_shape
    x = torch.rand(2, *shape)
    z = net.encoder(x)
    assert z.shape == (2, 10)
    out = net(x)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1  # sigmoid output for [0, 1] images
    # the encoder is d conv + ReLU layers, the target layer is their output
    convs = [m for m in net.encoder.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == layers["filters"]
    assert [c.kernel_size[0] for c in convs] == layers["kernels"]
    assert [c.stride[0] for c in convs] == layers["strides"]
    assert net.target_layer == "features"
    assert net.encoder.features(x).shape[1:] == feature_shape
    c, h, w = feature_shape
    assert net.encoder.fc.in_features == (c if pooling == "gap" else c * h * w)


@pytest.mark.parametrize(
    ("shape", "kernels", "strides"),
    [((1, 27, 31), [3, 5, 4], [2, 3, 2]), ((2, 5, 7), [3], [1]), ((1, 29, 29), [5, 5], [2, 2]),
     ((3, 95, 97), [3, 5, 5], [2, 2, 2])],
)
def test_odd_sizes_reconstruct_exactly(shape, kernels, strides):
    net = ConvAutoencoder(shape, filters=[4] * len(kernels), kernels=kernels, strides=strides)
    x = torch.rand(1, *shape)
    assert net(x).shape == x.shape


def test_output_padding_by_hand():
    # 28 -> conv k3 s2 p1 -> 14; transposed: (14-1)*2 - 2 + 3 = 27, so 1 extra row
    assert transposed_output_padding(28, 14, 3, 2, 1) == 1
    # 14 -> conv k5 s2 p2 -> 7; transposed: 6*2 - 4 + 5 = 13 -> 1
    assert transposed_output_padding(14, 7, 5, 2, 2) == 1
    # 27 -> conv k3 s2 p1 -> 14; transposed gives 27 already
    assert transposed_output_padding(27, 14, 3, 2, 1) == 0


def test_wrong_input_size_is_a_clear_error():
    net = ConvAutoencoder((1, 28, 28), **MNIST)
    with pytest.raises(ValueError, match=r"built for inputs of shape \(N, 1, 28, 28\), got \(2, 3, 28, 28\)"):
        net(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        net(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": (28, 28)}, "channels, height, width"),
        ({"input_shape": (1, 28, 28), "filters": [8], "kernels": [3, 3], "strides": [2]}, "one entry per layer"),
        ({"input_shape": (1, 28, 28), "filters": []}, "at least one"),
        ({"input_shape": (1, 28, 28), "output_activation": "tanh"}, "output_activation"),
        ({"input_shape": (1, 28, 28), "pooling": "max"}, "unknown pooling"),
    ],
)
def test_bad_configurations_fail_early(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvAutoencoder(**kwargs)


def test_lightning_module_builds_from_a_partial_and_trains_one_step():
    from functools import partial

    torch.manual_seed(0)
    module = AutoencoderModule(partial(ConvAutoencoder, **MNIST), input_shape=[1, 28, 28])
    assert module.target_layer == "features"
    x = torch.rand(8, 1, 28, 28)
    opt = module.configure_optimizers()
    before = torch.nn.functional.mse_loss(module(x), x).item()
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(module(x), x)
        loss.backward()
        opt.step()
    assert torch.nn.functional.mse_loss(module(x), x).item() < before
