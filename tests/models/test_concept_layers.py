"""Concepts of any timm backbone and any layer: ViT / DeiT tokens, channels-last Swin, ConvNeXt.

Real timm models with random weights at small inputs (one or two images): the concepts,
importance and maps run on the layer's grid; ablation through the rest of the network gives
the closed form's importance where both apply; a layer the head cannot see is warned about.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from clustercam.exceptions import UserError
from clustercam.explain.concepts import ConceptSettings, concept_importance, run_concepts
from clustercam.explain.concepts.image.ablation import BatchHead
from clustercam.explain.concepts.image.layer import UnreachableLayerWarning
from clustercam.models.classifier_module import ClassifierModule

SETTINGS = ConceptSettings(n_concepts=3, sub_concepts=2, n_init=2, control_repeats=2, detail="all")


def _module(name: str, layer: str | None = None, shape=(3, 32, 48), **kwargs) -> ClassifierModule:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: said loudly elsewhere
        return ClassifierModule(name, pretrained=False, num_classes=4, model_kwargs=kwargs,
                                input_shape=shape, layer=layer)


def _concepts(module: ClassifierModule, x: torch.Tensor, y: torch.Tensor, masks=None):
    out = module._step((x, y, torch.arange(len(x))))
    head = module.concept_head(x, out)
    batch = run_concepts(head, out["activations"], y, settings=SETTINGS, logits=out["logits"],
                         pooled_head=module.pooled_head, part_masks=masks)
    return out, head, batch


def test_vit_tokens_at_a_non_square_input_give_grid_concepts() -> None:
    # 32 x 48 px, patch 16: a 2 x 3 grid after the class token (dynamic image size)
    m = _module("vit_tiny_patch16_224", dynamic_img_size=True, global_pool="avg")
    assert m.feature_shape == (192, 2, 3)
    x, y = torch.randn(2, 3, 32, 48), torch.tensor([0, 3])
    masks = torch.zeros(2, 3, 32, 48)
    masks[:, 0, :16, :16], masks[:, 1, 16:, 32:], masks[:, 2, :16, 32:] = 1, 1, 1
    out, head, batch = _concepts(m, x, y, masks)
    assert out["layer_output"].shape == (2, 7, 192) and out["activations"].shape == (2, 192, 2, 3)
    assert isinstance(head, BatchHead) and not m.pooled_head.affine  # fc_norm between pooling and fc
    assert batch.maps.shape == (2, 2, 3, 2, 3) and batch.sub_maps.shape == (2, 2, 3, 2, 2, 3)
    assert bool((batch.maps >= 0).all())  # signed tokens: maps are max(0, sum)
    assert int(batch.kept.min()) == 192  # signed tokens: every channel kept
    assert torch.isfinite(batch.importance).all() and bool((batch.importance != 0).any())
    assert set(batch.truth) and torch.isfinite(batch.fidelity_auc["deletion_auc"]).all()
    # the head on the unablated grid gives the model's own logits
    assert torch.allclose(head(out["activations"]), m.net(x), atol=1e-5)


def test_deit_distillation_and_class_tokens_are_dropped() -> None:
    m = _module("deit_tiny_distilled_patch16_224", dynamic_img_size=True, shape=(3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    raw, logits = m.layer_output(x)
    assert raw.shape == (1, 2 + 4, 192) and m.layout_of(raw, x).prefix == 2
    assert torch.equal(m.features(x)[0, :, 1, 0], raw[0, 2 + 2])  # patch (1, 0) is token 2 + 2
    assert torch.allclose(logits, m.net(x))


def test_an_intermediate_vit_block_runs_the_rest_of_the_network() -> None:
    m = _module("vit_tiny_patch16_224", layer="blocks.5", dynamic_img_size=True)
    x, y = torch.randn(2, 3, 32, 48), torch.tensor([1, 2])
    out, head, batch = _concepts(m, x, y)
    assert out["activations"].shape == (2, 192, 2, 3) and m.pooled_head is None
    # concept 0 of config 0 ablated by hand: zero its channels at every patch token of blocks.5
    res = batch.importance[:, 0, 0]
    labels = batch.concept_labels[SETTINGS.configs[0]]
    p = torch.softmax(m.net(x).double(), -1)[torch.arange(2), y]

    def ablate(_mod, _inp, output):
        keep = (labels != 0).to(output.dtype)[:, None, :]
        return torch.cat([output[:, :1], output[:, 1:] * keep], 1)

    handle = m.net.blocks[5].register_forward_hook(ablate)
    try:
        p_l = torch.softmax(m.net(x).double(), -1)[torch.arange(2), y]
    finally:
        handle.remove()
    assert torch.allclose(res, (p - p_l) / p * 100, atol=1e-6)


@pytest.mark.parametrize(("name", "kwargs", "layer"), [
    ("resnet18", {"output_stride": 8}, "layer4"),  # the closed-form pooled head vs layer4 + the rest
    ("swin_tiny_patch4_window7_224", {"embed_dim": 16, "depths": (1, 1), "num_heads": (1, 2),
                                      "img_size": 32, "window_size": 4}, "norm"),  # channels-last
])
def test_importance_through_the_rest_equals_the_closed_form(name, kwargs, layer) -> None:
    shape = (3, 32, 32)
    final, inner = _module(name, shape=shape, **kwargs), _module(name, layer, shape=shape, **kwargs)
    inner.net.load_state_dict(final.net.state_dict())
    x, y = torch.randn(2, *shape), torch.tensor([0, 1])
    a_out, b_out = final._step((x, y, torch.arange(2))), inner._step((x, y, torch.arange(2)))
    assert torch.allclose(a_out["activations"], b_out["activations"])
    assert final.pooled_head is not None and inner.pooled_head is None
    assert (final._layout.kind, inner._layout.kind) == (("nchw",) * 2 if name == "resnet18" else ("nhwc",) * 2)
    labels = torch.randint(0, 3, a_out["activations"].shape[:2])
    closed = concept_importance(final.concept_head(x, a_out), a_out["activations"], labels, y,
                                n_concepts=3, pooled_head=final.pooled_head)
    rest = concept_importance(inner.concept_head(x, b_out), b_out["activations"], labels, y, n_concepts=3)
    assert isinstance(inner.concept_head(x, b_out), BatchHead)
    assert torch.allclose(closed, rest, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "kwargs", "shape"), [
    ("convnext_atto", {}, (3, 64, 64)),  # a LayerNorm between pooling and linear layer
    ("vit_tiny_patch16_224", {"dynamic_img_size": True, "global_pool": "avg"}, (3, 32, 48)),  # fc_norm
])
def test_a_norm_after_the_pooling_keeps_pooled_rows_with_the_full_heads_numbers(name, kwargs, shape) -> None:
    m = _module(name, shape=shape, **kwargs)
    x, y = torch.randn(2, *shape), torch.tensor([2, 0])
    out, head, batch = _concepts(m, x, y)
    pooled = m.pooled_head
    assert pooled is not None and not pooled.affine and pooled.checked  # checked once on the first batch
    full = run_concepts(head, out["activations"], y, settings=SETTINGS, logits=out["logits"])
    assert torch.equal(batch.channels, full.channels)
    assert torch.allclose(batch.importance, full.importance, atol=1e-4, equal_nan=True)
    for auc in ("deletion_auc", "insertion_auc"):
        assert torch.allclose(batch.fidelity_auc[auc], full.fidelity_auc[auc], atol=1e-4)


def test_a_class_token_head_gets_no_pooled_form() -> None:
    m = _module("vit_tiny_patch16_224", dynamic_img_size=True)
    x, y = torch.randn(1, 3, 32, 48), torch.tensor([1])
    out = m._step((x, y, torch.arange(1)))
    with pytest.warns(UnreachableLayerWarning):
        m.concept_head(x, out)
    assert m.pooled_head is None  # a mean over the patches is not the class token


def test_the_last_blocks_patch_tokens_of_a_class_token_vit_are_warned_about() -> None:
    m = _module("vit_tiny_patch16_224", layer="blocks.11", dynamic_img_size=True)
    x, y = torch.randn(2, 3, 32, 48), torch.tensor([0, 1])
    out = m._step((x, y, torch.arange(2)))
    with pytest.warns(UnreachableLayerWarning, match=r"'blocks.11'.*class token.*layer=blocks.10"):
        head = m.concept_head(x, out)  # the first batch's head checks
    imp = concept_importance(head, out["activations"], torch.randint(0, 3, (2, 192)), y, n_concepts=3)
    assert bool((imp == 0).all())  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreachableLayerWarning)
        m.concept_head(x, out)  # once per run
        # the same model at blocks.10 reaches the class token through the last block's attention
        m.set_concept_layer("blocks.10")
        m.concept_head(x, m._step((x, y, torch.arange(2))))
    # the final features of a class-token ViT: the same warning, naming the second-to-last block
    m.set_concept_layer(None)
    with pytest.warns(UnreachableLayerWarning, match="layer=blocks.10"):
        m.concept_head(x, m._step((x, y, torch.arange(2))))


def test_bad_layers_are_one_clear_message_each() -> None:
    with pytest.raises(UserError, match=r"'blocks\.1O' is not a module of VisionTransformer; its modules "
                                        r"are \(closest first\) \['blocks\.1', .*'blocks\.10'"):
        _module("vit_tiny_patch16_224", layer="blocks.1O", dynamic_img_size=True)
    with pytest.raises(UserError, match=r"layer 'fc_norm' of 'vit_tiny_patch16_224'.*no positions \(a pooled vector"):
        _module("vit_tiny_patch16_224", layer="fc_norm", dynamic_img_size=True, global_pool="avg")
    m = _module("vit_tiny_patch16_224", layer="blocks.3", shape=(3, 224, 224))  # a fixed 14 x 14 grid
    x = torch.randn(1, 3, 224, 224)
    raw, _ = m.layer_output(x)
    with pytest.raises(UserError, match=r"outputs 10 tokens, but the model's grid is 14 x 14 with 1 prefix"):
        m.layout_of(raw[:, :10], x)


class _SkipOver(torch.nn.Module):
    """A skip connection jumps over ``inner``: the rest of the network reads an earlier tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.inner, self.fc = torch.nn.Conv2d(3, 6, 1), torch.nn.Conv2d(6, 6, 3, padding=1), torch.nn.Linear(6, 4)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        return self.fc((torch.relu(self.inner(s)) + s).mean((2, 3)))


