"""The methods and their pipelines: plain torch (+ scikit-learn) functions on any ``nn.Module``.

Nothing here imports Lightning, Hydra or W&B: a notebook gets everything a callback gets.

Every cluster explanation takes ``(encoder, target_layer, x, centroids, *, clusters=None,
<options>)`` (``target_layer=None`` where a method explains the input); a pipeline's options
are one settings object (:class:`ClusterExplainSettings`, :class:`ScoreSettings`) or keyword
options naming its fields.

- Grad-CeAM (:mod:`.gradceam`): :func:`grad_ceam` with a :class:`GradCeAMTarget` (or the
  name of one), :func:`cardinality`, and :func:`explain_clusters` for a clustered split.
- Concepts (:mod:`.concepts`): :func:`extract_concepts`, :func:`concept_importance`,
  :func:`concept_maps`, and :func:`run_concepts` for a batch of activations (a
  :class:`ConceptBatch`).
- Peers: :func:`neon` (NEON, LRP of the neuralized k-means, :mod:`.evidence`; zennit),
  :func:`clam` (CLAM: Score-CAM on the Student-t soft assignment) and :func:`cluster_target`
  (:mod:`.attribution`: a cluster score module for captum & co., with its integrated
  gradients, occlusion and gradient SHAP maps).
- Deep clustering (DEC / IDEC / DCEC): :func:`student_t_assignment` (q) and
  :func:`target_distribution` (P) in :mod:`.assignments`.
- Scores (:mod:`.scores`): :func:`score_explanations` (deletion / insertion, localisation).
- Shared: :mod:`.maps` (resize, normalise, smooth), :mod:`.assignments`, :mod:`.baselines`,
  :mod:`.clustering` (k-means and NMI / ARI / accuracy), :mod:`.hooks`, :mod:`.plots`.
"""

from clustercam.explain.assignments import student_t_assignment, target_distribution
from clustercam.explain.attribution import cluster_target
from clustercam.explain.clam import CLAMResult, clam
from clustercam.explain.clustering import KMeansResult, clustering_scores, fit_kmeans
from clustercam.explain.concepts import (
    ConceptBatch,
    ConceptConfig,
    ConceptSettings,
    concept_importance,
    concept_maps,
    extract_concepts,
    run_concepts,
)
from clustercam.explain.gradceam import (
    ASSIGNMENT,
    GRADCEAM_TARGET_NAMES,
    PAPER,
    REFERENCE,
    CardinalityResult,
    ClusterExplainSettings,
    ClusterExplanation,
    GradCeAMResult,
    GradCeAMTarget,
    cardinality,
    centroid_weights,
    explain_clusters,
    grad_ceam,
)
from clustercam.explain.neon import NEONResult, neon
from clustercam.explain.scores import ScoreReport, ScoreSettings, score_explanations

__all__ = [
    "ASSIGNMENT", "GRADCEAM_TARGET_NAMES", "PAPER", "REFERENCE", "CLAMResult", "CardinalityResult",
    "ClusterExplainSettings", "ClusterExplanation", "ConceptBatch", "ConceptConfig", "ConceptSettings", "GradCeAMResult",
    "GradCeAMTarget", "KMeansResult", "NEONResult", "ScoreReport", "ScoreSettings", "cardinality",
    "centroid_weights", "clam", "cluster_target", "clustering_scores", "concept_importance",
    "concept_maps", "explain_clusters", "extract_concepts", "fit_kmeans", "grad_ceam", "neon",
    "run_concepts", "score_explanations", "student_t_assignment", "target_distribution",
]
