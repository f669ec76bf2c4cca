"""Concepts by clustering a frozen classifier's channels (CGAP / CPHA): extraction, batched
k-means, importance, maps, quality metrics, the Tables 1-2 means, fidelity curves,
localisation against ground-truth parts and the batch pipeline (:func:`run_concepts`, which
returns a :class:`ConceptBatch`), at any layer (:func:`rest_of_network`, a :class:`BatchHead`). The names of methods, algorithms and metrics are in
:mod:`.vocabulary`."""

import warnings
from typing import Any

from clustercam.explain.concepts.checks import (
    DegenerateClusteringWarning,
    NegativeActivationWarning,
)
from clustercam.explain.concepts.image.ablation import BatchHead
from clustercam.explain.concepts.image.batch import ConceptBatch, run_concepts
from clustercam.explain.concepts.image.extract import (
    ConceptClustering,
    SubConcepts,
    cluster_channels,
    concept_counts,
    extract_concepts,
    kept_channels,
    sub_concepts,
)
from clustercam.explain.concepts.image.fidelity import (
    ConceptFidelity,
    PooledHead,
    concept_fidelity,
    concept_order,
    random_partitions,
)
from clustercam.explain.concepts.image.importance import concept_importance, importance_order
from clustercam.explain.concepts.image.kmeans import batched_kmeans, batched_pca
from clustercam.explain.concepts.image.layer import UnreachableLayerWarning, rest_of_network
from clustercam.explain.concepts.image.maps import concept_maps, raw_concept_maps, sub_concept_maps
from clustercam.explain.concepts.image.metrics import clustering_quality, concept_metrics
from clustercam.explain.concepts.image.settings import ConceptSettings
from clustercam.explain.concepts.image.truth import concept_truth, paint_out_drops
from clustercam.explain.concepts.vocabulary import (
    ALGORITHMS,
    BACKENDS,
    CONCEPT_METHODS,
    CONCEPT_METRIC_NAMES,
    IMPORTANCE_TARGETS,
    QUALITY_METRICS,
    ConceptConfig,
)

__all__ = [
    "ALGORITHMS", "BACKENDS", "CONCEPT_METHODS", "CONCEPT_METRIC_NAMES", "IMPORTANCE_TARGETS",
    "QUALITY_METRICS", "BatchHead", "ConceptBatch", "ConceptClustering", "ConceptConfig", "ConceptFidelity",
    "ConceptSettings", "DegenerateClusteringWarning", "NegativeActivationWarning", "PooledHead",
    "SubConcepts", "UnreachableLayerWarning", "batched_kmeans", "batched_pca", "cluster_channels", "clustering_quality",
    "concept_counts", "concept_fidelity", "concept_importance", "concept_maps", "concept_metrics",
    "concept_order", "concept_truth", "extract_concepts", "importance_order", "kept_channels",
    "paint_out_drops", "random_partitions", "raw_concept_maps", "rest_of_network", "run_concepts",
    "sub_concept_maps",
    "sub_concepts",
]

# names of the previous release, kept for one release
_RENAMED = {"METHODS": "CONCEPT_METHODS", "METRICS": "QUALITY_METRICS"}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(f"clustercam.explain.concepts.{name} is renamed {new} and will be removed in "
                      "the next release", DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
