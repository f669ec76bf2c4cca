"""The figures of a concept run: for each of the first ``max_figures`` images and each
detail configuration, its concepts (CGAP / CPHA) and their sub-concepts, as PNGs at the
contract's :func:`~clustercam.outputs.contract.concept_figure_path`; and the class
concepts' galleries (:func:`class_gallery_figures`).

Both are built as :class:`FigureSet` s (jobs, their rough costs, the logger key of their
paths) so that a run draws them all in ONE pool of forked workers
(:func:`draw_figure_sets`): the workers start once, and no core idles at the end of a
first pool while the other finishes its last gallery."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from lightning import Trainer

from clustercam import outputs
from clustercam.callbacks.loggers import log_images
from clustercam.callbacks.progress import log_progress
from clustercam.explain.concepts.classes.coassociation import group_name
from clustercam.explain.concepts.classes.passes import ClassGallery
from clustercam.explain.concepts.image.batch import ConceptBatch, figure_maps
from clustercam.explain.concepts.image.settings import ConceptSettings
from clustercam.explain.concepts.vocabulary import ConceptConfig
from clustercam.outputs.figure_jobs import FigureJob, figure_job_paths, run_figure_jobs

log = logging.getLogger(__name__)


@dataclass
class FigureSet:
    """Figure jobs of one kind, the rough cost of each (the panels it draws: the pool starts
    the costliest first) and the logger key their paths are logged under."""

    key: str
    jobs: list[FigureJob] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)

    def draw(self) -> list[Path]:
        """Draw this set alone, on every core (:func:`run_figure_jobs`); the paths written."""
        return run_figure_jobs(self.jobs, costs=self.costs)


def draw_figure_sets(trainer: Trainer, sets: Sequence[FigureSet | None]) -> list[list[Path]]:
    """Draw the jobs of every set (None: none) in one pool of workers, costliest first, and
    log each set's paths under its key. Returns each set's paths (None: none), in job order."""
    kept = [fs for fs in sets if fs is not None]
    per_job = figure_job_paths([j for fs in kept for j in fs.jobs], costs=[c for fs in kept for c in fs.costs],
                               progress=log_progress("figures") if trainer.is_global_zero else None)
    drawn, start = [], 0
    for fs in kept:
        paths = [p for job_paths in per_job[start: start + len(fs.jobs)] for p in job_paths]
        start += len(fs.jobs)
        log_images(trainer, fs.key, paths, [p.stem for p in paths])
        drawn.append(paths)
    return drawn


def concept_figures(s: ConceptSettings, dm: Any, data: ConceptBatch, names: Sequence[str],
                    class_names: Sequence[str], output_dir: Path, max_figures: int | None,
                    **style: Any) -> list[Path]:
    """Draw and save the figures of :func:`concept_figure_set` on every core; the paths written."""
    return concept_figure_set(s, dm, data, names, class_names, output_dir, max_figures, **style).draw()


def concept_figure_set(s: ConceptSettings, dm: Any, data: ConceptBatch, names: Sequence[str],
                       class_names: Sequence[str], output_dir: Path, max_figures: int | None,
                       **style: Any) -> FigureSet:
    """The jobs that draw and save the figures, and the fidelity figure where ``data`` has
    its curves; ``data``: the gathered split, whose ``maps`` / ``sub_maps`` may hold only the
    first ``max_figures`` images. One job per image, logged as ``figures/concepts``."""
    from clustercam.explain.plots.fidelity import fidelity_figure
    from clustercam.explain.plots.series_concepts import concept_drawers

    out, figures = Path(output_dir), FigureSet("figures/concepts")
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

        figures.jobs = [partial(image_job, i) for i in range(n)]
        # panels: the image and its k maps, and k rows of the map and its sub-concepts' maps
        per_image = sum(k + 1 + (k * (s.n_sub + 1) if s.n_sub else 0) for _, _, k in s.details)
        figures.costs = [float(per_image)] * n
    else:
        log.warning("no datamodule with display_image(): concept figures skipped")
    if (curves := getattr(data, "fidelity_curves", None)) is not None:
        figures.jobs.append(lambda save: [save(fidelity_figure(s.configs, curves),
                                               out / outputs.CONCEPT_FIDELITY_FIGURE, 120)])
        figures.costs.append(50.0 * len(s.configs))  # 2 axes of curves a configuration, ~25 panels' time each
    return figures


def _cpu(t: Any) -> Any:
    return t.cpu() if hasattr(t, "cpu") else t


def class_gallery_figures(galleries: Sequence[ClassGallery], dm: Any, class_names: Sequence[str],
                          configs: Sequence[ConceptConfig], output_dir: Path, **style: Any) -> list[Path]:
    """Draw and save the galleries of :func:`class_gallery_set` on every core; the paths written."""
    return class_gallery_set(galleries, dm, class_names, configs, output_dir, **style).draw()


def class_gallery_set(galleries: Sequence[ClassGallery], dm: Any, class_names: Sequence[str],
                      configs: Sequence[ConceptConfig], output_dir: Path, **style: Any) -> FigureSet:
    """The jobs that draw and save the class galleries at the contract's
    :func:`~clustercam.outputs.contract.class_gallery_path`, one per group (a group's display
    images are loaded once for all its galleries), logged as ``figures/class_concepts``."""
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

    groups = list(dict.fromkeys(g.group for g in galleries))
    cells = [sum(g.figure["index"].numel() for g in galleries if g.group == group) for group in groups]
    return FigureSet("figures/class_concepts", [partial(group_job, g) for g in groups], [float(c) for c in cells])
