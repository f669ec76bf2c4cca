"""Running ``clustercam.train.main`` in this process, as the command line does (Hydra's
``@hydra.main`` reads ``sys.argv``): the loggers' preparation, the run, the files handed to
them and the report, without an interpreter start."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TINY = ["experiment=trace", "trainer.max_epochs=1", "data.max_samples=30", "print_config=false"]


def run_main(monkeypatch: pytest.MonkeyPatch, out: Path, *overrides: str) -> None:
    """``clustercam-train <overrides>`` with its outputs (and Hydra's) in ``out``."""
    import torch

    from clustercam.train import main

    monkeypatch.setattr(sys, "argv", ["clustercam-train", *overrides, f"paths.output_dir={out}",
                                      f"hydra.run.dir={out}"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cwd, deterministic = os.getcwd(), torch.are_deterministic_algorithms_enabled()
    try:
        main()
    finally:
        os.chdir(cwd)
        torch.use_deterministic_algorithms(deterministic)
