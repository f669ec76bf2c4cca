"""Class-level concepts of a whole concept run, as the calls a pipeline or callback makes.

Two passes over the evaluated images (the scores need the class concepts, which need all
images):

1. per batch :meth:`ClassConceptRun.observe` (the per-image partitions of every
   configuration and the activations for the NMF sample); then, once, the DDP reduction
   (:meth:`~ClassConceptRun.counts_state` summed, :meth:`~ClassConceptRun.sample_state`
   gathered) and :meth:`~ClassConceptRun.finalise`;
2. per batch :meth:`ClassConceptRun.score` (the same partitions and activations again);
   then :meth:`~ClassConceptRun.scores_state` gathered, and the results:
   :attr:`~ClassConceptRun.concepts` with :attr:`~ClassConceptRun.scores` (per
   configuration and source), :meth:`~ClassConceptRun.truth` (the scores against the parts)
   and :meth:`~ClassConceptRun.galleries` (what the figures draw).

Every state is a flat dict of tensors, so a callback reduces it with its strategy; in one
process the reductions are skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
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
)
from clustercam.explain.concepts.classes.nmf import NMFSample, nmf_concepts
from clustercam.explain.concepts.classes.scores import ClassConceptScores, truth_by_group
from clustercam.explain.concepts.vocabulary import ConceptConfig

SOURCES_SCORED = ("coassociation", "nmf")  # the sources with rows and galleries (random: a control)


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

    ``n_channels``/``n_classes``: of the classifier; ``map_size``: the activation map size
    (h, w), needed under DDP so that empty ranks have states of the right shape.

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
    """

    def __init__(self, settings: ClassConceptSettings, configs: Sequence[tuple[str, str, int]], n_channels: int,
                 n_classes: int, map_size: Sequence[int] | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.settings, self.configs = settings, [ConceptConfig(*c) for c in configs]
        self.n_channels, self.map_size = int(n_channels), None if map_size is None else tuple(map_size)
        self.co = {c: CoAssociation(n_channels, n_classes, settings.scope, device) for c in self.configs}
        self.sample = (NMFSample(settings.nmf_max_images, settings.seed, settings.scope)
                       if settings.nmf_max_images else None)
        self.concepts: dict[ConceptConfig, dict[str, list[ClassConcepts]]] = {}
        self.scores: dict[ConceptConfig, dict[str, list[ClassConceptScores]]] = {}
        self.masked = False

    # -- pass 1 ----------------------------------------------------------------------------------
    def observe(self, activations: Tensor, partitions: Mapping[tuple[str, str, int], Tensor], classes: Tensor,
                index: Tensor, keep: Tensor | None = None) -> None:
        """Add a batch: its activations (NMF sample) and every configuration's B x C labels."""
        for cfg, labels in partitions.items():
            self.co[tuple(cfg)].update(labels, classes, keep)
        if self.sample is not None:
            self.sample.update(activations, classes, index, keep)

    def counts_state(self) -> dict[str, Tensor]:
        """The co-association counts: SUM each tensor over ranks, then :meth:`load_counts_state`."""
        return {f"{i}/{k}": v for i, c in enumerate(self.configs) for k, v in self.co[c].state().items()}

    def load_counts_state(self, state: Mapping[str, Tensor]) -> None:
        for i, c in enumerate(self.configs):
            part = {k.split("/", 1)[1]: v for k, v in state.items() if k.split("/", 1)[0] == str(i)}
            self.co[c] = CoAssociation.from_state(part, self.settings.scope)

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

    def finalise(self, class_names: Sequence[str] | None = None) -> None:
        """Class concepts of every configuration (co-association, NMF, random controls)."""
        s = self.settings
        nmf: dict[tuple, ClassConcepts] = {}  # NMF sees the sample, not the partitions: once per shape
        for cfg in self.configs:
            cc = self.co[cfg].finalise(s.n_for(cfg[2]), s.min_presence, class_names)
            found = {"coassociation": [cc]}
            if self.sample is not None:
                key = (tuple(cc.groups), cc.n_concepts, tuple(cc.n_images.tolist()))
                if key not in nmf:
                    nmf[key] = nmf_concepts(self.sample, cc, s.seed, class_names=class_names)
                n = nmf[key]
                found["nmf"] = [ClassConcepts(list(n.groups), n.labels.clone(), n.n_concepts,
                                              n.n_images.clone(), source="nmf")]
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

    # -- pass 2 ----------------------------------------------------------------------------------
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
