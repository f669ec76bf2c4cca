"""The per-image figures of a concept run: for each of the first ``max_figures`` images and
each detail configuration, its concepts (CGAP / CPHA) and their sub-concepts, as PNGs at the
contract's :func:`~clustercam.outputs.contract.concept_figure_path`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clustercam import outputs
from clustercam.explain.concepts.image.batch import ConceptBatch, figure_maps
from clustercam.explain.concepts.image.settings import ConceptSettings

log = logging.getLogger(__name__)


def concept_figures(s: ConceptSettings, dm: Any, data: ConceptBatch, names: Sequence[str],
                    class_names: Sequence[str], output_dir: Path, max_figures: int | None,
                    **style: Any) -> list[Path]:
    """Draw and save the figures; ``data``: the gathered split, whose ``maps`` / ``sub_maps``
    may hold only the first ``max_figures`` images. Returns the paths written."""
    from clustercam.explain.plots.concepts import concept_figure, sub_concept_figure

    if not hasattr(dm, "display_image"):
        log.warning("no datamodule with display_image(): concept figures skipped")
        return []
    out, paths = Path(output_dir), []
    with outputs.FigureWriter() as writer:  # PNGs compressed while the next figure is drawn
        for i in range(len(names) if max_figures is None else min(len(names), max_figures)):
            image = dm.display_image(int(data.idx[i]))
            for f, cfg in enumerate(s.details):
                c, (method, algo, n) = s.configs.index(cfg), cfg
                maps, sub_maps = figure_maps(data, i, f, n, tuple(image.shape[-2:]))
                ch, imp = data.channels[i, c, :n].tolist(), data.importance[i, c, :n].tolist()
                title = (f"{names[i]} ({class_names[i]}, p={float(data.p_target[i]):.3g}) - "
                         f"{method.upper()} {algo} n={n}")
                fig = concept_figure(image, maps, ch, imp, title=title, **style)
                paths.append(writer.save(fig, out / outputs.concept_figure_path(names[i], cfg), dpi=100))
                if s.n_sub:
                    fig = sub_concept_figure(image, maps, ch, imp, sub_maps, data.sub_channels[i, f, :n],
                                             data.sub_importance[i, f, :n],
                                             title=f"{title}: sub-concepts", **style)
                    if fig is not None:
                        paths.append(writer.save(fig, out / outputs.concept_figure_path(names[i], cfg, sub=True),
                                                 dpi=100))
    return paths
