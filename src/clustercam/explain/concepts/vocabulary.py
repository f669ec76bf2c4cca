"""The names of the concept methods, their options and their measurements, each spelled once.

Everything that names a concept method, a clustering algorithm or a metric (the settings'
checks, the batch pipeline, the tables of the outputs contract, the studies) imports it from
here, so a name cannot drift between the code that computes a number and the code that
reads it back.
"""

from __future__ import annotations

from typing import NamedTuple

#: How a channel is described before clustering: CGAP (its activation pattern, PCA to
#: n_concepts - 1 dimensions) or CPHA (the position of its maximum).
CONCEPT_METHODS = ("cgap", "cpha")
#: The clustering algorithms (k-means, Ward agglomerative, Birch, Gaussian mixture).
ALGORITHMS = ("kmeans", "agglomerative", "birch", "gmm")
#: Where k-means runs: batched torch on the activations' device, or scikit-learn per image.
BACKENDS = ("torch", "sklearn")
#: The clustering-quality scores of one image's concepts (the paper's Tables 1-2).
QUALITY_METRICS = ("silhouette", "calinski_harabasz", "davies_bouldin")
#: Every per-image, per-configuration measurement of the clustering: the quality scores and
#: the wall time of the clustering (the ``metrics`` of a concept batch, by these names).
CONCEPT_METRIC_NAMES = (*QUALITY_METRICS, "seconds")
#: Whose probability the importance (eq. 3) ablates: the label class (the paper) or the
#: predicted one.
IMPORTANCE_TARGETS = ("label", "predicted")
#: Which configurations get sub-concepts and maps: the first algorithm and n_concepts of
#: every method, or all of them.
DETAILS = ("first", "all")
#: The two fidelity curves of a concept order, and the areas under them.
CURVES = ("deletion", "insertion")
FIDELITY_AUCS = ("deletion_auc", "insertion_auc")
#: The concept orders of the fidelity curves: by importance (eq. 3) and the two controls.
ORDERS = ("importance", "random_order", "random_groups")
#: Found concepts against random channel partitions of the same sizes (the control).
PARTITIONS = ("concepts", "random")
#: The per-image localisation scores of the concepts against the ground-truth parts.
TRUTH_SCORES = ("pointing", "class_part_mass", "class_part_area", "distractor_mass",
                "parts_separated", "part_purity", "importance_spearman")
#: The input-space check: p_t and its drops with part A, part B or the distractor painted out.
PAINT_COLUMNS = ("p_target", "drop_part_a", "drop_part_b", "drop_distractor")
#: The class-level concept scores against the parts: the best class concept's mean mass on
#: each part, and whether the parts' concepts are the two most important.
CLASS_TRUTH_SCORES = ("part_a_mass", "part_b_mass", "distractor_mass", "parts_in_top2")


class ConceptConfig(NamedTuple):
    """One (method, algorithm, n_concepts) configuration of a concept run.

    A tuple, so ``ConceptConfig("cgap", "kmeans", 5) == ("cgap", "kmeans", 5)`` and either
    finds the same dictionary entry.
    """

    method: str
    algorithm: str
    n_concepts: int

    @property
    def name(self) -> str:
        """``<method>_<algorithm>_n<n_concepts>``, e.g. ``cgap_kmeans_n5``."""
        return f"{self.method}_{self.algorithm}_n{self.n_concepts}"
