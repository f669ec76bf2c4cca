"""Parts: images whose class is a *pair* of shapes, with a mask per part (ground truth for concepts).

Each RGB image (3 x size x size in [0, 1], 64 px by default) holds two different parts out
of disc, square, triangle and cross; the unordered pair is the class (6 classes, numbered
in the order of ``itertools.combinations(PARTS, 2)``: disc+square, disc+triangle,
disc+cross, square+triangle, square+cross, triangle+cross). Part A is the first of the
pair, part B the second. Every image also holds a distractor bar (the same for every
class), so "bright/coloured object" is not "class evidence".

- Background: a base colour plus a sinusoidal grating of random orientation, frequency
  and phase, plus Gaussian pixel noise; kept *without* objects (:meth:`backgrounds`), so a
  region can be painted out by the pixels that would be there without the object.
- Parts: bounding-box side 12-20 px, uniform position, at least ``gap`` (2) px from the
  other part and from the distractor, a flat random colour whose contrast to the
  background under the part, the difference of their luminances (channel means), is at
  least ``min_contrast`` (0.3).
- Distractor: a bar 14-22 px long, 4 px wide, random orientation and colour (same contrast
  rule), at least ``gap`` px from both parts.
- Masks per image (:meth:`part_masks`): part A, part B, distractor (N x 3 x H x W bool);
  :meth:`masks` gives the class region A u B (N x H x W), the interface of the other masked
  datamodules (``clustercam.data.synthetic``).

Train and test come from different random streams of one seed (``SeedSequence(seed)``
spawned), balanced and shuffled; images are generated on the fly when a split is first used.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from clustercam.data.image_views import ImageViews
from clustercam.data.planted import PlantedPartsDataModule
from clustercam.data.synthetic import split_sizes
from clustercam.exceptions import UserError

PARTS = ("disc", "square", "triangle", "cross")
PAIRS = tuple(itertools.combinations(range(len(PARTS)), 2))
CLASSES = tuple(f"{PARTS[a]}+{PARTS[b]}" for a, b in PAIRS)
REGIONS = ("part_a", "part_b", "distractor")
SIDE = (12, 20)
BAR_LENGTH = (14, 22)
BAR_WIDTH = 4


def part_mask(kind: str, size: int, top: int, left: int, side: int) -> np.ndarray:
    """Bool mask (size x size) of a part whose bounding box is ``side`` px at (top, left)."""
    if kind not in PARTS:
        raise UserError(f"unknown part {kind!r}; choose one of {PARTS}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    box = (yy >= top) & (yy < top + side) & (xx >= left) & (xx < left + side)
    cy, cx = top + (side - 1) / 2, left + (side - 1) / 2
    if kind == "square":
        return box
    if kind == "disc":
        return box & ((yy - cy) ** 2 + (xx - cx) ** 2 <= (side / 2) ** 2)
    if kind == "triangle":  # apex at the top, base the width of the box
        return box & (np.abs(xx - cx) <= (yy - top + 1) / 2)
    arm = side / 6  # cross: two bars a third of the box wide
    return box & ((np.abs(yy - cy) <= arm) | (np.abs(xx - cx) <= arm))


def bar_mask(size: int, cy: float, cx: float, length: float, angle: float,
             width: float = BAR_WIDTH) -> np.ndarray:
    """Bool mask of a bar ``length`` x ``width`` px centred at (cy, cx), rotated by ``angle``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    along = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    across = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
    return (np.abs(along) <= length / 2) & (np.abs(across) < width / 2)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction (a (2p+1)^2 square)."""
    out = mask.copy()
    for _ in range(pixels):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        out = grown
    return out


def background(rng: np.random.Generator, size: int, noise: float) -> np.ndarray:
    """3 x size x size: base colour + oriented sinusoidal grating + Gaussian noise, clipped."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(1.5, 5.0) * 2 * np.pi / size
    grating = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
    base = rng.uniform(0.3, 0.7, size=3)[:, None, None]
    amp = rng.uniform(0.05, 0.15)
    bg = base + amp * grating[None] + noise * rng.standard_normal((3, size, size))
    return np.clip(bg, 0.0, 1.0)


def contrasting_colour(rng: np.random.Generator, local_mean: np.ndarray, min_contrast: float) -> np.ndarray:
    """A random RGB colour whose luminance (channel mean) differs from that of ``local_mean``
    (the mean background colour under the object) by at least ``min_contrast``."""
    lum = float(np.mean(local_mean))
    for _ in range(1000):
        colour = rng.uniform(0, 1, size=3)
        if abs(float(colour.mean()) - lum) >= min_contrast:
            return colour
    # practically unreachable: shift a random colour to the far side of the luminance
    colour = rng.uniform(0, 1, size=3)
    target = lum + min_contrast if lum < 0.5 else lum - min_contrast
    return np.clip(colour - colour.mean() + target, 0, 1)


def _place(rng: np.random.Generator, size: int, kind: str, avoid: np.ndarray, gap: int) -> np.ndarray | None:
    grown = dilate(avoid, gap)
    for _ in range(200):
        side = int(rng.integers(SIDE[0], SIDE[1] + 1))
        top, left = rng.integers(0, size - side + 1, size=2)
        mask = part_mask(kind, size, int(top), int(left), side)
        if not (mask & grown).any():
            return mask
    return None


