"""``ckpt_path=<file>`` is checked before the run starts, so a wrong file ends the run with one
line naming the file and what is wrong (not torch's unpickling traceback minutes in):
missing, not a Lightning checkpoint, a checkpoint of another model (keys or shapes that do
not fit), or one whose weights are NaN (saved by a diverged run). Lightning's own names
(``last``, ``best``, ``hpc``, ``registry``) are resolved by Lightning and pass through.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clustercam.exceptions import CheckpointError, MissingCheckpointError

LIGHTNING_NAMES = ("last", "best", "hpc", "registry")


def _fail(path: Path | str, what: str) -> CheckpointError:
    return CheckpointError(f"ckpt_path={str(path)!r} {what}")


def _legacy_heads() -> tuple[bytes, ...]:
    """How a legacy (pre-zip) ``torch.save`` file starts: its magic number, pickled with
    protocol 2 (torch's default) to 5."""
    import pickle

    return tuple(pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=p) for p in (2, 3, 4, 5))


def torch_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a file of ``torch.save`` (its zip format, or the legacy pickle
    that starts with torch's magic number), or None: so that random bytes get one line, not
    torch's unpickling error and its ``weights_only`` advice (a pickle's first byte alone,
    0x80, is one random file in 256)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(32)
    if zipfile.is_zipfile(path) or head.startswith(_legacy_heads()):
        return None
    size = path.stat().st_size
    return (f"{size} bytes that are neither torch's zip format nor a pickle (a damaged or "
            "unrelated file?)")


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """The Lightning checkpoint at ``ckpt_path`` (loaded as Lightning loads it: ``weights_only``).

    Raises:
        CheckpointError: the file is missing, not a torch file, or holds no ``state_dict``.
    """
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        return_hint = ("give a Lightning checkpoint file (<run>/checkpoints/last.ckpt), "
                       "ckpt_path=last to resume the run in paths.output_dir, or leave it null")
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise MissingCheckpointError(f"ckpt_path={str(ckpt_path)!r} {what}: {return_hint}")
    problem = torch_file_problem(path)
    if problem:
        raise _fail(ckpt_path, f"is not a Lightning checkpoint: {problem}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reason torch gives becomes one line
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise _fail(ckpt_path, f"cannot be read by torch.load ({first.strip()[:200]})") from None
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        what = f"a {type(ckpt).__name__}" + (f" with keys {sorted(map(str, ckpt))[:5]}"
                                             if isinstance(ckpt, Mapping) else "")
        raise _fail(ckpt_path, f"is not a Lightning checkpoint (it holds {what}, no 'state_dict'); "
                               "weights of a bare network go in model.checkpoint_path")
    return dict(ckpt)


def state_dict_mismatch(state: Mapping[str, Any], model: nn.Module, keys: bool = True) -> str | None:
    """How ``state`` does not fit ``model``: keys missing from it or unknown to the model
    (``keys``), and shapes that differ; None when it fits. The one check behind both a
    ``ckpt_path`` and a weights file (:func:`clustercam.models.timm_weights.load_weights_file`)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state] if keys else []
    unexpected = [k for k in state if k not in own] if keys else []
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}" for k, v in own.items()
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} model keys missing from the file (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} file keys the model does not have (e.g. {unexpected[:3]})")
    if shapes:
        parts.append(f"{len(shapes)} shapes differ ({'; '.join(shapes[:3])})")
    return ", ".join(parts) or None


def check_checkpoint(ckpt_path: str | Path | None, model: nn.Module | None = None) -> None:
    """Check ``ckpt_path`` before the run: it exists and, given the run's ``model``, is a
    Lightning checkpoint whose weights fit it and are finite.

    Args:
        ckpt_path: the ``ckpt_path`` setting (a file, one of Lightning's names, or None).
        model: the LightningModule about to be trained or tested (None: existence only).

    A model may name what is wrong more precisely: its ``check_checkpoint(checkpoint)`` runs
    first (DCEC: an autoencoder's checkpoint goes in ``model.pretrained``).

    Raises:
        CheckpointError: one line naming the file and what is wrong.
    """
    if ckpt_path is None or str(ckpt_path) in LIGHTNING_NAMES:
        return
    if model is None:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            read_checkpoint(path)  # the missing-file message
        return
    ckpt = read_checkpoint(ckpt_path)
    own_check = getattr(model, "check_checkpoint", None)
    if callable(own_check):
        own_check(ckpt)
    state = ckpt["state_dict"]
    mismatch = state_dict_mismatch(state, model, keys=getattr(model, "strict_loading", True))
    if mismatch:
        raise _fail(ckpt_path, f"is a checkpoint of another model: {mismatch}. Use the model "
                               "settings (model=..., model.net.*) it was trained with")
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise _fail(ckpt_path, f"holds NaN or infinite weights in {len(bad)} tensors (e.g. "
                               f"{bad[:3]}): saved by a diverged run? Use an earlier checkpoint")
