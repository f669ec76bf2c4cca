"""The concept callback takes the explain-level settings (built by Hydra with ``_target_``) or
their fields as keyword options; the checks are the settings' own."""

from __future__ import annotations

import pytest

from clustercam.callbacks.concept_explain import ConceptExplainCallback
from clustercam.exceptions import UserError
from clustercam.explain.concepts import ConceptSettings


def test_the_callback_takes_the_settings_object_or_its_fields(tmp_path) -> None:
    given = ConceptSettings(n_concepts=[3, 4], fidelity=False)
    assert ConceptExplainCallback(tmp_path, given).settings is given
    assert ConceptExplainCallback(tmp_path, n_concepts=[3, 4], fidelity=False).settings == given
    with pytest.raises(UserError, match="not both"):
        ConceptExplainCallback(tmp_path, given, n_concepts=3)
    with pytest.raises(UserError, match=r"unknown concept settings \['n_concept'\]"):
        ConceptExplainCallback(tmp_path, n_concept=3)
