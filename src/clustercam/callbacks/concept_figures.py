"""The figures of a concept run: for each of the first ``max_figures`` images and each
detail configuration, its concepts (CGAP / CPHA) and their sub-concepts, as PNGs at the
contract's :func:`~clustercam.outputs.contract.concept_figure_path`; and the class
concepts' galleries (:func:`class_gallery_figures`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from clustercam import outputs
from clustercam.explain.concepts.classes.coassociation import group_name
from clustercam.explain.concepts.classes.passes import ClassGallery
from clustercam.explain.concepts.image.batch import ConceptBatch, figure_maps
from clustercam.explain.concepts.image.settings import ConceptSettings
from clustercam.explain.concepts.vocabulary import ConceptConfig

log = logging.getLogger(__name__)


def concept_figures(s: ConceptSettings, dm: Any, data: ConceptBatch, names: Sequence[str],
                    class_names: Sequence[str], output_dir: Path, max_figures: int | None,
                    **style: Any) -> list[Path]:
    """Draw and save the figures, and the fidelity figure where ``data`` has its curves;
    ``data``: the gathered split, whose ``maps`` / ``sub_maps`` may hold only the first
    ``max_figures`` images. One job per image, on every core (:func:`outputs.run_figure_jobs`).
    Returns the paths written."""
    from clustercam.explain.plots.fidelity import fidelity_figure
    from clustercam.explain.plots.series_concepts import concept_drawers

    out, jobs = Path(output_dir), []
    if hasattr(dm, "display_image"):
        n = len(names) if max_figures is None else min(len(names), max_figures)
        if data.maps.device.type != "cpu":  # no CUDA in a forked worker
            data = data.replace(maps=data.maps.cpu(), sub_maps=data.sub_maps.cpu())

        def image_job(i: int, save: Any) -> list[Path]:
            paths = []
            image = dm.display_image(int(data.idx[i]))  # C x H x W, or C x L for a series
            draw = concept_drawers(image)
            for f, cfg in enumerate(s.details):
                c, (method, algo, k) = s.configs.index(cfg), cfg
                maps, sub_maps = figure_maps(data, i, f, k, tuple(image.shape[-draw.map_dims:]))
                ch, imp = data.channels[i, c, :k].tolist(), data.importance[i, c, :k].tolist()
                title = (f"{names[i]} ({class_names[i]}, p={float(data.p_target[i]):.3g}) - "
                         f"{method.upper()} {algo} n={k}")
                fig = draw.concept(image, maps, ch, imp, title=title, **style)
                paths.append(save(fig, out / outputs.concept_figure_path(names[i], cfg), 100))
                if s.n_sub:
                    fig = draw.sub_concept(image, maps, ch, imp, sub_maps, data.sub_channels[i, f, :k],
                                           data.sub_importance[i, f, :k], title=f"{title}: sub-concepts", **style)
                    if fig is not None:
                        paths.append(save(fig, out / outputs.concept_figure_path(names[i], cfg, sub=True), 100))
            return paths

        jobs = [partial(image_job, i) for i in range(n)]
    else:
        log.warning("no datamodule with display_image(): concept figures skipped")
    if (curves := getattr(data, "fidelity_curves", None)) is not None:
        jobs.append(lambda save: [save(fidelity_figure(s.configs, curves), out / outputs.CONCEPT_FIDELITY_FIGURE,
                                       120)])
    return outputs.run_figure_jobs(jobs)


def _cpu(t: Any) -> Any:
    return t.cpu() if hasattr(t, "cpu") else t


def class_gallery_figures(galleries: Sequence[ClassGallery], dm: Any, class_names: Sequence[str],
                          configs: Sequence[ConceptConfig], output_dir: Path, **style: Any) -> list[Path]:
    """Draw and save the class galleries at the contract's
    :func:`~clustercam.outputs.contract.class_gallery_path`, one job per group, on every
    core (:func:`outputs.run_figure_jobs`): a group's display images are loaded once for
    all its galleries. Returns the paths written."""
    from clustercam.explain.plots.class_concepts import gallery_indices
    from clustercam.explain.plots.series_concepts import concept_drawers

    out = Path(output_dir)
    galleries = [replace(g, figure={k: _cpu(v) for k, v in g.figure.items()}) for g in galleries]

    def group_job(group: int, save: Any) -> list[Path]:
        mine = [g for g in galleries if g.group == group]
        shown = sorted({i for g in mine for i in gallery_indices(g.figure["index"])})
        images = {i: dm.display_image(i) for i in shown}
        draw = concept_drawers(next(iter(images.values()), None))  # series or images, as the group's samples
        return [save(draw.class_gallery(images=images, **style, **gal.figure),
                     out / outputs.class_gallery_path(group_name(group, class_names), gal.config, gal.source,
                                                      configs), 100)
                for gal in mine]

    return outputs.run_figure_jobs([partial(group_job, g) for g in dict.fromkeys(g.group for g in galleries)])
