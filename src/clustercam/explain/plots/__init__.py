"""Figures from tensors, with no trainer and no logger.

Grad-CeAM (paper Fig. 7-11), concepts (concepts paper Fig. 3-6; over time for series:
:mod:`clustercam.explain.plots.series_concepts`) and the scores' curves.
"""

from clustercam.explain.plots.concepts import blend, concept_figure, grayscale, sub_concept_figure
from clustercam.explain.plots.gradceam import (
    cluster_members_figure,
    explanation_figures,
    sample_all_clusters_figure,
)
from clustercam.explain.plots.scores import curves_figure
from clustercam.explain.plots.series_concepts import (
    series_concept_figure,
    series_sub_concept_figure,
)

__all__ = [
    "blend", "cluster_members_figure", "concept_figure", "curves_figure", "explanation_figures",
    "grayscale", "sample_all_clusters_figure", "series_concept_figure", "series_sub_concept_figure",
    "sub_concept_figure",
]
