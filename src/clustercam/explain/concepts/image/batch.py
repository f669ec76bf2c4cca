"""The concept pipeline of a batch of images, as plain functions a notebook can call.

:func:`run_concepts` takes the activations ``A = g(x)`` of B images, the head ``h`` and
the labels, and for every configured (method, algorithm, n_concepts) clusters the channels,
scores each concept's importance (one head call per configuration) and the clustering
quality, and the concepts' fidelity (deletion / insertion curves against random orders and
random channel groups; one more head call) and, given part masks, their localisation
against the parts (with random channel partitions as control); for the *detail*
configurations also sub-concepts and the concept sums at activation resolution (small),
for figures. The result is a dict of per-image tensors, so
batches from several DDP ranks concatenate; :func:`concept_tables` turns it into the rows of
``concepts_per_image.csv``, ``sub_concepts_per_image.csv`` and ``concept_metrics.csv``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from clustercam.explain.concepts.checks import (
    ALGORITHMS,
    BACKENDS,
    METHODS,
)
from clustercam.explain.concepts.image.ablation import PooledHead, checked_pooled_head
from clustercam.explain.concepts.image.extract import (
    ConceptClustering,
    cluster_channels,
    sub_concepts,
)
from clustercam.explain.concepts.image.fidelity import ORDERS, concept_fidelity
from clustercam.explain.concepts.image.importance import concept_importance, importance_order
from clustercam.explain.concepts.image.maps import raw_concept_maps, sub_maps_with_parent_bounds
from clustercam.explain.concepts.image.metrics import concept_metrics
from clustercam.explain.concepts.image.truth import TRUTH_SCORES, concept_truth
from clustercam.explain.concepts.parallel import cpu_workers, run_stages
from clustercam.explain.concepts.summary import overall_means
from clustercam.explain.maps import minmax_normalise, resize_maps

TARGETS = ("label", "predicted")
DETAILS = ("first", "all")
CONCEPT_COLUMNS = ("image", "class", "method", "algorithm", "n_concepts", "concept", "channels",
                   "importance", "rank", "index", "class_name", "predicted", "p_target")
SUB_CONCEPT_COLUMNS = ("image", "class", "method", "algorithm", "n_concepts", "concept",
                       "sub_concept", "channels", "importance", "parent_channels",
                       "parent_importance", "index", "class_name")
METRIC_COLUMNS = ("image", "class", "method", "algorithm", "n_concepts", "silhouette",
                  "calinski_harabasz", "davies_bouldin", "seconds", "index", "class_name",
                  "kept_channels", "backend")

Config = tuple[str, str, int]


def _as_list(value: Any, what: str) -> list:
    if value is None:
        raise ValueError(f"{what} must not be null")
    if isinstance(value, str | int):
        return [value]
    out = list(value)
    if not out:
        raise ValueError(f"{what} must not be empty")
    return out


@dataclass
class ConceptSettings:
    """What to compute for every image: the product of ``method`` x ``algorithm`` x
    ``n_concepts`` (each one value or a list), sub-concepts (``sub_concepts`` = their maximum
    number, 0 = off) and maps for the *detail* configurations (``first``: the first algorithm
    and n_concepts, every method; ``all``). ``target``: importance of the ``label`` class (the
    paper) or the ``predicted`` one. ``fidelity``: concept deletion / insertion curves;
    ``control_repeats``: R, the draws of each random control (orders, channel groups,
    partitions)."""

    method: str | Sequence[str] = ("cgap", "cpha")
    algorithm: str | Sequence[str] = "kmeans"
    n_concepts: int | Sequence[int] = 5
    sub_concepts: int = 3
    min_sub_channels: int | None = None
    seed: int = 0
    n_init: int = 10
    backend: str = "torch"
    target: str = "label"
    detail: str = "first"
    algorithm_kwargs: Mapping[str, Mapping[str, Any]] | None = None
    fidelity: bool = True
    control_repeats: int = 10
    configs: list[Config] = field(init=False)
    details: list[Config] = field(init=False)

    def __post_init__(self) -> None:
        self.methods = [str(m) for m in _as_list(self.method, "method")]
        self.algorithms = [str(a) for a in _as_list(self.algorithm, "algorithm")]
        self.n_list = [int(n) for n in _as_list(self.n_concepts, "n_concepts")]
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"unknown concept method {m!r}; choose from {METHODS}")
        for a in self.algorithms:
            if a not in ALGORITHMS:
                raise ValueError(f"unknown clustering algorithm {a!r}; choose from {ALGORITHMS}")
        for n in self.n_list:
            if n < 2:
                raise ValueError(f"n_concepts must be >= 2, got {n}")
        if self.sub_concepts and self.sub_concepts < 2:
            raise ValueError(f"sub_concepts must be 0 (off) or >= 2, got {self.sub_concepts}")
        if self.n_init < 1:
            raise ValueError(f"n_init must be >= 1, got {self.n_init}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose from {BACKENDS}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if int(self.control_repeats) < 1:
            raise ValueError(f"control_repeats must be >= 1, got {self.control_repeats}")
        if self.detail not in DETAILS:
            raise ValueError(f"detail must be one of {DETAILS}, got {self.detail!r}")
        self.n_sub = int(self.sub_concepts or 0)
        self.algorithm_kwargs = {k: dict(v) for k, v in (self.algorithm_kwargs or {}).items()}
        self.configs = list(itertools.product(self.methods, self.algorithms, self.n_list))
        if self.detail == "first":
            self.details = [(m, self.algorithms[0], self.n_list[0]) for m in self.methods]
        else:
            self.details = list(self.configs)
        self.l_max = max(self.n_list)


def run_concepts(
    settings: ConceptSettings,
    head: Callable[[Tensor], Tensor],
    activations: Tensor,
    labels: Tensor,
    logits: Tensor | None = None,
    pooled_head: PooledHead | None = None,
    part_masks: Tensor | None = None,
) -> dict[str, Tensor]:
    """Concepts of B images for every configuration: a dict of per-image tensors (CPU).

    ``metrics`` B x configs x 4 (silhouette, CHI, DBI, seconds), ``kept`` and ``channels``
    (per concept, -1 beyond n_concepts), ``importance`` (%, eq. 3), ``maps`` (detail configs:
    B x details x L x h x w concept sums), ``sub_channels``, ``sub_importance``, ``sub_maps``,
    ``pred``, ``p_target`` (the softmax probability of the explained class); with
    ``settings.fidelity`` ``fidelity_auc`` (B x configs x orders x (deletion, insertion))
    and ``fidelity_curves`` (... x n + 1, NaN-padded; :mod:`.fidelity`, batched through
    ``pooled_head`` where the model declares one); with ``part_masks`` (B x 3 x H x W:
    part A, part B, distractor) ``truth`` (B x configs x (concepts, random) x
    :data:`~clustercam.explain.concepts.image.truth.TRUTH_SCORES`; :mod:`.truth`); and
    ``degenerate``: per configuration, per image, why it could not be clustered as asked
    (None if fine; a list, not a tensor: pop it before concatenating batches, see
    :func:`degenerate_messages`); ``labels``: per configuration, the B x C channel labels
    (``-1`` dropped; a dict, pop it too), what class-level concepts are built from
    (:class:`~clustercam.explain.concepts.classes.passes.ClassConceptRun`).

    On a CPU with two or more torch threads (and the torch k-means), each configuration's
    clustering, then its metrics, ablations and sub-concepts, run side by side in that many
    threads (:mod:`.parallel`; the same bits as one after the other): set
    ``torch.set_num_threads(1)`` for a strictly serial run.

    Example:
        >>> import torch
        >>> from clustercam.explain.concepts import ConceptSettings, run_concepts
        >>> head = lambda a: a.mean((2, 3))[:, :4]           # 4 "classes" from the first channels
        >>> a = torch.rand(2, 32, 4, 4)
        >>> out = run_concepts(ConceptSettings(n_concepts=3, sub_concepts=0, n_init=2), head, a,
        ...                    labels=torch.tensor([0, 1]))
        >>> tuple(out["importance"].shape), int(out["channels"][0, 0].sum())  # (cgap, cpha) x 3
        ((2, 2, 3), 32)
    """
    s = settings
    a = activations.detach()
    with torch.no_grad():
        logits = head(a) if logits is None else logits.detach()
        probs = torch.softmax(logits.double(), -1)
        pred = probs.argmax(-1)
        targets = labels.to(pred.device).long() if s.target == "label" else pred
        p_target = probs.gather(1, targets[:, None]).squeeze(1)
    b, _, h, w = a.shape
    pooled_head = checked_pooled_head(head, pooled_head, a)  # once for the six ablation calls
    k, lm, ns, nd = len(s.configs), s.l_max, max(s.n_sub, 1), len(s.details)
    out = {
        "metrics": torch.full((b, k, 4), math.nan, dtype=torch.float64),
        "kept": torch.zeros(b, k, dtype=torch.long),
        "channels": torch.full((b, k, lm), -1, dtype=torch.long),
        "importance": torch.full((b, k, lm), math.nan, dtype=torch.float64),
        "maps": torch.zeros(b, nd, lm, h, w, dtype=torch.float32),
        "sub_channels": torch.zeros(b, nd, lm, ns, dtype=torch.long),
        "sub_importance": torch.full((b, nd, lm, ns), math.nan, dtype=torch.float64),
        "sub_maps": torch.zeros(b, nd, lm, ns, h, w, dtype=torch.float32),
        "pred": pred.cpu(), "p_target": p_target.cpu(),
    }
    if s.fidelity or part_masks is not None:
        out["fidelity_auc"] = torch.full((b, k, len(ORDERS), 2), math.nan, dtype=torch.float64)
        out["fidelity_curves"] = torch.full((b, k, len(ORDERS), 2, lm + 1), math.nan)
    if part_masks is not None:
        out["truth"] = torch.full((b, k, 2, len(TRUTH_SCORES)), math.nan, dtype=torch.float64)
    def cluster(c: int) -> ConceptClustering:
        method, algo, n = s.configs[c]
        res = cluster_channels(a, method=method, n_concepts=n, algorithm=algo, warn=False,
                               **_opts(s, algo))
        counts = res.counts().cpu()
        out["channels"][:, c, :n] = counts
        out["kept"][:, c] = counts.sum(1)
        return res

    def metrics(c: int, res: ConceptClustering) -> None:
        out["metrics"][:, c] = torch.tensor(
            [[r["silhouette"], r["calinski_harabasz"], r["davies_bouldin"], r["seconds"]]
             for r in concept_metrics(res, warn=False)], dtype=torch.float64)

    def ablations(c: int, res: ConceptClustering) -> None:
        n = s.configs[c][2]
        imp = concept_importance(head, a, res.labels, targets, n, pooled_head=pooled_head)
        out["importance"][:, c, :n] = imp.cpu()
        if "fidelity_auc" in out:
            _validate(out, c, s, head, a, res.labels, targets, imp, pooled_head, part_masks)

    def details(c: int, res: ConceptClustering) -> None:
        method, algo, n = s.configs[c]
        f = s.details.index((method, algo, n))
        out["maps"][:, f, :n] = raw_concept_maps(a, res.labels, n).float().cpu()
        if not s.n_sub:
            return
        sub = sub_concepts(a, res.labels, method=method, n_sub=s.n_sub, algorithm=algo,
                           n_concepts=n, min_channels=s.min_sub_channels, **_opts(s, algo))
        out["sub_channels"][:, f, :n] = sub.counts().cpu()
        si = concept_importance(head, a, sub.labels, targets, n * s.n_sub, pooled_head=pooled_head)
        out["sub_importance"][:, f, :n] = si.view(b, n, s.n_sub).cpu()
        sm = raw_concept_maps(a, sub.labels, n * s.n_sub).float().cpu()
        out["sub_maps"][:, f, :n] = sm.view(b, n, s.n_sub, h, w)

    def then(c: int, res: ConceptClustering) -> list[Callable[[], None]]:
        steps = [details] if s.configs[c] in s.details else []  # the longest first
        return [partial(step, c, res) for step in (*steps, metrics, ablations)]

    # the configurations' steps side by side in CPU threads where every step is torch's own
    # (scikit-learn's estimators set warning filters, which threads would share)
    threaded = s.backend == "torch" and all(algo == "kmeans" for algo in s.algorithms)
    found = run_stages([partial(cluster, c) for c in range(k)], then,
                       cpu_workers(a.device) if threaded else 0)
    out["degenerate"] = [res.degenerate for res in found]
    out["labels"] = {cfg: res.labels.cpu() for cfg, res in zip(s.configs, found)}  # class concepts
    return out


def _opts(s: ConceptSettings, algorithm: str) -> dict[str, Any]:
    return {"seed": s.seed, "n_init": s.n_init, "backend": s.backend,
            "algorithm_kwargs": s.algorithm_kwargs.get(algorithm)}


def _validate(out: dict[str, Any], c: int, s: ConceptSettings, head: Callable[[Tensor], Tensor],
              a: Tensor, labels: Tensor, targets: Tensor, imp: Tensor,
              pooled_head: PooledHead | None, part_masks: Tensor | None) -> None:
    """Configuration ``c``'s fidelity curves and, with part masks, localisation scores."""
    n = imp.shape[1]
    fid = concept_fidelity(head, a, labels, targets, imp, n, repeats=s.control_repeats,
                           seed=s.seed, pooled_head=pooled_head,
                           partition_importance=part_masks is not None)
    for o, order in enumerate(ORDERS):
        out["fidelity_auc"][:, c, o] = torch.stack(
            [fid.aucs[order]["deletion_auc"], fid.aucs[order]["insertion_auc"]], -1).cpu()
        out["fidelity_curves"][:, c, o, 0, : n + 1] = fid.deletion[order].float().cpu()
        out["fidelity_curves"][:, c, o, 1, : n + 1] = fid.insertion[order].float().cpu()
    if part_masks is not None:
        truth = concept_truth(a, labels, imp, part_masks, fid.partitions.to(a.device),
                              fid.partition_importance.to(a.device))
        for p, part in enumerate(("concepts", "random")):
            out["truth"][:, c, p] = torch.stack([truth[part][k] for k in TRUTH_SCORES], -1)