@pytest.mark.parametrize("b", [1, 3])
def test_the_rest_of_the_network_runs_upstream_once_per_image_where_that_is_exact(b: int) -> None:
    from clustercam.explain.concepts import rest_of_network
    from clustercam.explain.layouts import Layout

    torch.manual_seed(0)
    net, x, y = _SkipOver().eval(), torch.rand(b, 3, 5, 5), torch.arange(b) % 4
    a = torch.relu(net.inner(torch.relu(net.stem(x)))).detach()
    labels = torch.stack([torch.randperm(6) % 3 for _ in range(b)])  # every concept non-empty
    stems = []
    net.stem.register_forward_hook(lambda _m, _i, o: stems.append(o.shape[0]))
    with torch.no_grad():
        imp = concept_importance(rest_of_network(net, net.inner, Layout("nchw"), x), a, labels, y, n_concepts=3)
        # the b x 4 ablations: checked once on the first 8 rows (shared, then repeated), then
        # one image: the skip's tensor is the same for every ablation, so sharing it is exact
        # and the stem runs on that one image; three images: each row needs its own copy
        assert stems == ([1, 4, 1] if b == 1 else [2, 8, 12])
        p = torch.softmax(net(x).double(), -1)[torch.arange(b), y]
        for concept in range(3):  # by hand: zero the concept's channels of inner's output
            handle = net.inner.register_forward_hook(
                lambda _m, _i, o, c=concept: o * (labels != c).to(o.dtype)[:, :, None, None])
            p_l = torch.softmax(net(x).double(), -1)[torch.arange(b), y]
            handle.remove()
            assert torch.allclose(imp[:, concept], (p - p_l) / p * 100, atol=1e-6)


def test_parallel_configurations_ablate_the_same_layer_without_mixing_their_hooks() -> None:
    m = _module("vit_tiny_patch16_224", layer="blocks.4", dynamic_img_size=True)
    x, y = torch.randn(2, 3, 32, 48), torch.tensor([1, 2])
    out = m._step((x, y, torch.arange(2)))
    threads = torch.get_num_threads()
    try:
        found = {}
        for n in (1, 2):  # serial; CGAP and CPHA side by side in two CPU threads
            torch.set_num_threads(n)
            found[n] = run_concepts(m.concept_head(x, out), out["activations"], y, settings=SETTINGS,
                                    logits=out["logits"])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(found[1].channels, found[2].channels)
    assert torch.allclose(found[1].importance, found[2].importance, atol=1e-6, equal_nan=True)
    assert torch.allclose(found[1].fidelity_auc["deletion_auc"], found[2].fidelity_auc["deletion_auc"], atol=1e-6)
