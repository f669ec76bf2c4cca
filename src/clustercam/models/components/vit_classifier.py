"""A small vision transformer with a convolutional stem, registered as a timm model.

``clustercam_vit_convstem`` is timm's ``VisionTransformer`` whose patch embedding is a stem
of three stride-2 3 x 3 convolutions (timm's ``ConvStem`` in a ``HybridEmbed``): a 64 px
image becomes an 8 x 8 grid of 128-channel tokens, then 6 transformer blocks, no class
token, the mean of the tokens (after the final LayerNorm, no norm between pooling and
linear layer) and a linear classifier. On the parts data a plain patch-embedding ViT of the
same size stays at chance for epochs while this one learns (the stem gives it local
features and a translation prior); and since the head is pooling + one linear layer, concept
ablations of its final tokens keep the closed form. Any timm option overrides the defaults
(``depth``, ``embed_dim`` with ``stem_channels``, ``num_heads``, ``img_size``...). Registered
when :mod:`clustercam.models.timm_weights` builds a model, so ``model.name=clustercam_vit_convstem``
works as any timm name (random initial weights only).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.layers import HybridEmbed
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_hybrid import ConvStem

from clustercam.exceptions import UserError


@register_model
def clustercam_vit_convstem(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """The conv-stem ViT (see the module); ``stem_channels``: the three convolutions' widths
    (the last one is the token width, ``embed_dim``)."""
    if pretrained:
        raise UserError("clustercam_vit_convstem has no pretrained weights: train it (model.pretrained=false)")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm's factory options
        kwargs.pop(key, None)
    in_chans = int(kwargs.pop("in_chans", 3))
    embed_dim = int(kwargs.pop("embed_dim", 128))
    stem = tuple(int(c) for c in kwargs.pop("stem_channels", (embed_dim // 4, embed_dim // 2, embed_dim)))
    if len(stem) != 3 or stem[-1] != embed_dim:
        raise UserError(f"stem_channels must be three widths ending with embed_dim={embed_dim}, got {list(stem)}")
    backbone = ConvStem(in_chans=in_chans, depth=3, channels=stem, kernel_size=3, stride=(2, 2, 2))
    args = {"img_size": 64, "patch_size": 1, "depth": 6, "num_heads": 4, "mlp_ratio": 2.0,
            "class_token": False, "global_pool": "avg", "fc_norm": False, **kwargs}
    return VisionTransformer(in_chans=in_chans, embed_dim=embed_dim,
                             embed_layer=partial(HybridEmbed, backbone=backbone, proj=False), **args)