def degenerate_messages(settings: ConceptSettings, batch: Mapping[str, Any], index: Tensor) -> list[str]:
    """One line per image and configuration that could not be clustered as asked."""
    lines = []
    for (method, algo, n), reasons in zip(settings.configs, batch.get("degenerate", [])):
        for i, reason in enumerate(reasons):
            if reason is not None:
                lines.append(f"image {int(index[i])}, {method}/{algo}/n={n}: {reason}")
    return lines


@dataclass
class ConceptTables:
    """The rows of the three concept CSV files (columns: ``*_COLUMNS``)."""

    concepts: list[dict[str, Any]]
    sub_concepts: list[dict[str, Any]]
    metrics: list[dict[str, Any]]


def concept_tables(
    settings: ConceptSettings, data: Mapping[str, Tensor], names: Sequence[str],
    class_names: Sequence[str],
) -> ConceptTables:
    """Rows per image x configuration (x concept, x sub-concept) from gathered :func:`run_concepts`
    output with ``idx`` and ``y``; ``rank`` 0 is the most important concept."""
    s = settings
    tables = ConceptTables([], [], [])
    for i, name in enumerate(names):
        base = {"image": name, "class": int(data["y"][i]), "index": int(data["idx"][i]),
                "class_name": class_names[i]}
        for c, (method, algo, n) in enumerate(s.configs):
            cfg = {"method": method, "algorithm": algo, "n_concepts": n}
            m = data["metrics"][i, c].tolist()
            tables.metrics.append({**base, **cfg, "silhouette": m[0], "calinski_harabasz": m[1],
                                   "davies_bouldin": m[2], "seconds": m[3],
                                   "kept_channels": int(data["kept"][i, c]),
                                   "backend": s.backend if algo == "kmeans" else "sklearn"})
            imp = data["importance"][i, c, :n].tolist()
            rank = {j: r for r, j in enumerate(importance_order(imp))}
            for j in range(n):
                tables.concepts.append({**base, **cfg, "concept": j,
                                        "channels": int(data["channels"][i, c, j]),
                                        "importance": imp[j], "rank": rank[j],
                                        "predicted": int(data["pred"][i]),
                                        "p_target": float(data["p_target"][i])})
            if not s.n_sub or (method, algo, n) not in s.details:
                continue
            f = s.details.index((method, algo, n))
            for j in range(n):
                for q in range(s.n_sub):
                    ch = int(data["sub_channels"][i, f, j, q])
                    if ch:
                        tables.sub_concepts.append({
                            **base, **cfg, "concept": j, "sub_concept": q, "channels": ch,
                            "importance": float(data["sub_importance"][i, f, j, q]),
                            "parent_channels": int(data["channels"][i, c, j]),
                            "parent_importance": imp[j]})
    return tables


