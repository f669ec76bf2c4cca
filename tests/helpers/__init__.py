"""Shared test fixtures and runners: where the repository and the shared data are, a CLI
runner (subprocess) and an in-process runner (the training function itself)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
IMAGENET11 = SHARED / "data" / "imagenet-11"
