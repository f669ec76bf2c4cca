"""The figures of a concept run: for each of the first ``max_figures`` images and each
detail configuration, its concepts (CGAP / CPHA) and their sub-concepts, as PNGs at the
contract's :func:`~clustercam.outputs.contract.concept_figure_path`; and the class
concepts' galleries (:func:`class_gallery_figures`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
    """Draw and save the figures; ``data``: the gathered split, whose ``maps`` / ``sub_maps``
    may hold only the first ``max_figures`` images. Returns the paths written."""
    from clustercam.explain.plots.series_concepts import concept_drawers

    if not hasattr(dm, "display_image"):
        log.warning("no datamodule with display_image(): concept figures skipped")
        return []
    out, paths = Path(output_dir), []
    with outputs.FigureWriter() as writer:  # PNGs compressed while the next figure is drawn
        for i in range(len(names) if max_figures is None else min(len(names), max_figures)):
            image = dm.display_image(int(data.idx[i]))  # C x H x W, or C x L for a series
            draw = concept_drawers(image)
            for f, cfg in enumerate(s.details):
                c, (method, algo, n) = s.configs.index(cfg), cfg
                maps, sub_maps = figure_maps(data, i, f, n, tuple(image.shape[-draw.map_dims:]))
                ch, imp = data.channels[i, c, :n].tolist(), data.importance[i, c, :n].tolist()
                title = (f"{names[i]} ({class_names[i]}, p={float(data.p_target[i]):.3g}) - "
                         f"{method.upper()} {algo} n={n}")
                fig = draw.concept(image, maps, ch, imp, title=title, **style)
                paths.append(writer.save(fig, out / outputs.concept_figure_path(names[i], cfg), dpi=100))
                if s.n_sub:
                    fig = draw.sub_concept(image, maps, ch, imp, sub_maps, data.sub_channels[i, f, :n],
                                             data.sub_importance[i, f, :n],
                                             title=f"{title}: sub-concepts", **style)
                    if fig is not None:
                        paths.append(writer.save(fig, out / outputs.concept_figure_path(names[i], cfg, sub=True),
                                                 dpi=100))
    return paths


def class_gallery_figures(galleries: Sequence[ClassGallery], dm: Any, class_names: Sequence[str],
                          configs: Sequence[ConceptConfig], output_dir: Path, **style: Any) -> list[Path]:
    """Draw and save the class galleries at the contract's
    :func:`~clustercam.outputs.contract.class_gallery_path`, group by group: a group's
    display images are loaded once for all its galleries. Returns the paths written."""
    from clustercam.explain.plots.class_concepts import gallery_indices
    from clustercam.explain.plots.series_concepts import concept_drawers

    out, paths = Path(output_dir), []
    groups = list(dict.fromkeys(g.group for g in galleries))
    with outputs.FigureWriter() as writer:
        for group in groups:
            mine = [g for g in galleries if g.group == group]
            shown = sorted({i for g in mine for i in gallery_indices(g.figure["index"])})
            images = {i: dm.display_image(i) for i in shown}
            draw = concept_drawers(next(iter(images.values()), None))  # series or images, as the group's samples
            for gal in mine:
                path = out / outputs.class_gallery_path(group_name(group, class_names), gal.config, gal.source,
                                                        configs)
                paths.append(writer.save(draw.class_gallery(images=images, **style, **gal.figure), path, dpi=100))
    return paths
