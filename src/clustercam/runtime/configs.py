"""Where clustercam's Hydra configs are, and composing them without the command line.

In a source checkout the top-level ``conf/`` is used (what a developer edits); installed
from a wheel, the copy inside the package (``clustercam/conf``, the same files mapped there
by the build). A user's own configs go on top with ``--config-dir`` or
``hydra.searchpath=[file://<folder>]``.
"""

from __future__ import annotations

import importlib.resources
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clustercam.exceptions import UserError

PACKAGE = "clustercam.conf"


def source_config_dir() -> Path | None:
    """``<checkout>/conf`` when this package runs from a source checkout, else None."""
    root = Path(__file__).resolve().parents[3]
    checkout = (root / "pyproject.toml").is_file() and (root / "src" / "clustercam").is_dir()
    return root / "conf" if checkout and (root / "conf" / "train.yaml").is_file() else None


def config_path() -> str:
    """What ``hydra.main(config_path=...)`` takes: the checkout's folder or ``pkg://clustercam.conf``."""
    src = source_config_dir()
    return str(src) if src is not None else f"pkg://{PACKAGE}"


def config_dir() -> Any:
    """The config folder as a path-like (a ``Path`` or an importlib ``Traversable``)."""
    src = source_config_dir()
    return src if src is not None else importlib.resources.files(PACKAGE)


def experiment_names() -> list[str]:
    """The ``experiment=<name>`` values the package ships."""
    return sorted(p.name.removesuffix(".yaml") for p in config_dir().joinpath("experiment").iterdir()
                  if p.name.endswith(".yaml"))


def compose(overrides: Sequence[str] = (), config_name: str = "train", hydra_config: bool = True,
            output_dir: str | os.PathLike | None = None) -> Any:
    """The composed config, as ``python -m clustercam.train <overrides>`` would see it.

    With ``hydra_config`` the ``hydra`` node is kept and installed as the current Hydra
    config, so ``${hydra:...}`` interpolations resolve (tests, notebooks); the run's folder
    (``hydra.runtime.output_dir``, the default ``paths.output_dir``) is ``output_dir``, or
    the working directory.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    src = source_config_dir()
    init = (initialize_config_dir(config_dir=str(src), version_base="1.3") if src is not None
            else initialize_config_module(config_module=PACKAGE, version_base="1.3"))
    with init:
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=hydra_config)
    if hydra_config:
        from omegaconf import OmegaConf, open_dict

        with open_dict(cfg):  # what a real run sets: its own folder, job 0
            if output_dir is not None or OmegaConf.is_missing(cfg.hydra.runtime, "output_dir"):
                cfg.hydra.runtime.output_dir = str(output_dir or os.getcwd())
            if OmegaConf.is_missing(cfg.hydra.job, "num"):
                cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
    return move_deprecated_keys(cfg)


def move_deprecated_keys(cfg: Any) -> Any:
    """``model.concepts.*`` (before 0.2) -> ``callbacks.concepts.*``, with a warning."""
    old = cfg.get("model", {}).get("concepts") if isinstance(cfg.get("model"), Mapping) else None
    if old is None:
        return cfg
    from omegaconf import open_dict

    with open_dict(cfg):
        moved = {k: v for k, v in old.items() if v is not None}
        del cfg.model["concepts"]
        if moved:
            warnings.warn(
                f"model.concepts.* is deprecated: use callbacks.concepts.* ({sorted(moved)} were "
                "moved there for this run)", FutureWarning, stacklevel=2)
            if "concepts" not in (cfg.get("callbacks") or {}):
                raise UserError("model.concepts.* was set but no concepts callback is configured "
                                 "(callbacks=concepts)")
            for k, v in moved.items():
                cfg.callbacks.concepts[k] = v
    return cfg

