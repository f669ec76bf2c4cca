"""Grad-CeAM, CLAM, cardinality and the activation maps on a token layer equal the same methods on
that layer's output turned into a grid by hand (a module of its own that returns it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clustercam.explain.assignments import student_t_assignment
from clustercam.explain.clam import clam, clam_masks
from clustercam.explain.gradceam import cardinality, grad_ceam
from clustercam.explain.scores.methods import activation_maps
from clustercam.models.components.vit_ae import ViTEncoder


class ToGrid(nn.Module):
    """B x (gh * gw) x D tokens -> B x D x gh x gw, row-major: what the layout reader does."""

    def __init__(self, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, t):
        return t.transpose(1, 2).unflatten(2, self.grid)


class ByHand(nn.Module):
    """The encoder's forward with ``at``'s tokens made a grid by ``to_grid`` and back."""

    def __init__(self, enc: ViTEncoder, at: str) -> None:
        super().__init__()
        self.enc, self.at = enc, at
        self.to_grid = ToGrid(tuple(enc.patch_embed.grid_size))

    def forward(self, x):
        t = self.enc.patch_embed(x) + self.enc.pos_embed
        for i, block in enumerate(self.enc.blocks):
            t = block(t)
            if self.at == f"blocks.{i}":
                t = self.to_grid(t).flatten(2).transpose(1, 2)
        t = self.enc.norm(t)
        if self.at == "norm":
            return self.enc.fc(self.to_grid(t).flatten(2).mean(-1))
        return self.enc.fc(t.mean(1))


@pytest.mark.parametrize("layer", ["norm", "blocks.1"])  # the closed form; autograd through a block
@pytest.mark.parametrize("target", ["reference", "paper", "assignment"])
def test_a_token_layer_equals_its_grid_by_hand(layer: str, target: str) -> None:
    torch.manual_seed(0)
    enc = ViTEncoder((1, 16, 24), patch_size=4, width=16, depth=2, heads=2, embedding_dim=3).eval()
    twin = ByHand(enc, layer).eval()
    x = torch.rand(5, 1, 16, 24)
    with torch.no_grad():
        mu = enc(x[:4]) + 0.01  # samples 0-3 each nearest their own centroid
    torch.testing.assert_close(twin(x), enc(x))
    tok = grad_ceam(enc, layer, x, mu, target=target)
    grid = grad_ceam(twin, "to_grid", x, mu, target=target)
    assert tok.raw.shape == (5, 4, 4, 6) and tok.heatmaps.shape == (5, 4, 16, 24)
    torch.testing.assert_close(tok.channel_weights, grid.channel_weights, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(tok.raw, grid.raw, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(tok.heatmaps, grid.heatmaps, rtol=1e-4, atol=1e-5)
    if target == "reference":
        w = tok.channel_weights
        a = cardinality(enc, layer, x, mu, w)
        b = cardinality(twin, "to_grid", x, mu, w)
        assert int((a.before > 0).sum()) >= 3
        assert torch.equal(a.before, b.before) and torch.equal(a.after, b.after)
        torch.testing.assert_close(activation_maps(enc, layer, x), activation_maps(twin, "to_grid", x))


@pytest.mark.parametrize("layer", ["norm", "blocks.0"])
def test_clam_on_a_token_layer_equals_its_grid_by_hand(layer: str) -> None:
    """Each of the D channels of the token grid masks the input as a patch-grid map."""
    torch.manual_seed(1)
    enc = ViTEncoder((1, 8, 12), patch_size=4, width=8, depth=2, heads=2, embedding_dim=3).eval()
    twin = ByHand(enc, layer).eval()
    x, mu = torch.rand(3, 1, 8, 12), torch.randn(2, 3)
    tok = clam(enc, layer, x, mu, batch_size=16)
    grid = clam(twin, "to_grid", x, mu, batch_size=16)
    assert tok.raw.shape == (3, 2, 2, 3) and tok.scores.shape == (3, 8, 2)
    torch.testing.assert_close(tok.scores, grid.scores, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(tok.heatmaps, grid.heatmaps, rtol=1e-4, atol=1e-5)
    # a callable reading: the masks are its maps (here mirrored), scored by hand for sample 0
    flip = lambda t: t.transpose(1, 2).unflatten(2, (2, 3)).flip(-1)  # noqa: E731
    flipped = clam(enc, layer, x, mu, batch_size=16, layout=flip)
    with torch.no_grad():
        maps = flip(dict(enc.named_modules())[layer](_tokens_before(enc, layer, x[:1])))
        masks = clam_masks(maps[0], (8, 12))  # D x 8 x 12
        by_hand = student_t_assignment(enc(x[:1] * masks[:, None]), mu)
    torch.testing.assert_close(flipped.scores[0], by_hand, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(flipped.scores, tok.scores)


def _tokens_before(enc: ViTEncoder, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The input of ``layer`` (the tokens it transforms)."""
    t = enc.patch_embed(x) + enc.pos_embed
    for i, block in enumerate(enc.blocks):
        if layer == f"blocks.{i}":
            return t
        t = block(t)
    return t


def test_a_layout_callable_overrides_the_reading() -> None:
    torch.manual_seed(0)
    enc = ViTEncoder((1, 8, 8), patch_size=4, width=8, depth=1, heads=2, embedding_dim=2).eval()
    x, mu = torch.rand(3, 1, 8, 8), torch.randn(2, 2)
    flipped = grad_ceam(enc, "norm", x, mu, layout=lambda t: t.transpose(1, 2).unflatten(2, (2, 2)).flip(-1))
    auto = grad_ceam(enc, "norm", x, mu)
    torch.testing.assert_close(flipped.raw, auto.raw.flip(-1))