def concept_results(data: Mapping[str, Tensor], metric_rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Run-level numbers: top-1 accuracy, mean p_target, and each configuration's mean metrics
    (mean over classes), plus per-method means over configurations (the same keys in every
    job of a sweep)."""
    res: dict[str, float] = {
        "n_images": int(len(data["idx"])),
        "top1": float((data["pred"] == data["y"]).double().mean()),
        "p_target_mean": float(data["p_target"].mean()),
    }
    per_method: dict[str, list[dict[str, float]]] = {}
    for _, r in overall_means(metric_rows).iterrows():
        key = f"concepts/{r['method']}_{r['algorithm']}_n{int(r['n_concepts'])}"
        vals = {m: float(r[m]) for m in ("silhouette", "calinski_harabasz", "davies_bouldin", "seconds")}
        res.update({f"{key}/{m}": v for m, v in vals.items()})
        per_method.setdefault(str(r["method"]), []).append(vals)
    for method, rows in per_method.items():
        for m in rows[0]:
            finite = [v[m] for v in rows if math.isfinite(v[m])]
            res[f"concepts/{method}/{m}"] = float(np.mean(finite)) if finite else math.nan
    return res


def figure_maps(
    data: Mapping[str, Tensor], i: int, detail: int, n: int, size: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Image ``i``'s concept maps (n x H x W) and sub-concept maps (n x S x H x W, with the
    parent's bounds) at the display ``size``, from the stored activation-resolution sums."""
    raw = data["maps"][i, detail, :n]
    maps = minmax_normalise(resize_maps(raw, size), 2)
    sub = sub_maps_with_parent_bounds(data["sub_maps"][i, detail, :n], raw, size)
    return maps, sub
