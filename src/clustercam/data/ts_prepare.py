"""From stored series to the model's input: missing values filled, one length for both
splits, every channel of every series z-normalised on its own.

- **Missing values** (NaN inside a series; ``?`` in ``.ts`` files): ``missing="interpolate"``
  (default) fills them linearly from the neighbouring observed values of the same channel
  (the nearest observed value before the first or after the last one); ``"error"`` refuses.
- **Variable length** (JapaneseVowels, the UCR sets padded with NaN): ``variable_length=``
  ``resample`` (default) stretches every series linearly to the longest length over both
  splits; ``pad`` appends zeros (the channel mean after z-normalisation) up to the longest;
  ``truncate`` keeps the first L_min steps, the shortest length; ``error`` refuses.
- **z-normalisation**: each channel of each series to zero mean and unit variance over its
  own steps (the UCR and UEA convention: channels have unrelated units); a constant channel
  becomes zeros. It runs after resampling or truncation and before padding.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from clustercam.data.ts_files import SeriesSplit
from clustercam.exceptions import UserError

log = logging.getLogger(__name__)

VARIABLE_LENGTH = ("resample", "pad", "truncate", "error")
MISSING = ("interpolate", "error")


def znormalise(x: np.ndarray) -> np.ndarray:
    """Each series (and channel) to zero mean, unit variance along the last axis; constant
    series become zeros."""
    mean = x.mean(-1, keepdims=True)
    std = x.std(-1, keepdims=True)
    return np.where(std > 0, (x - mean) / np.where(std > 0, std, 1.0), 0.0)


def interpolate_missing(series: np.ndarray) -> np.ndarray:
    """A C x L series with its NaN filled linearly per channel (an all-NaN channel: zeros)."""
    out = series.copy()
    t = np.arange(series.shape[1])
    for c in range(series.shape[0]):
        seen = np.isfinite(series[c])
        if not seen.any():
            out[c] = 0.0
        elif not seen.all():
            out[c, ~seen] = np.interp(t[~seen], t[seen], series[c, seen])
    return out


def resample_linear(series: np.ndarray, length: int) -> np.ndarray:
    """A C x L series linearly interpolated to C x ``length`` (same first and last value)."""
    n = series.shape[1]
    if n == length:
        return series
    if n == 1:
        return np.repeat(series, length, axis=1)
    t_new = np.linspace(0, n - 1, length)
    return np.stack([np.interp(t_new, np.arange(n), ch) for ch in series])


def check_channels(splits: Mapping[str, SeriesSplit]) -> int:
    """The one channel count C of every series of every split, or a ValueError naming the
    file and row (or the two files) that disagree."""
    counts = {}
    for name, split in splits.items():
        if not len(split):
            raise UserError(f"{split.where} holds no series")
        c = split.channels
        for i, s in enumerate(split.series):
            if s.ndim != 2 or s.shape[0] != c:
                raise UserError(f"{split.row(i)} has {s.shape[0] if s.ndim == 2 else '?'} channels "
                                 f"but row 1 has {c}")
        counts[name] = c
    if len(set(counts.values())) > 1:
        parts = [f"{splits[k].where} has {c} channel{'s' * (c != 1)}" for k, c in counts.items()]
        raise UserError("the splits have different dimensions: " + "; ".join(parts))
    return next(iter(counts.values()))


def _fill(split: SeriesSplit, missing: str) -> tuple[list[np.ndarray], int]:
    out, filled = [], 0
    for i, s in enumerate(split.series):
        if s.shape[1] == 0 or not np.isfinite(s).any():
            raise UserError(f"{split.row(i)} has no observed values")
        bad = ~np.isfinite(s)
        if bad.any():
            if missing == "error":
                c, t = np.argwhere(bad)[0]
                raise UserError(f"{split.row(i)} has a missing value (channel {c + 1}, step {t + 1}); "
                                 "set data.missing=interpolate to fill missing values linearly")
            filled += int(bad.sum())
            s = interpolate_missing(s)
        out.append(s)
    return out, filled


def prepare_splits(
    splits: Mapping[str, SeriesSplit], variable_length: str = "resample", missing: str = "interpolate",
    name: str = "dataset",
) -> dict[str, np.ndarray]:
    """N x C x L float32 arrays, one length for all splits, as the module docstring says;
    each step it took is logged."""
    if variable_length not in VARIABLE_LENGTH:
        raise UserError(f"unknown variable_length {variable_length!r}; choose one of {VARIABLE_LENGTH}")
    if missing not in MISSING:
        raise UserError(f"unknown missing {missing!r}; choose one of {MISSING}")
    check_channels(splits)
    filled = {k: _fill(s, missing) for k, s in splits.items()}
    n_missing = sum(f for _, f in filled.values())
    if n_missing:
        log.warning("%s: %d missing values filled by linear interpolation (data.missing=interpolate)",
                    name, n_missing)
    lengths = {k: np.array([s.shape[1] for s in series]) for k, (series, _) in filled.items()}
    lo = min(int(v.min()) for v in lengths.values())
    hi = max(int(v.max()) for v in lengths.values())
    out: dict[str, np.ndarray] = {}
    if lo == hi:
        for k, (series, _) in filled.items():
            out[k] = znormalise(np.stack(series)).astype(np.float32)
        return out
    if variable_length == "error":
        k_lo = next(k for k, v in lengths.items() if v.min() == lo)
        k_hi = next(k for k, v in lengths.items() if v.max() == hi)
        raise UserError(
            f"{name} has series of different lengths ({lo} to {hi}: {splits[k_lo].row(int(np.argmin(lengths[k_lo])))} "
            f"has {lo}, {splits[k_hi].row(int(np.argmax(lengths[k_hi])))} has {hi}); set "
            "data.variable_length=resample|pad|truncate"
        )
    target = lo if variable_length == "truncate" else hi
    verb = {"resample": "resampled linearly to", "pad": "zero-padded at the end to",
            "truncate": "truncated to the shortest,"}[variable_length]
    log.info("%s: variable-length series (lengths %d to %d over %s) %s length %d "
             "(data.variable_length=%s)", name, lo, hi, " and ".join(splits), verb, target, variable_length)
    for k, (series, _) in filled.items():
        arr = np.zeros((len(series), series[0].shape[0], target))
        for i, s in enumerate(series):
            if variable_length == "resample":
                arr[i] = znormalise(resample_linear(s, target))
            elif variable_length == "truncate":
                arr[i] = znormalise(s[:, :target])
            else:
                arr[i, :, : s.shape[1]] = znormalise(s)
        out[k] = arr.astype(np.float32)
    return out
