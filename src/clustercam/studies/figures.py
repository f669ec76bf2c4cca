"""The papers' figures, redrawn from finished run folders, read through the outputs contract
(the heat maps of the Grad-CeAM runs; the concept metrics and concept figures of a concept run).

Each function returns ``(figure, caption)``; the caption says which run and seed the
figure comes from and reads the paper's caption in one line.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from clustercam import outputs
from clustercam.exceptions import UserError
from clustercam.explain.concepts.vocabulary import QUALITY_METRICS, ConceptConfig
from clustercam.explain.maps import minmax_normalise, smooth_series
from clustercam.explain.plots.papers import map_grid, metric_boxplots, tile_figures
from clustercam.studies.records import RunRecord


def members(run: Path) -> dict[str, np.ndarray]:
    """The figure members a Grad-CeAM run saved (:data:`~clustercam.outputs.contract.HEATMAP_MEMBERS`)."""
    path = Path(run) / outputs.HEATMAPS
    if not path.is_file():
        raise UserError(f"{path} is missing: the run was made without figures "
                        "(callbacks.cluster_explain.figures=true)")
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    if "inputs" not in data:
        raise UserError(f"{path} predates clustercam 0.2 (no inputs): rerun the experiment")
    return data


def _of_cluster(m: dict[str, np.ndarray], c: int, n: int) -> list[int]:
    """Rows of the first ``n`` members of cluster c (nearest the centroid first)."""
    return [int(i) for i in np.flatnonzero(m["cluster"] == c)[:n]]


def _who(r: RunRecord) -> str:
    return f"{r.run} (seed {r.seed}, NMI {r.nmi:.2f})"


def cluster_members(r: RunRecord, n_clusters: int = 2, n: int = 5, paper: str = "Fig. 7") -> tuple[Figure, str]:
    """Fig. 7 / 8: the members of two clusters, nearest their centroid first, under their
    cluster's map; the two clusters whose shown members agree most on the label."""
    m = members(r.run)
    k = len(m["sizes"])

    def purity(c: int) -> tuple[float, int]:
        lab = m["label"][_of_cluster(m, c, n)]
        return (float(np.bincount(lab).max() / len(lab)) if len(lab) else -1.0, int(m["sizes"][c]))

    chosen = sorted(range(k), key=purity, reverse=True)[:n_clusters]
    rows = [_of_cluster(m, c, n) for c in chosen]
    fig = map_grid([[m["inputs"][i] for i in row] for row in rows],
                [[m["heatmaps"][i, c] for i in row] for row, c in zip(rows, chosen)],
                f"{r.dataset}: members of two clusters under their Grad-CeAM map ({paper})",
                row_titles=[f"cluster {c} (size {int(m['sizes'][c])})" for c in chosen],
                panel_titles=[[f"#{j + 1}, label {int(m['label'][i])}" for j, i in enumerate(row)] for row in rows])
    return fig, (f"{paper}: two clusters of {r.dataset} (the two whose shown members agree most on the "
                 f"label) with their nearest members under the cluster's map; from {_who(r)}.")


def smoothed_members(r: RunRecord, n: int = 2) -> tuple[Figure, str]:
    """Fig. 9: two samples per Trace cluster, maps smoothed (moving average of radius L/20)."""
    m = members(r.run)
    k = len(m["sizes"])
    rows = [_of_cluster(m, c, n) for c in range(k)]
    heat = minmax_normalise(smooth_series(torch.from_numpy(m["heatmaps"]).double()), 1).numpy()
    fig = map_grid([[m["inputs"][i] for i in row] for row in rows],
                [[heat[i, c] for i in row] for c, row in enumerate(rows)],
                f"{r.dataset}: two samples per cluster, smoothed Grad-CeAM maps (Fig. 9)",
                row_titles=[f"cluster {c} ({int(m['sizes'][c])})" for c in range(k)],
                panel_titles=[[f"cluster {c} #{j + 1}, label {int(m['label'][i])}" for j, i in enumerate(row)]
                              for c, row in enumerate(rows)])
    return fig, (f"Fig. 9: two samples of every {r.dataset} cluster coloured by their cluster's map, "
                 f"smoothed over ceil(L/20) steps; from {_who(r)}.")


def high_low_models(high: RunRecord, low: RunRecord) -> tuple[Figure, str]:
    """Fig. 10: the high and the low model side by side: each cluster's nearest member
    under its map, one column per model."""
    mh, ml = members(high.run), members(low.run)
    k = max(len(mh["sizes"]), len(ml["sizes"]))
    inputs, maps, titles = [], [], []
    for c in range(k):
        row_x, row_m, row_t = [], [], []
        for name, r, m in (("high", high, mh), ("low", low, ml)):
            rows = _of_cluster(m, c, 1) if c < len(m["sizes"]) else []
            row_x.append(m["inputs"][rows[0]] if rows else None)
            row_m.append(m["heatmaps"][rows[0], c] if rows else None)
            row_t.append(f"{name} (NMI {r.nmi:.2f}): cluster {c}"
                         + (f", label {int(m['label'][rows[0]])}" if rows else ""))
        inputs.append(row_x)
        maps.append(row_m)
        titles.append(row_t)
    fig = map_grid(inputs, maps, f"{high.dataset}: the high and the low model (Fig. 10)", panel_titles=titles)
    return fig, (f"Fig. 10: the best-NMI model {_who(high)} beside the worst {_who(low)} among the "
                 f"sweep's seeds; each cluster's member nearest its centroid under that cluster's map.")


