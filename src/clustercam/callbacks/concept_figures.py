"""The per-image figures of a concept run: for each of the first ``max_figures`` images and
each detail configuration, its concepts (CGAP / CPHA) and their sub-concepts, as PNGs under
``figures/concepts/``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from clustercam import outputs
from clustercam.explain.concepts.image.batch import ConceptSettings, figure_maps

log = logging.getLogger(__name__)


def concept_figures(s: ConceptSettings, dm: Any, data: dict[str, Tensor], names: Sequence[str],
                    class_names: Sequence[str], output_dir: Path, max_figures: int | None,
                    **style: Any) -> list[Path]:
    """Draw and save the figures; ``data``: the gathered split, whose ``maps`` / ``sub_maps``
    may hold only the first ``max_figures`` images. Returns the paths written."""
    from clustercam.explain.plots.concepts import concept_figure, sub_concept_figure

    if not hasattr(dm, "display_image"):
        log.warning("no datamodule with display_image(): concept figures skipped")
        return []
    fig_dir, paths = Path(output_dir) / outputs.FIGURES / "concepts", []
    with outputs.FigureWriter() as writer:  # PNGs compressed while the next figure is drawn
        for i in range(len(names) if max_figures is None else min(len(names), max_figures)):
            image = dm.display_image(int(data["idx"][i]))
            for f, (method, algo, n) in enumerate(s.details):
                c = s.configs.index((method, algo, n))
                maps, sub_maps = figure_maps(data, i, f, n, tuple(image.shape[-2:]))
                ch, imp = data["channels"][i, c, :n].tolist(), data["importance"][i, c, :n].tolist()
                title = (f"{names[i]} ({class_names[i]}, p={float(data['p_target'][i]):.3g}) - "
                         f"{method.upper()} {algo} n={n}")
                stem = f"{names[i]}_{method}_{algo}_n{n}"
                fig = concept_figure(image, maps, ch, imp, title=title, **style)
                paths.append(writer.save(fig, fig_dir / f"{stem}.png", dpi=100))
                if s.n_sub:
                    fig = sub_concept_figure(image, maps, ch, imp, sub_maps, data["sub_channels"][i, f, :n],
                                             data["sub_importance"][i, f, :n],
                                             title=f"{title}: sub-concepts", **style)
                    if fig is not None:
                        paths.append(writer.save(fig, fig_dir / f"{stem}_sub.png", dpi=100))
    return paths
