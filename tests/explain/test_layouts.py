"""Reading a layer's output as channels at positions, on outputs whose answer is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clustercam.exceptions import UserError
from clustercam.explain.layouts import Layout, grid_2d, infer_layout


class _TokenModel(nn.Module):
    """What the layout reader asks a ViT: prefix tokens and the patch grid at an input size."""

    def __init__(self, prefix: int, patch: int = 16) -> None:
        super().__init__()
        self.num_prefix_tokens, self.patch = prefix, patch

    def token_grid(self, size):
        return size[0] // self.patch, size[1] // self.patch


def test_class_and_register_tokens_go_back_to_their_patches() -> None:
    # 1 class + 4 register tokens, then a 3 x 5 grid row-major; channel 2 fires at patch (1, 3) only
    b, d, gh, gw = 2, 6, 3, 5
    tokens = torch.randn(b, 5 + gh * gw, d)
    tokens[:, :, 2] = 0.0
    tokens[:, 5 + 1 * gw + 3, 2] = 9.0
    tokens[:, 0, 2] = 7.0  # the class token must not land on the grid
    lay = infer_layout(tokens, model=_TokenModel(prefix=5), input_size=(48, 80))
    assert (lay.kind, lay.grid, lay.prefix) == ("tokens", (3, 5), 5)
    a = lay.read(tokens)
    assert a.shape == (b, d, 3, 5)
    assert torch.equal((a[:, 2] == 9.0).nonzero()[:, 1:], torch.tensor([[1, 3], [1, 3]]))
    assert float(a[:, 2].abs().sum()) == 2 * 9.0
    # every other channel: token 5 + r * gw + c at (r, c)
    assert torch.equal(a[1, 4, 2, 1], tokens[1, 5 + 2 * gw + 1, 4])
    # written back: the prefix tokens are the output's, the patches the new grid's
    ablated = a.clone()
    ablated[:, 2] = 0.0
    back = lay.write(ablated, tokens)
    assert torch.equal(back[:, :5], tokens[:, :5])
    assert float(back[:, 5:, 2].abs().sum()) == 0.0
    assert torch.equal(lay.write(a, tokens), tokens)


def test_channels_last_equals_its_permuted_nchw_twin() -> None:
    nchw = torch.randn(2, 7, 3, 4)
    nhwc = nchw.permute(0, 2, 3, 1).contiguous()

    class Swinish(nn.Module):
        output_fmt = "NHWC"

    lay = infer_layout(nhwc, model=Swinish())
    assert lay.kind == "nhwc" and lay.grid == (3, 4)
    assert torch.equal(lay.read(nhwc), nchw)
    assert torch.equal(infer_layout(nchw).read(nchw), nchw)  # no output_fmt: NCHW
    assert torch.equal(lay.write(nchw * 2, nhwc), nhwc * 2)


def test_one_by_n_grids_and_series() -> None:
    tokens = torch.randn(1, 1 + 6, 4)
    lay = infer_layout(tokens, model=_TokenModel(prefix=1), input_size=(16, 96))
    assert lay.grid == (1, 6) and lay.read(tokens).shape == (1, 4, 1, 6)
    assert torch.equal(lay.read(tokens)[0, :, 0, 5], tokens[0, 6])
    series = torch.randn(2, 3, 10)
    lay = infer_layout(series)  # no token model: B x C x L
    assert lay.kind == "ncl" and lay.grid == (10,)
    assert grid_2d(lay.read(series)).shape == (2, 3, 1, 10)


def test_a_token_count_off_the_grid_is_one_clear_error() -> None:
    tokens = torch.randn(1, 1 + 14, 8)  # 15 tokens, the grid says 3 x 5 + 1 = 16
    with pytest.raises(UserError, match=r"15 tokens, but the model's grid is 3 x 5 with 1 prefix tokens"):
        infer_layout(tokens, model=_TokenModel(prefix=1), input_size=(48, 80))
    with pytest.raises(UserError, match="no positions"):
        infer_layout(torch.randn(2, 8))
    with pytest.raises(UserError, match="does not give its patch grid"):
        infer_layout(tokens, layout="tokens")


def test_a_reshape_transform_callable_reads_and_writes_back() -> None:
    # pytorch-grad-cam's ViT reshape_transform: drop the class token, reshape, channels first
    def reshape(t):
        return t[:, 1:].reshape(t.shape[0], 2, 3, t.shape[2]).permute(0, 3, 1, 2)

    tokens = torch.randn(2, 7, 5)
    lay = infer_layout(tokens, layout=reshape)
    auto = Layout("tokens", grid=(2, 3), prefix=1)
    assert torch.equal(lay.read(tokens), auto.read(tokens))
    new = torch.randn(2, 5, 2, 3)
    assert torch.equal(lay.write(new, tokens), auto.write(new, tokens))
    with pytest.raises(UserError, match="only move values"):
        infer_layout(tokens, layout=lambda t: (t[:, 1:] * 2).reshape(t.shape[0], 2, 3, 5).permute(0, 3, 1, 2)).write(new, tokens)
