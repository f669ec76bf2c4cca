"""Concepts by clustering a frozen classifier's channels (CGAP / CPHA): extraction, batched
k-means, importance, maps, quality metrics, the Tables 1-2 summary, fidelity curves,
localisation against ground-truth parts and the batch pipeline."""

from clustercam.explain.concepts.checks import (
    ALGORITHMS,
    BACKENDS,
    METHODS,
    METRICS,
    DegenerateClusteringWarning,
    NegativeActivationWarning,
)
from clustercam.explain.concepts.image.batch import (
    ConceptSettings,
    ConceptTables,
    concept_results,
    concept_tables,
    run_concepts,
)
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
from clustercam.explain.concepts.image.maps import concept_maps, raw_concept_maps, sub_concept_maps
from clustercam.explain.concepts.image.metrics import clustering_quality, concept_metrics
from clustercam.explain.concepts.image.truth import concept_truth, paint_out_drops

__all__ = [
    "ALGORITHMS", "BACKENDS", "METHODS", "METRICS", "ConceptClustering", "ConceptFidelity",
    "ConceptSettings", "PooledHead", "concept_fidelity", "concept_order", "concept_truth",
    "paint_out_drops", "random_partitions",
    "ConceptTables", "DegenerateClusteringWarning", "NegativeActivationWarning", "SubConcepts",
    "batched_kmeans", "batched_pca", "cluster_channels", "clustering_quality", "concept_counts",
    "concept_importance", "concept_maps", "concept_metrics", "concept_results", "concept_tables",
    "extract_concepts", "importance_order", "kept_channels", "raw_concept_maps", "run_concepts",
    "sub_concept_maps", "sub_concepts",
]
