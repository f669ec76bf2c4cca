"""The methods: plain torch (+ scikit-learn) functions, usable on any ``nn.Module``.

Nothing in this package imports Lightning or Hydra.
"""

from clustercam.explain.cardinality import CardinalityResult, cardinality
from clustercam.explain.concepts import concept_importance, concept_maps, extract_concepts
from clustercam.explain.gradceam import GradCeAMResult, centroid_weights, grad_ceam

__all__ = [
    "CardinalityResult",
    "GradCeAMResult",
    "cardinality",
    "centroid_weights",
    "concept_importance",
    "concept_maps",
    "extract_concepts",
    "grad_ceam",
]
