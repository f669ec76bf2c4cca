"""Localisation of maps against ground-truth masks: pointing game, relevance mass, AUROC.

For synthetic data whose discriminative region is known. Why our own code rather than
Quantus (checked against quantus 0.6, see :func:`quantus_localisation` and the tests): its
``PointingGame`` counts a hit when *any* of several tied maxima lies in the mask (a
constant map always "hits") and returns booleans, so an empty mask comes back as ``True``
instead of NaN; its ``RelevanceMassAccuracy`` does not clip negative map values. Ours are
vectorised, give NaN for undefined cases and score ties at their expected value.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor, nn

from clustercam.exceptions import UserError


def _flat(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    m = torch.as_tensor(maps).double()
    s = torch.as_tensor(masks)
    if m.shape != s.shape:
        raise UserError(f"maps {tuple(m.shape)} and masks {tuple(s.shape)} must have one shape")
    if m.dim() < 2:
        raise UserError(f"maps must be N x spatial, got shape {tuple(m.shape)}")
    return m.flatten(1), s.flatten(1).bool()


def pointing_game(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> Tensor:
    """The pointing game (Zhang et al. 2018): is the map's maximum inside the mask?

    When several positions tie for the maximum, the score is the share of them inside the
    mask (the expected hit under random tie-breaking), so a constant map scores the mask's
    coverage, i.e. chance.

    Args:
        maps: N x spatial.
        masks: N x spatial, bool (or 0 / 1).

    Returns:
        N scores (float64): 1.0 or 0.0 without ties; NaN for an empty mask.

    Raises:
        UserError: maps and masks of different shapes, or maps that are not N x spatial.

    Example:
        >>> import torch
        >>> from clustercam.explain.scores import pointing_game
        >>> masks = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0]])
        >>> pointing_game(torch.tensor([[0.0, 0.9, 0.1, 0.0], [0.5, 0.5, 0.5, 0.5]]), masks)
        tensor([1.0000, 0.5000], dtype=torch.float64)
    """
    m, s = _flat(maps, masks)
    top = m == m.max(1, keepdim=True).values
    hit = (top & s).sum(1).double() / top.sum(1).double()
    return torch.where(s.any(1), hit, math.nan)


def relevance_mass(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> Tensor:
    """Relevance mass (Arras et al. 2022): the share of the map inside the mask.

    Negative map values are clipped to 0 first.

    Args:
        maps: N x spatial.
        masks: N x spatial, bool (or 0 / 1).

    Returns:
        N shares in [0, 1] (float64); NaN for an empty mask or a map with no positive value.

    Raises:
        UserError: maps and masks of different shapes, or maps that are not N x spatial.

    Example:
        >>> import torch
        >>> from clustercam.explain.scores import relevance_mass
        >>> relevance_mass(torch.tensor([[0.0, 3.0, 1.0, -2.0]]), torch.tensor([[0, 1, 0, 0]]))
        tensor([0.7500], dtype=torch.float64)
    """
    m, s = _flat(maps, masks)
    m = m.clamp_min(0)
    total = m.sum(1)
    inside = (m * s).sum(1)
    ok = (total > 0) & s.any(1)
    return torch.where(ok, inside / total.clamp_min(torch.finfo(total.dtype).tiny), math.nan)


def mask_auroc(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> Tensor:
    """AUROC of the map values as a detector of the mask's positions, per sample (0.5 = chance).

    scikit-learn's ``roc_auc_score``.

    Args:
        maps: N x spatial.
        masks: N x spatial, bool (or 0 / 1).

    Returns:
        N values in [0, 1] (float64); NaN (and one ``RuntimeWarning``) for masks that are all
        0 or all 1.

    Raises:
        UserError: maps and masks of different shapes, or maps that are not N x spatial.
    """
    from sklearn.metrics import roc_auc_score

    m, s = _flat(maps, masks)
    out = torch.full((m.shape[0],), math.nan, dtype=torch.float64)
    covered = s.sum(1)
    valid = (covered > 0) & (covered < s.shape[1])
    m_np, s_np = m.numpy(), s.numpy()
    for i in valid.nonzero().flatten().tolist():
        out[i] = float(roc_auc_score(s_np[i], m_np[i]))
    bad = int((~valid).sum())
    if bad:
        warnings.warn(
            f"{bad} masks are all 0 or all 1: their AUROC is undefined (NaN)", RuntimeWarning,
            stacklevel=2,
        )
    return out


def _nanmean(v: Tensor) -> float:
    ok = ~torch.isnan(v)
    return float(v[ok].mean()) if ok.any() else math.nan


def localisation_scores(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> dict[str, float]:
    """Mean pointing game, relevance mass and AUROC over the samples (NaNs skipped).

    Args:
        maps: N x spatial.
        masks: N x spatial, bool (or 0 / 1).

    Returns:
        ``{"pointing_game", "relevance_mass", "auroc", "mask_fraction", "n_samples"}``;
        ``mask_fraction``, the mean mask coverage, is the chance level of the first two (a
        uniform map scores it).

    Raises:
        UserError: maps and masks of different shapes, or maps that are not N x spatial.
    """
    _, s = _flat(maps, masks)
    return {
        "pointing_game": _nanmean(pointing_game(maps, masks)),
        "relevance_mass": _nanmean(relevance_mass(maps, masks)),
        "auroc": _nanmean(mask_auroc(maps, masks)),
        "mask_fraction": float(s.double().mean()),
        "n_samples": int(s.shape[0]),
    }


def quantus_localisation(
    maps: Tensor | np.ndarray, masks: Tensor | np.ndarray, model: nn.Module | None = None
) -> dict[str, np.ndarray]:
    """The same three localisation scores from Quantus, per sample, for cross-checks.

    Quantus's ``PointingGame``, ``RelevanceMassAccuracy`` and ``AUC``. Maps are clipped at 0
    and not renormalised (``normalise=False``, ``abs=False``). Quantus's pointing game
    counts any tied maximum in the mask as a hit and gives ``True`` for an empty mask.

    Args:
        maps: N x spatial.
        masks: N x spatial, bool (or 0 / 1).
        model: not used by these metrics (the maps are given); pass a
            :class:`~clustercam.explain.cluster_scores.ClusterScoreModel` if a Quantus
            version insists on one.

    Returns:
        ``{"pointing_game", "relevance_mass", "auroc"}``, N values each.
    """
    import quantus

    m = torch.as_tensor(maps).double().clamp_min(0).numpy()
    s = torch.as_tensor(masks).double().numpy()
    a_batch = m[:, None].astype(np.float32)
    s_batch = s[:, None].astype(np.float32)
    x_batch = np.zeros_like(a_batch)
    y_batch = np.zeros(len(m), dtype=np.int64)
    kwargs = {"model": model, "x_batch": x_batch, "y_batch": y_batch, "a_batch": a_batch,
              "s_batch": s_batch, "channel_first": True, "device": "cpu"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pg = quantus.PointingGame(disable_warnings=True)(**kwargs)
        rm = quantus.RelevanceMassAccuracy(disable_warnings=True, normalise=False, abs=False)(**kwargs)
        auc = quantus.AUC(disable_warnings=True, normalise=False, abs=False)(**kwargs)
    return {
        "pointing_game": np.asarray(pg, dtype=np.float64),
        "relevance_mass": np.asarray(rm, dtype=np.float64),
        "auroc": np.asarray(auc, dtype=np.float64),
    }
