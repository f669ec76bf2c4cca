"""Scoring cluster maps: faithfulness (deletion / insertion) and localisation against masks.

The maps come from a registry of map methods (baselines, Grad-CeAM targets, peers);
:func:`score_explanations` runs the whole comparison.
"""

from clustercam.explain.baselines import BASELINES, gaussian_blur, make_baseline
from clustercam.explain.scores.curves import (
    PerturbationCurves,
    curve_auc,
    deletion_insertion,
    mean_curves,
    position_ranks,
    step_counts,
    summarise_curves,
)
from clustercam.explain.scores.localisation import (
    localisation_scores,
    mask_auroc,
    pointing_game,
    quantus_localisation,
    relevance_mass,
)
from clustercam.explain.scores.methods import (
    DEFAULT_MAP_METHODS,
    MAP_METHODS,
    MapRequest,
    activation_maps,
    explanation_maps,
    gradceam_method,
    random_maps,
    register_method,
    resolve_methods,
    smooth_random_maps,
)
from clustercam.explain.scores.report import (
    LOCALISATION_COLUMNS,
    SCORES_COLUMNS,
    ScoreReport,
    score_explanations,
    scores_table,
    typical_temperature,
)
from clustercam.explain.scores.settings import ScoreSettings

__all__ = [
    "BASELINES", "DEFAULT_MAP_METHODS", "LOCALISATION_COLUMNS", "MAP_METHODS", "SCORES_COLUMNS",
    "MapRequest", "PerturbationCurves", "ScoreReport", "ScoreSettings", "activation_maps", "curve_auc", "deletion_insertion",
    "explanation_maps", "gaussian_blur", "gradceam_method", "localisation_scores",
    "make_baseline", "mask_auroc", "mean_curves", "pointing_game", "position_ranks",
    "quantus_localisation", "random_maps", "register_method", "relevance_mass",
    "resolve_methods", "score_explanations", "scores_table", "smooth_random_maps", "step_counts",
    "summarise_curves", "typical_temperature",
]
