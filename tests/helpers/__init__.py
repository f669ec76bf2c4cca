"""Shared test fixtures and runners: where the repository is, the one place that names data
outside it (the shared photos), tiny image folders made on the spot, a CLI runner
(subprocess) and an in-process runner (the training function itself)."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Eleven real ImageNet photos, one per class of the concepts paper, kept beside the
# repository (not in it: they are not ours to ship). The only data a test reads from outside
# the repository: a test that needs real photos says why and skips when they are absent.
IMAGENET11 = REPO.parent / "shared" / "data" / "imagenet-11"


def _absent(why: str) -> str:
    return f"needs the shared ImageNet photos at {IMAGENET11} ({why}); they are absent here"


def needs_imagenet11(why: str) -> pytest.MarkDecorator:
    """A skip mark for tests that need the shared photos; ``why`` says what for."""
    return pytest.mark.skipif(not IMAGENET11.is_dir(), reason=_absent(why))


def require_imagenet11(why: str) -> Path:
    """The shared photos' folder, or skip the calling test (or fixture) saying why it needs it."""
    if not IMAGENET11.is_dir():
        pytest.skip(_absent(why))
    return IMAGENET11


def synset_folder(root: Path, per_class: int = 2) -> Path:
    """A tiny ImageFolder of two ImageNet synsets (random RGB images of 40 x 30), for tests
    that need some images in the ImageNet layout but not real photos."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for synset in ("n01440764", "n03417042"):  # tench, garbage truck
        (root / synset).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / synset / f"img{i}.JPEG")
    return root