def sample_cluster_grid(r: RunRecord) -> tuple[Figure, str]:
    """Fig. 11: one sample per cluster (rows) under every centroid's map (columns), each
    panel titled with the unnormalised map's maximum: normalised colours hide which map is
    weaker overall."""
    m = members(r.run)
    k = len(m["sizes"])
    rows = [(_of_cluster(m, c, 1) or [None])[0] for c in range(k)]
    inputs = [[m["inputs"][i] if i is not None else None for _ in range(k)] for i in rows]
    maps = [[m["heatmaps"][i, c] if i is not None else None for c in range(k)] for i in rows]
    titles = [[(f"sample of cluster {s} under map {c}\nraw max {m['raw'][i, c].max():.3g}" if i is not None else "")
               for c in range(k)] for s, i in enumerate(rows)]
    fig = map_grid(inputs, maps, f"{r.dataset}: one sample per cluster x every cluster's map (Fig. 11)",
                panel_titles=titles)
    return fig, (f"Fig. 11: the member nearest each {r.dataset} centroid (rows) under the map of every "
                 f"centroid (columns), with each raw map's maximum; from {_who(r)}.")


def boxplot_data(metrics: pd.DataFrame) -> dict[tuple[str, str], dict[str, dict[str, list[float]]]]:
    """Concepts Fig. 2's data: ``[(method, metric)][class][algorithm]`` = the per-image values
    of a run's concept metrics (n_concepts: the most common value, 5 by default)."""
    if metrics.empty:
        raise UserError(f"{outputs.CONCEPT_METRICS} has no rows")
    n = int(metrics["n_concepts"].mode().iloc[0])
    df = metrics[metrics["n_concepts"] == n]
    label = "class_name" if "class_name" in df.columns else "class"
    out: dict[tuple[str, str], dict[str, dict[str, list[float]]]] = {}
    for (method, cls, algo), g in df.groupby(["method", label, "algorithm"], sort=True):
        for metric in QUALITY_METRICS:
            out.setdefault((method, metric), defaultdict(dict))[str(cls)][algo] = g[metric].astype(float).tolist()
    return {k: dict(v) for k, v in out.items()}


def concept_boxplots(run: Path, source: str) -> tuple[Figure, str]:
    """Concepts Fig. 2: silhouette, CHI and DBI per class label, one box per algorithm,
    a CGAP row and a CPHA row."""
    df = pd.read_csv(Path(run) / outputs.CONCEPT_METRICS)
    data = boxplot_data(df)
    methods = sorted({m for m, _ in data})
    fig = metric_boxplots(data, methods, QUALITY_METRICS,
                          title=f"Concept clustering scores per class and algorithm ({source})")
    return fig, (f"Concepts Fig. 2: the three clustering scores of every image, per class label, one box "
                 f"per algorithm, CGAP and CPHA rows; {len(df)} rows of {run}/{outputs.CONCEPT_METRICS} ({source}).")


def _concept_figures(run: Path, method: str, sub: bool = False) -> list[tuple[Path, str, ConceptConfig]]:
    """(path, image, configuration) of the concept figures of ``method`` a run drew, by path."""
    df = pd.read_csv(Path(run) / outputs.CONCEPT_METRICS)
    found = set()
    for r in df[df["method"] == method].itertuples(index=False):
        cfg = ConceptConfig(r.method, r.algorithm, int(r.n_concepts))
        path = Path(run) / outputs.concept_figure_path(str(r.image), cfg, sub=sub)
        if path.is_file():
            found.add((path, str(r.image), cfg))
    return sorted(found)


def concept_subconcepts(run: Path, source: str, n_classes: int = 4) -> tuple[Figure, str]:
    """Concepts Fig. 5: the sub-concept decompositions of several classes together."""
    subs = _concept_figures(run, "cgap", sub=True)
    if not subs:
        raise UserError(f"no CGAP sub-concept figure under {run}/{outputs.CONCEPT_FIGURES}")
    df = pd.read_csv(Path(run) / outputs.CONCEPT_METRICS)
    first = set(df.drop_duplicates("class")["image"].astype(str))  # each class's first image
    chosen = [p for p, image, _ in subs if image in first][:n_classes] or [p for p, _, _ in subs[:n_classes]]
    fig = tile_figures([[p] for p in chosen], f"CGAP sub-concepts of {len(chosen)} classes ({source})",
                       first_rows=True)
    return fig, (f"Concepts Fig. 5: each row one image of a different class, its most important split "
                 f"CGAP concept and that concept's sub-concepts; from {run} ({source}).")


def concept_cgap_vs_cpha(run: Path, source: str) -> tuple[Figure, str]:
    """Concepts Fig. 6: CGAP (top) and CPHA (bottom) concepts of the same image."""
    for p, image, cfg in _concept_figures(run, "cgap"):
        twin = Path(run) / outputs.concept_figure_path(image, cfg._replace(method="cpha"))
        if twin.is_file():
            fig = tile_figures([[p], [twin]], f"CGAP (top) and CPHA (bottom) of one image ({source})")
            return fig, (f"Concepts Fig. 6: the concepts of {image} by activation "
                         f"pattern (CGAP, top) and by position of the maximum (CPHA, bottom); from {run} "
                         f"({source}).")
    raise UserError(f"no image with both a CGAP and a CPHA figure under {run}/{outputs.CONCEPT_FIGURES}")
