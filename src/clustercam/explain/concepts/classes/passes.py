"""Class-level concepts of a whole concept run, as the calls a pipeline or callback makes.

The scores need the class concepts, which need all images. Where the concepts' layer
feeds a head that is global pooling + one linear layer (:func:`pooled_head_or_none`), the
first pass keeps a few numbers per image (:mod:`.pooled`) and the scores follow from them:
ONE pass over the images. Otherwise a second pass visits them again:

1. per batch :meth:`ClassConceptRun.observe` (the per-image partitions of every
   configuration, the activations for the NMF sample and, with a pooled head, the
   pooled numbers); then, once, the DDP reduction (:meth:`~ClassConceptRun.counts_state`
   summed, :meth:`~ClassConceptRun.sample_state` gathered) and
   :meth:`~ClassConceptRun.finalise`;
2. with a pooled head :meth:`ClassConceptRun.score_observed` (no image visited again);
   without, per batch :meth:`ClassConceptRun.score` (the activations again, the
   partitions of :attr:`~ClassConceptRun.batches`); then
   :meth:`~ClassConceptRun.scores_state` gathered, and the results:
   :attr:`~ClassConceptRun.concepts` with :attr:`~ClassConceptRun.scores` (per
   configuration and source), :meth:`~ClassConceptRun.truth` (the scores against the parts)
   and :meth:`~ClassConceptRun.galleries` (what the figures draw; after one pass their
   maps come from :meth:`~ClassConceptRun.fill_gallery_maps`, the gallery images alone).

Every state is a flat dict of tensors, so a callback reduces it with its strategy; in one
process the reductions are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from clustercam.explain.concepts.classes.coassociation import (
    ClassConcepts,
    ClassConceptSettings,
    CoAssociation,
    group_name,
    random_groups,
    warn_class,
)
from clustercam.explain.concepts.classes.nmf import (
    NMFSample,
    nmf_environment,
    nmf_result,
    nmf_tasks,
)
from clustercam.explain.concepts.classes.pooled import PooledActivations, cat_pooled, is_mean_pool
from clustercam.explain.concepts.classes.scores import ClassConceptScores, truth_by_group
from clustercam.explain.concepts.image.ablation import Head, PooledHead, checked_pooled_head
from clustercam.explain.concepts.parallel import call_all, cpu_workers
from clustercam.explain.concepts.vocabulary import ConceptConfig

SOURCES_SCORED = ("coassociation", "nmf")  # the sources with rows and galleries (random: a control)


def pooled_head_or_none(head: Head, pooled_head: PooledHead | None, activations: Tensor) -> PooledHead | None:
    """The head's pooling + linear form when the class concepts can be scored in one pass.

    ``pooled_head``: what the model declares (``ClassifierModule.pooled_head``: timm's pool
    and the rest of its head after the final features; None for an intermediate layer),
    checked against ``head`` on these activations (masking channels must commute with the
    pool; a warning when it does not). None: the class concepts take a second pass over the
    images. The one place that decides it.
    """
    return checked_pooled_head(head, pooled_head, activations.detach())


@dataclass
class ObservedBatch:
    """What pass 1 keeps of a batch: dataset ``index``, sampler ``keep`` flags, group
    ``classes``, every configuration's ``partitions`` (B x C, int8 / int16), and for the
    one pass the importance ``targets`` and the :class:`~.pooled.PooledActivations`."""

    index: Tensor
    keep: Tensor | None
    classes: Tensor
    partitions: dict[ConceptConfig, Tensor]
    targets: Tensor | None = None
    pooled: PooledActivations | None = None


@dataclass
class ClassGallery:
    """One gallery figure: the group (class index or ``DATASET``), its configuration and
    source, and the keyword arguments of
    :func:`clustercam.explain.plots.class_concepts.class_concept_figure` less ``images``."""

    group: int
    config: ConceptConfig
    source: str
    figure: dict[str, Any]


class ClassConceptRun:
    """Accumulators, class concepts and scores for every (method, algorithm, n_concepts).

    ``n_channels``/``n_classes``: of the classifier; ``map_size``: the activation map size (h, w),
    needed under DDP so that empty ranks have states of the right shape; ``pooled_head``: the
    head's checked pooling + linear form (:func:`pooled_head_or_none`): the scores then come
    from the first pass (:meth:`score_observed`); None: :meth:`score` in a second pass.

    Example:
        >>> import torch
        >>> from clustercam.explain.concepts import cluster_channels
        >>> settings = ClassConceptSettings(n_random=0, gallery_size=2, nmf_max_images=4)
        >>> run = ClassConceptRun(settings, [("cgap", "kmeans", 2)], n_channels=8, n_classes=2)
        >>> a, y, idx = torch.rand(6, 8, 3, 3), torch.tensor([0, 0, 0, 1, 1, 1]), torch.arange(6)
        >>> labels = {("cgap", "kmeans", 2): cluster_channels(a, n_concepts=2, n_init=2).labels}
        >>> run.observe(a, labels, y, idx)                      # pass 1, per batch
        >>> run.finalise()
        >>> head = lambda x: x.mean((2, 3))[:, :2]
        >>> run.score(head, a, labels, y, idx)                  # pass 2, per batch
        >>> found = run.concepts[("cgap", "kmeans", 2)]          # per source, its groupings
        >>> sorted(found), found["coassociation"][0].labels.shape  # 2 classes x 8 channels
        (['coassociation', 'nmf'], torch.Size([2, 8]))

        One pass, with the head's pooling + linear form:

        >>> from clustercam.explain.concepts.image.ablation import PooledHead
        >>> ph = PooledHead(pool=lambda x: x.mean((2, 3)), linear=lambda p: p[:, :2], checked=True)
        >>> one = ClassConceptRun(settings, [("cgap", "kmeans", 2)], 8, 2, pooled_head=ph)
        >>> one.observe(a, labels, y, idx, targets=y)           # the only pass
        >>> one.finalise()
        >>> one.score_observed()
        >>> torch.allclose(one.scores[("cgap", "kmeans", 2)]["coassociation"][0].summary()["importance"],
        ...                run.scores[("cgap", "kmeans", 2)]["coassociation"][0].summary()["importance"])
        True
    """

    def __init__(self, settings: ClassConceptSettings, configs: Sequence[tuple[str, str, int]], n_channels: int,
                 n_classes: int, map_size: Sequence[int] | None = None,
                 device: torch.device | str = "cpu", pooled_head: PooledHead | None = None) -> None:
        self.settings, self.configs, self.pooled_head = settings, [ConceptConfig(*c) for c in configs], pooled_head
        self.batches: list[ObservedBatch] = []
        self._mean_pool: bool | None = None  # decided on the first batch
        self._linear_masses, self.masked = True, False  # the first: False once part masks meet negative activations
        self.n_channels, self.map_size = int(n_channels), None if map_size is None else tuple(map_size)
        self.co = {c: CoAssociation(n_channels, n_classes, settings.scope, device) for c in self.configs}
        self.sample = (NMFSample(settings.nmf_max_images, settings.seed, settings.scope)
                       if settings.nmf_max_images else None)
        self.concepts: dict[ConceptConfig, dict[str, list[ClassConcepts]]] = {}
        self.scores: dict[ConceptConfig, dict[str, list[ClassConceptScores]]] = {}

    # -- pass 1 ----------------------------------------------------------------------------------
    def observe(self, activations: Tensor, partitions: Mapping[tuple[str, str, int], Tensor], classes: Tensor,
                index: Tensor, keep: Tensor | None = None, *, targets: Tensor | None = None,
                masks: Tensor | None = None) -> None:
        """Add a batch: its activations (NMF sample; with a pooled head, its pooled numbers)
        and every configuration's B x C labels (kept, small, for the scores). ``classes``:
        the group of each image (0 .. n_classes - 1); ``keep``: False for a sampler's repeat;
        for the one pass also the importance ``targets`` (the classifier's class indices;
        default ``classes``) and the part ``masks`` (B x 3 x H x W) of data that has them."""
        for cfg, labels in partitions.items():
            self.co[tuple(cfg)].update(labels, classes, keep)
        a = activations.detach()
        low = float(a.min()) if a.numel() else 0.0
        self._note(low, masks is not None)
        taken = None if self.sample is None else self.sample.update(activations, classes, index, keep)
        if self.map_size is None:
            self.map_size = tuple(a.shape[-2:])
        pooled = None
        if self.pooled_head is not None and self._linear_masses:
            if self._mean_pool is None:
                self._mean_pool = is_mean_pool(self.pooled_head.pool(a), a)
            pooled = PooledActivations.of(self.pooled_head, a, masks, self._mean_pool)
        self.batches.append(ObservedBatch(
            torch.as_tensor(index).view(-1).long().cpu(),
            None if keep is None else torch.as_tensor(keep).view(-1).bool().cpu(),
            torch.as_tensor(classes).view(-1).long().cpu(),
            {ConceptConfig(*cfg): _small(labels) for cfg, labels in partitions.items()},
            None if targets is None else torch.as_tensor(targets).view(-1).long().cpu(), pooled))
        sampled = {} if taken is None else {"idx": self.batches[-1].index[taken],
                                            "classes": self.batches[-1].classes[taken],
                                            "activations": a[taken.to(a.device)].float().cpu()}
        self._last = {"min": torch.tensor(low), "masked": torch.tensor(masks is not None),
                      **{f"sampled/{k}": v for k, v in sampled.items()}}

    def _note(self, low: float, masked: bool) -> None:
        """A batch's smallest activation ``low`` and whether it has part masks: signed
        activations (transformer tokens) drop the NMF baseline and, with part masks, the
        one pass (the clip of the relevance mass matters)."""
        if self.sample is not None and low < 0:
            warn_class("the NMF baseline needs non-negative activations and these are signed "
                       f"(min {low:.3g}): no NMF class concepts in this run")
            self.sample = None
        self.masked = self.masked or masked
        if masked and low < 0:
            self._linear_masses = False

    def batch_state(self) -> dict[str, Tensor]:
        """What pass 1 kept of the last observed batch, as a flat dict of CPU tensors: its
        :class:`ObservedBatch`, the rows the NMF sample took of it (the only ones a later
        sample can hold) and what :meth:`_note` needs. :meth:`replay` adds it to another
        run as :meth:`observe` added it to this one, without the images: a killed run's
        shards (``resume=true``)."""
        ob = self.batches[-1]
        state = {"index": ob.index, "classes": ob.classes, **self._last,
                 **{f"partition/{i}": ob.partitions[c] for i, c in enumerate(self.configs) if c in ob.partitions}}
        state.update({k: v for k, v in (("keep", ob.keep), ("targets", ob.targets)) if v is not None})
        if ob.pooled is not None:
            state["pooled/positions"] = torch.tensor(ob.pooled.positions)
            state.update({f"pooled/{k}": v for k, v in vars(ob.pooled).items() if isinstance(v, Tensor)})
        return state

    def replay(self, states: Iterable[Mapping[str, Tensor]]) -> None:
        """Add the batches an earlier run observed, from their :meth:`batch_state` s, in
        order: the same counts, NMF sample and observed batches as :meth:`observe` on
        their images."""
        for state in states:
            self._replay(state)

    def _replay(self, state: Mapping[str, Tensor]) -> None:
        parts = {c: state[f"partition/{i}"] for i, c in enumerate(self.configs) if f"partition/{i}" in state}
        ob = ObservedBatch(state["index"], state.get("keep"), state["classes"], parts, state.get("targets"))
        if "pooled/pooled" in state:
            ob.pooled = PooledActivations(state["pooled/pooled"], state.get("pooled/sums"),
                                          int(state["pooled/positions"]), state.get("pooled/regions"),
                                          state.get("pooled/present"))
        for cfg, labels in parts.items():
            self.co[cfg].update(labels, ob.classes, ob.keep)
        self._note(float(state["min"]), bool(state["masked"]))
        if self.sample is not None and "sampled/idx" in state:
            self.sample.update(state["sampled/activations"], state["sampled/classes"], state["sampled/idx"])
        self.batches.append(ob)

    @property
    def one_pass(self) -> bool:
        """Whether the scores come from the first pass (:meth:`score_observed`): a pooled
        head, and no part masks over negative activations (there the clip at 0 of the
        relevance mass needs the maps)."""
        return self.pooled_head is not None and self._linear_masses

    def counts_state(self) -> dict[str, Tensor]:
        """The counts and what :meth:`_note` gave up: SUM each over ranks, then :meth:`load_counts_state`."""
        return {"given_up": torch.tensor([self.sample is None, not self._linear_masses], dtype=torch.int64),
                **{f"{i}/{k}": v for i, c in enumerate(self.configs) for k, v in self.co[c].state().items()}}

    def load_counts_state(self, state: Mapping[str, Tensor]) -> None:
        for i, c in enumerate(self.configs):
            part = {k.split("/", 1)[1]: v for k, v in state.items() if k.split("/", 1)[0] == str(i)}
            self.co[c] = CoAssociation.from_state(part, self.settings.scope)
        given_up = state.get("given_up", torch.zeros(2)).tolist()
        self.sample, self._linear_masses = (None if given_up[0] else self.sample), self._linear_masses and not given_up[1]

    def sample_state(self) -> dict[str, Tensor]:
        """The NMF sample as rows with ``idx``: gather them over ranks (``gather_split``)."""
        if self.sample is None:
            return {}
        st = self.sample.state()
        if not len(st["idx"]) and self.map_size is not None:
            st["activations"] = torch.zeros(0, self.n_channels, *self.map_size)
        return st

    def load_sample_state(self, state: Mapping[str, Tensor]) -> None:
        if self.sample is not None and state:
            s = self.settings
            self.sample = NMFSample.from_state(state, s.nmf_max_images, s.seed, s.scope)

    def finalise(self, class_names: Sequence[str] | None = None, progress: Callable[[int, int], None] | None = None) -> None:
        """Class concepts of every configuration (co-association, NMF, random controls).

        Every group's clustering and NMF is independent of the others: on a CPU with two
        or more torch threads they run side by side (:func:`~.parallel.call_all`, the
        largest NMF first, each with one BLAS thread as when run alone: the same labels),
        calling ``progress(done, total)`` as each ends (minutes for a thousand classes)."""
        s = self.settings
        jobs = {cfg: self.co[cfg].clusterings(s.n_for(cfg[2]), s.min_presence) for cfg in self.configs}
        keys = {cfg: (tuple(g for g, _, _ in j), s.n_for(cfg[2]), tuple(n for _, n, _ in j)) for cfg, j in jobs.items()}
        nmf_jobs = {} if self.sample is None else {  # NMF sees the sample, not the partitions: once per shape
            k: nmf_tasks(self.sample, k[0], k[1], self.n_channels, s.seed, tol=s.nmf_tol)
            for k in dict.fromkeys(keys.values())}
        tasks = [t for j in nmf_jobs.values() for _, t in j] + [t for j in jobs.values() for _, _, t in j]
        cost = [m for j in nmf_jobs.values() for m, _ in j] + [0] * sum(map(len, jobs.values()))  # NMFs first
        with nmf_environment():
            done = iter(call_all(tasks, cpu_workers(torch.device("cpu")), cost, progress))
        nmf_found = {k: [(m, next(done)) for m, _ in j] for k, j in nmf_jobs.items()}
        nmf: dict[tuple, ClassConcepts] = {}
        for cfg, j in jobs.items():
            cc = self.co[cfg].concepts_from([(g, n, next(done)) for g, n, _ in j], s.n_for(cfg[2]),
                                            s.min_presence, class_names)
            found = {"coassociation": [cc]}
            if keys[cfg] in nmf_found:
                if keys[cfg] not in nmf:
                    nmf[keys[cfg]] = nmf_result(cc, nmf_found[keys[cfg]], class_names)
                n = nmf[keys[cfg]]
                found["nmf"] = [ClassConcepts(list(n.groups), n.labels.clone(), n.n_concepts, n.n_images.clone(), source="nmf")]
            if s.n_random:
                found["random"] = random_groups(cc, s.n_random, s.seed)
            self._set_concepts(cfg, found)

    def _set_concepts(self, cfg: ConceptConfig, found: dict[str, list[ClassConcepts]]) -> None:
        s = self.settings
        self.concepts[cfg] = found
        self.scores[cfg] = {
            src: [ClassConceptScores(c, s.gallery_size if src != "random" else 0, src != "random",
                                     self.map_size) for c in members]
            for src, members in found.items()}

    def concepts_state(self) -> dict[str, Tensor]:
        """Every class concept labelling: BROADCAST from rank 0 if the ranks might disagree."""
        return {f"{i}/{src}/{r}": c.labels for i, cfg in enumerate(self.configs)
                for src, members in self.concepts[cfg].items() for r, c in enumerate(members)}

    def load_concepts_state(self, state: Mapping[str, Tensor]) -> None:
        for i, cfg in enumerate(self.configs):
            found = self.concepts[cfg]
            for src, members in found.items():
                for r, c in enumerate(members):
                    c.labels = state[f"{i}/{src}/{r}"].to(c.labels.device).long()
            self._set_concepts(cfg, found)

    # -- scores: from pass 1 (pooled head) or a second pass ------------------------------------
    def score_observed(self, chunk_images: int = 256) -> None:
        """The one pass's scores: every observed batch from its pooled numbers (after
        :meth:`finalise`; random controls only with part masks, as in :meth:`score`),
        consecutive batches together up to ``chunk_images`` images (each class concept's
        channels are then gathered once for many images)."""
        if not self.one_pass:
            raise RuntimeError("score_observed needs a pooled head (and non-negative activations "
                               "with part masks): use score() in a second pass")
        linear = self.pooled_head.linear
        for ob in _chunks(self.batches, chunk_images):
            for cfg, labels in ob.partitions.items():
                for src, scorers in self.scores[cfg].items():
                    if src == "random" and not self.masked:
                        continue
                    for sc in scorers:
                        sc.update_pooled(linear, ob.pooled, labels.long(), ob.classes, ob.index, ob.targets,
                                         ob.keep)

    def gallery_images(self, groups: Sequence[int] | None = None) -> list[int]:
        """The dataset indices shown in the galleries of ``groups`` (None: every group)."""
        found: set[int] = set()
        for _, _, c, sc in self.scored():
            for r, g in enumerate(c.groups):
                if groups is None or g in groups:
                    found.update(int(i) for i in sc.gallery_index[r].flatten().tolist() if i >= 0)
        return sorted(found)

    def fill_gallery_maps(self, activations_of: Callable[[list[int]], Tensor], groups: Sequence[int] | None = None,
                          batch_size: int = 16) -> int:
        """After one pass: the galleries' maps of ``groups`` (None: all), from the
        activations of their images alone: those the NMF sample kept, and for the others
        ``activations_of(indices)`` -> B x C x h x w, called on at most ``batch_size``
        indices at a time. Returns the images recomputed."""
        index = self.gallery_images(groups)
        if self.sample is not None and index:
            known, acts = self.sample.find(index)
            if known:
                for _, _, _, sc in self.scored():
                    sc.fill_maps(torch.tensor(known), acts, groups)
                index = sorted(set(index) - set(known))
        for s in range(0, len(index), batch_size):
            chunk = index[s: s + batch_size]
            a = activations_of(chunk)
            for _, _, _, sc in self.scored():
                sc.fill_maps(torch.tensor(chunk), a, groups)
        return len(index)

    def score(self, head: Callable[[Tensor], Tensor], activations: Tensor, partitions: Mapping[tuple[str, str, int], Tensor],
              classes: Tensor, index: Tensor, targets: Tensor | None = None, masks: Tensor | None = None,
              keep: Tensor | None = None) -> None:
        """Score a batch against the class concepts (random controls only with part masks:
        they are the chance level of the truth table)."""
        self.masked = self.masked or masks is not None
        for cfg, labels in partitions.items():
            for src, scorers in self.scores[tuple(cfg)].items():
                if src == "random" and masks is None:
                    continue
                for sc in scorers:
                    sc.update(head, activations, labels, classes, index, targets, masks, keep)

    def scores_state(self) -> dict[str, Tensor]:
        """Every running score: ALL-GATHER each tensor, split by rank, :meth:`load_scores_states`."""
        return {f"{i}/{src}/{r}/{k}": v for i, cfg in enumerate(self.configs)
                for src, scorers in self.scores[cfg].items() for r, sc in enumerate(scorers)
                for k, v in sc.state().items()}

    def load_scores_states(self, states: Sequence[Mapping[str, Tensor]]) -> None:
        for i, cfg in enumerate(self.configs):
            for src, scorers in self.scores[cfg].items():
                for r, sc in enumerate(scorers):
                    pre = f"{i}/{src}/{r}/"
                    parts = [{k[len(pre):]: v for k, v in st.items() if k.startswith(pre)} for st in states]
                    scorers[r] = ClassConceptScores.merged(sc.concepts, parts, sc.k, sc.stability)

    # -- results ---------------------------------------------------------------------------------
    def scored(self) -> Iterator[tuple[ConceptConfig, str, ClassConcepts, ClassConceptScores]]:
        """(configuration, source, class concepts, their scores): co-association then NMF,
        per configuration (the random controls are only the chance level of :meth:`truth`)."""
        for cfg in self.configs:
            for src in SOURCES_SCORED:
                for c, sc in zip(self.concepts[cfg].get(src, []), self.scores[cfg].get(src, [])):
                    yield cfg, src, c, sc

    def truth(self) -> list[tuple[ConceptConfig, int, str, dict[str, float]]]:
        """Per configuration, group and source, the scores against the parts
        (:func:`~clustercam.explain.concepts.classes.scores.truth_by_group`; empty unless
        :meth:`score` got part masks)."""
        if not self.masked:
            return []
        return [(cfg, g, src, vals) for cfg in self.configs for g, src, vals in truth_by_group(self.scores[cfg])]

    def galleries(self, class_names: Sequence[str] | None = None) -> Iterator[ClassGallery]:
        """Per configuration, source and group: what its gallery figure draws."""
        for cfg, src, c, sc in self.scored():
            summary, counts = sc.summary(), c.counts()
            for r, g in enumerate(c.groups):
                gal = sc.gallery(g)
                what = "co-association" if src == "coassociation" else "NMF"
                yield ClassGallery(g, cfg, src, {
                    "index": gal.index, "maps": gal.maps, "channels": counts[r].tolist(),
                    "stability": summary["stability"][r].tolist(),
                    "importance": summary["importance"][r].tolist(),
                    "importance_std": summary["importance_std"][r].tolist(),
                    "title": f"class {group_name(g, class_names)}: {what} concepts, "
                             f"{cfg.method.upper()} {cfg.algorithm} n={c.n_concepts} ({int(c.n_images[r])} images)"})


def _small(labels: Tensor) -> Tensor:
    """Per-image concept labels in the smallest integer type that holds them (CPU)."""
    labels = labels.detach()
    fits = not labels.numel() or int(labels.max()) < 128
    return labels.to("cpu", torch.int8 if fits else torch.int16)


def _chunks(batches: Sequence[ObservedBatch], size: int) -> Iterator[ObservedBatch]:
    """Consecutive observed batches joined into batches of about ``size`` images."""
    group: list[ObservedBatch] = []
    for i, ob in enumerate(batches):
        group.append(ob)
        if sum(len(o.index) for o in group) >= size or i == len(batches) - 1:
            yield group[0] if len(group) == 1 else _joined(group)
            group = []


def _joined(group: Sequence[ObservedBatch]) -> ObservedBatch:
    def cat(values: list[Tensor | None], n: list[int], fill: bool) -> Tensor | None:
        if all(v is None for v in values):
            return None
        return torch.cat([torch.full((k,), fill) if v is None else v for v, k in zip(values, n)])

    n = [len(o.index) for o in group]
    return ObservedBatch(torch.cat([o.index for o in group]), cat([o.keep for o in group], n, True),
                         torch.cat([o.classes for o in group]),
                         {c: torch.cat([o.partitions[c] for o in group]) for c in group[0].partitions},
                         None if group[0].targets is None else torch.cat([o.targets for o in group]),
                         cat_pooled([o.pooled for o in group]))
