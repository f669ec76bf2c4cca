"""Grad-CeAM: targets (what is differentiated), the maps, the cardinality table, the pipeline."""

from clustercam.explain.gradceam.cardinality import (
    CardinalityResult,
    amplification_weights,
    cardinality,
)
from clustercam.explain.gradceam.cluster_explanation import (
    ClusterExplainSettings,
    ClusterExplanation,
    cardinality_summary,
    explain_clusters,
    select_members,
)
from clustercam.explain.gradceam.gradceam import GradCeAMResult, grad_ceam
from clustercam.explain.gradceam.targets import (
    ASSIGNMENT,
    GRADCEAM_TARGET_NAMES,
    GRADCEAM_TARGETS,
    PAPER,
    REFERENCE,
    GradCeAMTarget,
    assignment_loss,
    assignment_target,
    centroid_weights,
    paper_loss,
    reference_loss,
    resolve_target,
)

__all__ = [
    "ASSIGNMENT", "GRADCEAM_TARGETS", "GRADCEAM_TARGET_NAMES", "PAPER", "REFERENCE",
    "CardinalityResult", "ClusterExplainSettings", "ClusterExplanation", "GradCeAMResult",
    "GradCeAMTarget", "amplification_weights", "assignment_loss", "assignment_target",
    "cardinality", "cardinality_summary", "centroid_weights", "explain_clusters", "grad_ceam",
    "paper_loss", "reference_loss", "resolve_target", "select_members",
]