def _place_bar(rng: np.random.Generator, size: int, avoid: np.ndarray, gap: int) -> np.ndarray | None:
    grown = dilate(avoid, gap)
    for _ in range(200):
        length = rng.uniform(*BAR_LENGTH)
        angle = rng.uniform(0, np.pi)
        reach = length / 2 * max(abs(math.cos(angle)), abs(math.sin(angle))) + BAR_WIDTH / 2
        cy, cx = rng.uniform(reach, size - 1 - reach, size=2)
        mask = bar_mask(size, cy, cx, length, angle)
        if mask.any() and not (mask & grown).any():
            return mask
    return None


def make_parts(
    n_samples: int,
    size: int = 64,
    seed: int | np.random.SeedSequence = 0,
    noise: float = 0.04,
    min_contrast: float = 0.3,
    gap: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n_samples`` parts images: x (N x 3 x size x size in [0, 1]), labels (index into
    ``CLASSES``), masks (N x 3 x size x size bool: part A, part B, distractor) and the
    object-free backgrounds (like x). Classes are balanced and shuffled.
    """
    if n_samples < 1:
        raise UserError(f"n_samples must be >= 1, got {n_samples}")
    if size < 48:
        raise UserError(f"size must be >= 48 pixels (two 20 px parts and a bar), got {size}")
    if not 0 <= min_contrast <= 0.5:
        raise UserError(f"min_contrast must be in [0, 0.5], got {min_contrast}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_samples) % len(CLASSES))
    x = np.empty((n_samples, 3, size, size), dtype=np.float32)
    masks = np.zeros((n_samples, 3, size, size), dtype=bool)
    backgrounds = np.empty_like(x)
    empty = np.zeros((size, size), dtype=bool)
    for i, label in enumerate(y):
        while True:  # a layout with no room for all three objects is redrawn (rare)
            a = _place(rng, size, PARTS[PAIRS[label][0]], empty, gap)
            b = _place(rng, size, PARTS[PAIRS[label][1]], a, gap) if a is not None else None
            d = _place_bar(rng, size, a | b, gap) if b is not None else None
            if d is not None:
                break
        bg = background(rng, size, noise)
        image = bg.copy()
        for mask in (a, b, d):
            colour = contrasting_colour(rng, bg[:, mask].mean(1), min_contrast)
            image[:, mask] = colour[:, None]
        x[i], backgrounds[i] = image, bg
        masks[i] = np.stack([a, b, d])
    return x, y.astype(np.int64), masks, backgrounds


class SyntheticPartsDataModule(ImageViews, PlantedPartsDataModule):
    """The parts dataset (``data=synthetic_parts``): the class is a pair of parts.

    RGB size x size images in [0, 1]; the class is the unordered pair of two parts out of
    disc, square, triangle, cross (6 classes), plus a distractor bar in every image.
    ``masks(split)``: the class region A u B (N x H x W); ``part_masks(split)``:
    N x 3 x H x W (part A, part B, distractor); ``backgrounds(split)``: the images without
    objects (for painting out).

    Args:
        n_train: train images.
        n_test: test images.
        size: the image side in pixels (>= 48).
        seed: of the generator (train and test get different streams).
        noise: Gaussian pixel noise of the background.
        min_contrast: the least luminance (channel-mean) difference of a part or the bar to
            the background under it, in [0, 0.5].
        gap: the least distance in pixels between the parts and the distractor.
        **kwargs (Any): the keys every clustercam datamodule takes
            (:class:`~clustercam.data.base.ClusterDataModule`: ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``eval_split``, ``max_samples``,
            ``pin_memory``).

    Raises:
        UserError: n_train or n_test < 1, a size < 48, a min_contrast outside [0, 0.5].

    Example:
        >>> from clustercam.data.parts import SyntheticPartsDataModule
        >>> dm = SyntheticPartsDataModule(n_train=6, n_test=3, size=48)
        >>> dm.setup()
        >>> dm.input_shape, tuple(dm.eval_part_masks().shape), len(dm.classes)
        ((3, 48, 48), (3, 3, 48, 48), 6)
    """

    classes = CLASSES

    def __init__(
        self,
        n_train: int = 6000,
        n_test: int = 600,
        size: int = 64,
        seed: int = 0,
        noise: float = 0.04,
        min_contrast: float = 0.3,
        gap: int = 2,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.sizes = split_sizes(n_train, n_test)
        make_parts(1, size, 0, noise, min_contrast, gap)  # checks the arguments now
        self.name = "SyntheticParts"
        self.size, self.seed, self.noise = size, seed, noise
        self.min_contrast, self.gap = min_contrast, gap

    def make(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Images N x 3 x size x size, labels, part masks and object-free backgrounds."""
        streams = np.random.SeedSequence(self.seed).spawn(2)
        return make_parts(self.sizes[split], self.size, streams[split == "test"], self.noise,
                          self.min_contrast, self.gap)
