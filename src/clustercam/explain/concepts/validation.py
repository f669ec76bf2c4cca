"""Do the concepts mean anything? Fidelity and ground-truth results as rows, numbers and text.

From the gathered output of :func:`~clustercam.explain.concepts.run_concepts` (with
``fidelity_auc`` / ``fidelity_curves``, and ``truth`` / ``paint_out`` where the data has
part masks): the rows of ``concept_fidelity.csv`` (per image, configuration and order)
and ``concept_truth.csv`` (per configuration and partition, means over images), the
run-level numbers for ``metrics.json`` / loggers, and the markdown appended to
``concept_summary.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from clustercam.explain.concepts.image.fidelity import ORDERS
from clustercam.explain.concepts.image.truth import PAINT_COLUMNS, TRUTH_SCORES

FIDELITY_COLUMNS = ("image", "class", "method", "algorithm", "n_concepts", "order",
                    "deletion_auc", "insertion_auc")
TRUTH_COLUMNS = ("method", "algorithm", "n_concepts", "partition", *TRUTH_SCORES, "n_images")
PARTITIONS = ("concepts", "random")
FIDELITY_FILE = "concept_fidelity.csv"
TRUTH_FILE = "concept_truth.csv"
Config = tuple[str, str, int]


def _key(config: Config) -> str:
    method, algo, n = config
    return f"{method}_{algo}_n{n}"


def _mean_std(v: Tensor) -> tuple[float, float, int]:
    ok = v[torch.isfinite(v)].double()
    if not len(ok):
        return math.nan, math.nan, 0
    return float(ok.mean()), float(ok.std()) if len(ok) > 1 else math.nan, len(ok)


def fidelity_rows(configs: Sequence[Config], data: Mapping[str, Tensor], names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per image x configuration x order (``FIDELITY_COLUMNS``)."""
    auc = data["fidelity_auc"]  # B x K x orders x (deletion, insertion)
    rows = []
    for i, name in enumerate(names):
        for c, (method, algo, n) in enumerate(configs):
            for o, order in enumerate(ORDERS):
                rows.append({"image": name, "class": int(data["y"][i]), "method": method,
                             "algorithm": algo, "n_concepts": n, "order": order,
                             "deletion_auc": float(auc[i, c, o, 0]),
                             "insertion_auc": float(auc[i, c, o, 1])})
    return rows


def truth_rows(configs: Sequence[Config], data: Mapping[str, Tensor]) -> list[dict[str, Any]]:
    """Per configuration x partition (found concepts / random channel partitions), each
    score's mean over images (NaN images left out); ``n_images`` the images scored."""
    truth = data["truth"]  # B x K x partitions x scores
    rows = []
    for c, (method, algo, n) in enumerate(configs):
        for p, part in enumerate(PARTITIONS):
            vals = {s: _mean_std(truth[:, c, p, j])[0] for j, s in enumerate(TRUTH_SCORES)}
            rows.append({"method": method, "algorithm": algo, "n_concepts": n, "partition": part,
                         **vals, "n_images": int(torch.isfinite(truth[:, c, p, 1]).sum())})
    return rows


def validation_tables(configs: Sequence[Config], data: Mapping[str, Tensor],
                      names: Sequence[str]) -> dict[str, tuple[list[dict[str, Any]], tuple[str, ...]]]:
    """File name -> (rows, columns) of the checks the data holds: ``concept_fidelity.csv``
    (when fidelity ran) and ``concept_truth.csv`` (when the data has part masks)."""
    tables = {}
    if "fidelity_auc" in data:
        tables[FIDELITY_FILE] = (fidelity_rows(configs, data, names), FIDELITY_COLUMNS)
    if "truth" in data:
        tables[TRUTH_FILE] = (truth_rows(configs, data), TRUTH_COLUMNS)
    return tables


