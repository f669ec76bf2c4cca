"""Concepts of other backbones and of intermediate layers: cost per image against the backbone.

1. The default concepts run (CGAP + CPHA, k-means, 5 concepts, sub-concepts, importance,
   metrics, fidelity; no figures) per image ÷ the backbone alone, as
   ``bench_concept_run`` measures it for ``nf_resnet50``, for a ViT (timm
   ``vit_tiny_patch16_224``, tokens read as the 14 × 14 grid: with its class token, whose
   head reads only that token, so every ablation is the head on the tokens written back;
   and mean-pooled, ``global_pool=avg``, pooled rows through ``fc_norm`` + the linear layer)
   and a ConvNeXt (``convnext_atto``: pooled rows through its LayerNorm + linear layer),
   random weights, 224 px crops of the shared photos.
2. The price of choosing a layer: the same run on the parts data (64 px) through
   ``resnet18`` (``output_stride=8``) and the conv-stem ViT of ``experiment=concepts_parts_vit``,
   at the final features (the closed-form pooled head: ablations are rows of the linear
   layer) and at an earlier layer (ablations run the rest of the network, a forward hook on
   ``net(x)``, the network before the layer once per image).

    python -m benchmarks.bench_concept_layers [--quick]
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from benchmarks.common import (
    CpuMeter,
    Headline,
    Section,
    Table,
    fmt_s,
    fmt_x,
    load_average,
    main_single,
    median,
    parser,
    spread,
    time_cases,
)

N_PHOTOS, N_PHOTOS_QUICK = 32, 8
N_PARTS, N_PARTS_QUICK = 32, 8
BATCH = 8
BACKBONES = [("vit_tiny_patch16_224", None, {}), ("vit_tiny_patch16_224", None, {"global_pool": "avg"}),
             ("convnext_atto", None, {})]
LAYERS = [("resnet18", {"output_stride": 8}, "layer3"),
          ("clustercam_vit_convstem", {}, "blocks.3")]


def _module(name: str, kwargs: dict[str, Any], layer: str | None, shape=None, num_classes=None) -> Any:
    from clustercam.models.classifier_module import ClassifierModule

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ClassifierModule(name, pretrained=False, model_kwargs=kwargs, layer=layer, input_shape=shape,
                                num_classes=num_classes).eval()


def _photos(name: str, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from benchmarks.bench_concept_run import photo_folder
    from clustercam.data.imagenet_subset import ImageNetSubsetDataModule

    dm = ImageNetSubsetDataModule(photo_folder(n), model_name=name, batch_size=BATCH)
    return [(x, y) for x, y, _ in dm.test_dataloader()]


def _parts(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from clustercam.data.parts import make_parts

    x, y, _, _ = make_parts(n, seed=0)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    return [(x[i: i + BATCH], y[i: i + BATCH]) for i in range(0, n, BATCH)]


def side_by_side(model: Any, batches, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Per repeat: the backbone's seconds (the step: layer output + logits) and the concepts'
    (``concept_head`` + ``run_concepts``, default settings), clocked per batch."""
    from clustercam.explain.concepts import ConceptSettings, run_concepts

    settings, parts = ConceptSettings(), []

    def one() -> None:
        t_bb = t_c = 0.0
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x, y in batches:
                t0 = time.perf_counter()
                out = model._step((x, y, torch.arange(len(x))))
                t1 = time.perf_counter()
                head = model.concept_head(x, out)
                run_concepts(head, out["activations"], y, settings=settings, logits=out["logits"],
                             pooled_head=model.pooled_head)
                t_bb, t_c = t_bb + t1 - t0, t_c + time.perf_counter() - t1
        parts.append((t_bb, t_c))

    time_cases({"run": one}, repeats=repeats, warmup=warmup)
    timed = parts[-repeats:]
    return [b for b, _ in timed], [c for _, c in timed]


def run(args) -> Section:
    args.repeats = args.repeats or (2 if args.quick else 3)
    t_start, load0, meter = time.perf_counter(), load_average(), CpuMeter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    headlines: list[Headline] = []
    rows = []
    n = N_PHOTOS_QUICK if args.quick else N_PHOTOS
    for name, _, kwargs in BACKBONES:
        model = _module(name, kwargs, None)
        label = name + "".join(f" {k}={v}" for k, v in kwargs.items())
        bb, c = side_by_side(model, _photos(name, n), args.repeats, args.warmup)
        ratios = [(b + x) / b for b, x in zip(bb, c)]
        pooled = model.pooled_head
        form = "no pooled form" if pooled is None else "pooled rows" + (" (affine)" if pooled.affine else "")
        grid = "×".join(str(v) for v in model.features(_photos(name, n)[0][0][:1]).shape[1:])
        rows.append([f"`{label}` final features ({model.describe()['layout']}, {grid}; {form})",
                     fmt_s(median(bb) / n), fmt_s(median(c) / n), f"{min(ratios):.2f}×–{max(ratios):.2f}×",
                     fmt_x(median(ratios))])
        headlines.append(Headline(f"Concepts run ÷ backbone, `{label}` 224 px, {n} photos, cpu",
                                  fmt_x(median(ratios)), "≤ 1.3× (as nf_resnet50)", median(ratios) <= 1.3))
    photos = Table(f"The default concepts run per image on {n} photos (batches of {BATCH}), random weights",
                   ["backbone", "backbone per image", "concepts per image", "ratio min–max", "**ratio**"], rows)
    rows = []
    n = N_PARTS_QUICK if args.quick else N_PARTS
    batches = _parts(n)
    for name, kwargs, layer in LAYERS:
        per = {}
        for where in (None, layer):
            model = _module(name, kwargs, where, shape=(3, 64, 64), num_classes=6)
            bb, c = side_by_side(model, batches, args.repeats, args.warmup)
            per[where] = median(c) / n
            rows.append([f"`{name}` {'final features (closed form)' if where is None else f'`{where}` (rest of the network)'}",
                         fmt_s(median(bb) / n), fmt_s(per[where]), spread([x / n for x in c])])
        rows.append([f"… `{layer}` ÷ final features", "", fmt_x(per[layer] / per[None]), ""])
        headlines.append(Headline(f"Concepts at `{layer}` ÷ at the final features, `{name}` on parts, cpu",
                                  fmt_x(per[layer] / per[None]), "– (the price of a layer)", None))
    layers = Table(f"The price of a layer: the default concepts run per image, {n} parts images (64 px)",
                   ["model and layer", "backbone per image", "concepts per image", "min–max"], rows,
                   ["At the final features every ablation is a row of the linear layer; at an earlier "
                    "layer each of the ~450 ablations per image (importance, sub-concepts, fidelity "
                    "curves of both methods) is a forward pass of the rest of the network."])
    intro = [f"Median of {args.repeats} repeats after {args.warmup} warm-up run(s); backbone and "
             "concepts clocked per batch within each repeat, so both share the same load."]
    return Section("Concepts of other backbones and layers", intro, [photos, layers], headlines, load0,
                   load_average(), time.perf_counter() - t_start, "cpu", args.quick, meter.others())


if __name__ == "__main__":
    main_single("clustercam benchmark: concepts of other backbones and layers", run,
                parser(__doc__.splitlines()[0]).parse_args())
