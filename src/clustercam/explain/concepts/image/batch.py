"""The concept pipeline of a batch of images, as plain functions a notebook can call.

:func:`run_concepts` takes the head ``h``, the activations ``A = g(x)`` of B images and
their class labels ``y``, and for every configured (method, algorithm, n_concepts) clusters
the channels, scores each concept's importance (one head call per configuration) and the
clustering quality, and the concepts' fidelity (deletion / insertion curves against random
orders and random channel groups; one more head call) and, given part masks, their
localisation against the parts (with random channel partitions as control); for the
*detail* configurations also sub-concepts and the concept sums at activation resolution
(small), for figures. The result is a :class:`ConceptBatch` of per-image tensors, so
batches (and DDP ranks) concatenate with :meth:`ConceptBatch.cat`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from clustercam.exceptions import UserError
from clustercam.explain.concepts.checks import checked_once
from clustercam.explain.concepts.image.ablation import PooledHead, checked_pooled_head
from clustercam.explain.concepts.image.extract import (
    ConceptClustering,
    cluster_channels,
    kept_channels,
    sub_concepts,
)
from clustercam.explain.concepts.image.fidelity import concept_fidelity
from clustercam.explain.concepts.image.importance import concept_importance
from clustercam.explain.concepts.image.maps import raw_concept_maps, sub_maps_with_parent_bounds
from clustercam.explain.concepts.image.metrics import concept_metrics
from clustercam.explain.concepts.image.settings import ConceptSettings
from clustercam.explain.concepts.image.truth import concept_truth
from clustercam.explain.concepts.parallel import cpu_workers, one_thread, run_stages
from clustercam.explain.concepts.vocabulary import (
    CONCEPT_METRIC_NAMES,
    FIDELITY_AUCS,
    ORDERS,
    PARTITIONS,
    TRUTH_SCORES,
    ConceptConfig,
)
from clustercam.explain.deprecation import renamed_parameters
from clustercam.explain.maps import minmax_normalise, resize_maps

# what ConceptBatch.tensors() flattens: the per-image tensors and dicts of them
_KEEP_OUT = ("degenerate", "concept_labels")  # per configuration, not per image: never gathered


@dataclass
class ConceptBatch:
    """The concepts of B images for every configuration (K = ``len(settings.configs)``,
    L = the largest n_concepts, D = ``len(settings.details)``, S = sub_concepts), on the CPU.

    Attributes:
        metrics: :data:`~clustercam.explain.concepts.vocabulary.CONCEPT_METRIC_NAMES` -> B x K
            (silhouette, Calinski-Harabasz, Davies-Bouldin of the clustered space, and the
            clustering's seconds; NaN for a degenerate image).
        kept: B x K kept (non-zero) channels.
        channels: B x K x L channels per concept (-1 beyond a configuration's n_concepts).
        importance: B x K x L importance in percent (eq. 3; NaN beyond n_concepts).
        sub_channels, sub_importance: B x D x L x S of the detail configurations.
        pred: B predicted classes; p_target: B softmax probability of the explained class.
        maps, sub_maps: B x D x L x h x w (x S) concept sums at activation resolution, for
            figures (:func:`figure_maps`); None once set aside.
        fidelity_auc: with fidelity, :data:`FIDELITY_AUCS` -> B x K x len(ORDERS).
        fidelity_curves: B x K x len(ORDERS) x (deletion, insertion) x (L + 1), NaN-padded.
        truth: with part masks, :data:`TRUTH_SCORES` -> B x K x len(PARTITIONS) (found
            concepts, random partitions).
        paint_out: the input-space check, :data:`PAINT_COLUMNS` -> B (set by the caller,
            :func:`~clustercam.explain.concepts.image.truth.paint_out_drops`).
        y: B class labels; idx: B dataset indices (set by the caller; needed by the tables).
        degenerate: per configuration, per image, why it could not be clustered as asked
            (None if fine; :func:`degenerate_messages`). Not per image: not gathered.
        concept_labels: per configuration, the B x C concept ids of the channels (-1
            dropped), what class-level concepts are built from. Not gathered either.
    """

    metrics: dict[str, Tensor]
    kept: Tensor
    channels: Tensor
    importance: Tensor
    sub_channels: Tensor
    sub_importance: Tensor
    pred: Tensor
    p_target: Tensor
    maps: Tensor | None = None
    sub_maps: Tensor | None = None
    fidelity_auc: dict[str, Tensor] | None = None
    fidelity_curves: Tensor | None = None
    truth: dict[str, Tensor] | None = None
    paint_out: dict[str, Tensor] | None = None
    y: Tensor | None = None
    idx: Tensor | None = None
    degenerate: list[list[str | None]] | None = None
    concept_labels: dict[ConceptConfig, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.pred)

    def replace(self, **changes: Any) -> ConceptBatch:
        """A copy with some fields changed (e.g. ``idx=``, or ``maps=None`` to set them aside)."""
        return dataclasses.replace(self, **changes)

    def tensors(self) -> dict[str, Tensor]:
        """Every per-image tensor by a flat name (``metrics/silhouette``, ``kept``, ...), the
        form a collective gathers; :meth:`from_tensors` rebuilds the batch."""
        out: dict[str, Tensor] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _KEEP_OUT or value is None:
                continue
            if isinstance(value, Mapping):
                out.update({f"{f.name}/{k}": v for k, v in value.items()})
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> ConceptBatch:
        """The batch of :meth:`tensors` output (gathered, reordered: any rows of it)."""
        fields: dict[str, Any] = {}
        for key, value in tensors.items():
            name, _, sub = key.partition("/")
            if sub:
                fields.setdefault(name, {})[sub] = value
            else:
                fields[name] = value
        return cls(**fields)

    @classmethod
    def cat(cls, batches: Sequence[ConceptBatch]) -> ConceptBatch:
        """One batch of several (in order), e.g. a split's batches or the ranks' gathered ones.

        Raises:
            UserError: for no batch, or batches that differ in what they hold.
        """
        if not batches:
            raise UserError("ConceptBatch.cat needs at least one batch")
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            values = [getattr(b, f.name) for b in batches]
            if all(v is None for v in values):
                out[f.name] = None
            elif any(v is None for v in values):
                raise UserError(f"cannot concatenate concept batches: only some have {f.name}")
            elif f.name == "degenerate":
                out[f.name] = [sum(per, []) for per in zip(*values)]
            elif isinstance(values[0], Mapping):
                out[f.name] = {k: torch.cat([v[k] for v in values]) for k in values[0]}
            else:
                out[f.name] = torch.cat(values)
        return cls(**out)


@renamed_parameters(labels="y")
def run_concepts(
    head: Callable[[Tensor], Tensor],
    activations: Tensor,
    y: Tensor,
    *,
    settings: ConceptSettings | None = None,
    logits: Tensor | None = None,
    pooled_head: PooledHead | None = None,
    part_masks: Tensor | None = None,
) -> ConceptBatch:
    """Concepts of B images for every configuration of ``settings``.

    On a CPU with two or more torch threads (and the torch k-means), each configuration's
    clustering, then its metrics, ablations and sub-concepts, run side by side in that many
    threads (:mod:`.parallel`; the same bits as one after the other): set
    ``torch.set_num_threads(1)`` for a strictly serial run.

    Args:
        head: ``h``, activations -> logits.
        activations: B x C x h x w, ``A = g(x)`` (post-ReLU).
        y: B class labels (the explained class when ``settings.target`` is ``label``).
        settings: what to compute (default: :class:`ConceptSettings`'s defaults).
        logits: ``head(activations)`` if already computed.
        pooled_head: the model's :class:`PooledHead` (pooling + one linear layer), which
            batches the ablations without copies of ``A``.
        part_masks: B x 3 x H x W (part A, part B, distractor): also the localisation
            scores against the parts (``truth``).

    Returns:
        A :class:`ConceptBatch` (CPU tensors) with ``y`` set; ``idx`` is the caller's.

    Example:
        >>> import torch
        >>> from clustercam.explain.concepts import ConceptSettings, run_concepts
        >>> head = lambda a: a.mean((2, 3))[:, :4]           # 4 "classes" from the first channels
        >>> a = torch.rand(2, 32, 4, 4)
        >>> settings = ConceptSettings(n_concepts=3, sub_concepts=0, n_init=2)
        >>> batch = run_concepts(head, a, torch.tensor([0, 1]), settings=settings)
        >>> tuple(batch.importance.shape), int(batch.channels[0, 0].sum())  # (cgap, cpha) x 3
        ((2, 2, 3), 32)
        >>> sorted(batch.metrics)
        ['calinski_harabasz', 'davies_bouldin', 'seconds', 'silhouette']
    """
    s = ConceptSettings() if settings is None else settings
    a = activations.detach()
    with torch.no_grad():
        logits = head(a) if logits is None else logits.detach()
        probs = torch.softmax(logits.double(), -1)
        pred = probs.argmax(-1)
        targets = y.to(pred.device).long() if s.target == "label" else pred
        p_target = probs.gather(1, targets[:, None]).squeeze(1)
    b, _, h, w = a.shape
    pooled_head = checked_pooled_head(head, pooled_head, a)  # once for the six ablation calls
    k, lm, ns, nd = len(s.configs), s.l_max, max(s.n_sub, 1), len(s.details)
    out = ConceptBatch(
        metrics={m: torch.full((b, k), math.nan, dtype=torch.float64) for m in CONCEPT_METRIC_NAMES},
        kept=torch.zeros(b, k, dtype=torch.long),
        channels=torch.full((b, k, lm), -1, dtype=torch.long),
        importance=torch.full((b, k, lm), math.nan, dtype=torch.float64),
        maps=torch.zeros(b, nd, lm, h, w, dtype=torch.float32),
        sub_channels=torch.zeros(b, nd, lm, ns, dtype=torch.long),
        sub_importance=torch.full((b, nd, lm, ns), math.nan, dtype=torch.float64),
        sub_maps=torch.zeros(b, nd, lm, ns, h, w, dtype=torch.float32),
        pred=pred.cpu(), p_target=p_target.cpu(), y=y.detach().long().cpu())
    if s.fidelity or part_masks is not None:
        out.fidelity_auc = {auc: torch.full((b, k, len(ORDERS)), math.nan, dtype=torch.float64)
                            for auc in FIDELITY_AUCS}
        out.fidelity_curves = torch.full((b, k, len(ORDERS), 2, lm + 1), math.nan)
    if part_masks is not None:
        out.truth = {t: torch.full((b, k, len(PARTITIONS)), math.nan, dtype=torch.float64) for t in TRUTH_SCORES}


    def cluster(c: int) -> ConceptClustering:
        method, algo, n = s.configs[c]
        res = cluster_channels(a, method=method, n_concepts=n, algorithm=algo, warn=False,
                               kept=kept, **_opts(s, algo))
        counts = res.counts().cpu()
        out.channels[:, c, :n] = counts
        out.kept[:, c] = counts.sum(1)
        return res

    def metrics(c: int, res: ConceptClustering, images: slice) -> None:
        rows = concept_metrics(_images(res, images), warn=False)
        for m in CONCEPT_METRIC_NAMES:
            out.metrics[m][images, c] = torch.tensor([r[m] for r in rows], dtype=torch.float64)

    def ablations(c: int, res: ConceptClustering) -> None:
        n = s.configs[c].n_concepts
        imp = concept_importance(head, a, res.labels, targets, n_concepts=n, pooled_head=pooled_head)
        out.importance[:, c, :n] = imp.cpu()
        if out.fidelity_auc is not None:
            _validate(out, c, s, head, a, res.labels, targets, imp, pooled_head, part_masks)

    def details(c: int, res: ConceptClustering) -> None:
        method, algo, n = s.configs[c]
        f = s.details.index(s.configs[c])
        out.maps[:, f, :n] = raw_concept_maps(a, res.labels, n_concepts=n).float().cpu()
        if not s.n_sub:
            return
        sub = sub_concepts(a, res.labels, method=method, n_sub=s.n_sub, algorithm=algo,
                           n_concepts=n, min_channels=s.min_sub_channels, kept=kept, rows=res.rows,
                           **_opts(s, algo))
        out.sub_channels[:, f, :n] = sub.counts().cpu()
        si = concept_importance(head, a, sub.labels, targets, n_concepts=n * s.n_sub, pooled_head=pooled_head)
        out.sub_importance[:, f, :n] = si.view(b, n, s.n_sub).cpu()
        sm = raw_concept_maps(a, sub.labels, n_concepts=n * s.n_sub).float().cpu()
        out.sub_maps[:, f, :n] = sm.view(b, n, s.n_sub, h, w)

    # the configurations' steps side by side in CPU threads where every step is torch's own
    # (scikit-learn's estimators set warning filters, which threads would share)
    threaded = s.backend == "torch" and all(algo == "kmeans" for algo in s.algorithms)
    workers = cpu_workers(a.device) if threaded else 0

    def then(c: int, res: ConceptClustering) -> list[Callable[[], None]]:
        steps = [partial(details, c, res)] if s.configs[c] in s.details else []  # the longest first
        steps.append(partial(ablations, c, res))
        # CGAP's silhouette (all pairs of channels) is the longest step after the clustering:
        # in image chunks the threads end together (each image's scores are the same bits)
        chunks = 2 * workers if res.method == "cgap" and workers > 1 else 1
        return steps + [partial(metrics, c, res, rows) for rows in _chunks(b, chunks)]

    with ExitStack() as held:
        # in this thread with one intra-op thread: a second OpenMP thread would go on
        # spinning beside the tasks for a while (two reductions over A, ~1 ms a batch)
        with one_thread(a.device):
            kept = kept_channels(a)  # the same for every configuration and the sub-concepts
            held.enter_context(checked_once(a))  # one check of A for the dozen functions that check it
        found = run_stages([partial(cluster, c) for c in range(k)], then, workers)
    out.degenerate = [res.degenerate for res in found]
    out.concept_labels = {cfg: res.labels.cpu() for cfg, res in zip(s.configs, found)}  # class concepts
    return out


def _chunks(n: int, parts: int) -> list[slice]:
    """``range(n)`` in at most ``parts`` contiguous slices of nearly equal length."""
    bounds = torch.linspace(0, n, max(1, min(parts, n)) + 1).round().long().tolist()
    return [slice(s, e) for s, e in zip(bounds, bounds[1:]) if e > s] or [slice(0, n)]


def _images(res: ConceptClustering, images: slice) -> ConceptClustering:
    """The clustering of some images of a batch (for its metrics)."""
    if images == slice(0, len(res.labels)):
        return res
    return dataclasses.replace(
        res, labels=res.labels[images], features=res.features[images], seconds=res.seconds[images],
        degenerate=res.degenerate[images], clustered=res.clustered[images],
        space=None if res.space is None else res.space[images],
        rows=None if res.rows is None else res.rows[images])


def _opts(s: ConceptSettings, algorithm: str) -> dict[str, Any]:
    return {"seed": s.seed, "n_init": s.n_init, "backend": s.backend,
            "algorithm_kwargs": s.algorithm_kwargs.get(algorithm)}


def _validate(out: ConceptBatch, c: int, s: ConceptSettings, head: Callable[[Tensor], Tensor],
              a: Tensor, labels: Tensor, targets: Tensor, imp: Tensor,
              pooled_head: PooledHead | None, part_masks: Tensor | None) -> None:
    """Configuration ``c``'s fidelity curves and, with part masks, localisation scores."""
    n = imp.shape[1]
    fid = concept_fidelity(head, a, labels, targets, imp, n_concepts=n, repeats=s.control_repeats,
                           seed=s.seed, pooled_head=pooled_head,
                           partition_importance=part_masks is not None)
    for o, order in enumerate(ORDERS):
        for auc in FIDELITY_AUCS:
            out.fidelity_auc[auc][:, c, o] = fid.aucs[order][auc].cpu()
        out.fidelity_curves[:, c, o, 0, : n + 1] = fid.deletion[order].float().cpu()
        out.fidelity_curves[:, c, o, 1, : n + 1] = fid.insertion[order].float().cpu()
    if part_masks is not None:
        truth = concept_truth(a, labels, imp, part_masks, partitions=fid.partitions.to(a.device),
                              partition_importance=fid.partition_importance.to(a.device))
        for p, part in enumerate(PARTITIONS):
            for score in TRUTH_SCORES:
                out.truth[score][:, c, p] = truth[part][score]


def degenerate_messages(settings: ConceptSettings, batch: ConceptBatch, index: Tensor) -> list[str]:
    """One line per image and configuration that could not be clustered as asked."""
    lines = []
    for (method, algo, n), reasons in zip(settings.configs, batch.degenerate or []):
        for i, reason in enumerate(reasons):
            if reason is not None:
                lines.append(f"image {int(index[i])}, {method}/{algo}/n={n}: {reason}")
    return lines


def figure_maps(
    batch: ConceptBatch, i: int, detail: int, n: int, size: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Image ``i``'s concept maps (n x H x W) and sub-concept maps (n x S x H x W, with the
    parent's bounds) at the display ``size``, from the stored activation-resolution sums
    (``size`` (L,) for a series: n x L and n x S x L)."""
    raw, raw_sub = batch.maps[i, detail, :n], batch.sub_maps[i, detail, :n]
    if len(size) == 1 and raw.dim() == 3:  # a series' 1 x l grid (grid_2d) read as l steps
        raw, raw_sub = raw.flatten(-2), raw_sub.flatten(-2)
    maps = minmax_normalise(resize_maps(raw, size), len(size))
    sub = sub_maps_with_parent_bounds(raw_sub, raw, size)
    return maps, sub