def validation_results(configs: Sequence[Config], data: Mapping[str, Tensor]) -> dict[str, float]:
    """Run-level means: ``fidelity/<config>/<order>/{deletion,insertion}_auc``,
    ``truth/<config>/<partition>/<score>`` and ``paint_out/{p_target,drop_*}``."""
    res: dict[str, float] = {}
    if "fidelity_auc" in data:
        auc = data["fidelity_auc"]
        for c, cfg in enumerate(configs):
            for o, order in enumerate(ORDERS):
                for k, kind in enumerate(("deletion_auc", "insertion_auc")):
                    res[f"fidelity/{_key(cfg)}/{order}/{kind}"] = _mean_std(auc[:, c, o, k])[0]
                    res[f"fidelity/{_key(cfg)}/{order}/{kind}_median"] = _median(auc[:, c, o, k])
    if "truth" in data:
        for row in truth_rows(configs, data):
            key = _key((row["method"], row["algorithm"], row["n_concepts"]))
            for s in TRUTH_SCORES:
                res[f"truth/{key}/{row['partition']}/{s}"] = row[s]
    if "paint_out" in data:
        for j, k in enumerate(PAINT_COLUMNS):
            res[f"paint_out/{k}"] = _mean_std(data["paint_out"][:, j])[0]
    return res


def _median(v: Tensor) -> float:
    """Median over the images (NaN ones left out). The curves are p_t ratios, unbounded above
    for an image the model is unsure of (p_t(h(A)) small), so a few such images can move the
    mean far past 1 (MNIST: 1.5 % of the images); the median is not moved by them."""
    ok = v[~torch.isnan(v)]
    return float(ok.double().quantile(0.5)) if len(ok) else math.nan


def _f(v: float, digits: int = 3) -> str:
    return "nan" if not math.isfinite(v) else f"{v:.{digits}f}"


def validation_markdown(configs: Sequence[Config], data: Mapping[str, Tensor]) -> str:
    """The fidelity, ground-truth and painting-out tables for ``concept_summary.md``."""
    out: list[str] = []
    if "fidelity_auc" in data:
        auc = data["fidelity_auc"]
        out += ["## Concept fidelity", "",
                "Deletion / insertion of whole concepts in importance order vs random orders and "
                "random channel groups of the same sizes (mean ± std over images, median in brackets: "
                "the curves are p_t ratios, unbounded for images the model is unsure of; deletion: "
                "lower is more faithful, insertion: higher).", "",
                "| method | algorithm | n | " + " | ".join(f"deletion {o}" for o in ORDERS) + " | "
                + " | ".join(f"insertion {o}" for o in ORDERS) + " |",
                "|" + "---|" * (3 + 2 * len(ORDERS))]
        for c, (method, algo, n) in enumerate(configs):
            cells = []
            for k in (0, 1):
                for o in range(len(ORDERS)):
                    m, s, _ = _mean_std(auc[:, c, o, k])
                    cells.append(f"{_f(m)} ± {_f(s)} ({_f(_median(auc[:, c, o, k]))})")
            out.append(f"| {method.upper()} | {algo} | {n} | " + " | ".join(cells) + " |")
        out.append("")
    if "truth" in data:
        out += ["## Concepts against the parts", "",
                "Found concepts vs random channel partitions with the same sizes (means over "
                "images; `class_part_area` is the chance level of `class_part_mass`).", "",
                "| method | algorithm | n | partition | " + " | ".join(TRUTH_SCORES) + " | images |",
                "|" + "---|" * (5 + len(TRUTH_SCORES))]
        for r in truth_rows(configs, data):
            out.append(f"| {r['method'].upper()} | {r['algorithm']} | {r['n_concepts']} | "
                       f"{r['partition']} | " + " | ".join(_f(r[s]) for s in TRUTH_SCORES)
                       + f" | {r['n_images']} |")
        out.append("")
    if "paint_out" in data:
        po = data["paint_out"]
        out += ["## Input-space check", "",
                "Mean p_t and its drop when a region is painted out with the object-free "
                "background (a classifier that uses both parts drops for A and B, not for the "
                "distractor).", "", "| p_t | drop part A | drop part B | drop distractor |",
                "|---|---|---|---|",
                "| " + " | ".join(_f(_mean_std(po[:, j])[0]) for j in range(4)) + " |", ""]
    return "\n".join(out)
