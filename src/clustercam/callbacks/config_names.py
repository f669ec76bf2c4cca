"""Config keys renamed in 0.2, accepted for one release with a warning.

The yaml keeps each old name as ``null`` (not given), so an old override such as
``callbacks.cluster_explain.mode=paper`` still composes and reaches the settings under its
new name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clustercam.explain.deprecation import renamed_parameters
from clustercam.explain.gradceam import ClusterExplainSettings
from clustercam.explain.settings import with_options

OLD_CLUSTER_EXPLAIN_NAMES = {"mode": "target", "compare_modes": "compare_targets",
                             "cardinality_normalise": "normalise", "chunk_size": "batch_size"}


@renamed_parameters(owner="callbacks.cluster_explain", config=True, **OLD_CLUSTER_EXPLAIN_NAMES)
def cluster_explain_settings(settings: ClusterExplainSettings | Mapping[str, Any] | None,
                             **options: Any) -> ClusterExplainSettings:
    """``settings`` with the options on top, old option names renamed (with a warning)."""
    return with_options(ClusterExplainSettings, settings, options, "callbacks.cluster_explain")
