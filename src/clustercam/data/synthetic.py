"""Ground-truth datasets: the discriminative region of every sample is known (a mask).

They exist to score explanations (``clustercam.explain.scores``): a heatmap that
explains why a sample belongs to its cluster should point at the part of the input
that differs between the classes.

- **Cylinder-Bell-Funnel** (Saito 1994; the UCR CBF set): length 128, noise
  everywhere, and on a window [a, b] (a uniform in [16, 32], b - a uniform in [32, 96],
  t = 1..128) a plateau, a rising ramp or a falling ramp of height 6 + eta. The
  window is the mask. The series come from pyts's generator with ``return_params=True``
  and the seeds ``clustercam.data.ucr`` uses for its offline CBF (``2 * seed`` for
  train, ``2 * seed + 1`` for test), so ``data=synthetic_cbf`` is the same data as
  ``experiment=cbf`` offline, plus masks. Each series is z-normalised (as UCR data).
  The generator's parameters are checked against the series (pyts shuffles them with
  the samples; an old version that did not would misplace the masks).
- **Shapes** (images): a square, a disc or a triangle (the class) of random size and
  position on a random grating-plus-noise texture, in [0, 1]; the shape's pixels are
  the mask. A bar as bright as the shape (the *distractor*, same for every class) sits
  elsewhere in the image: without it the class region would also be the only bright
  region, and a map that merely finds bright things (the plain activation map) would
  localise perfectly without saying anything about the clusters.

Both datamodules follow the shared ``ClusterDataModule`` interface and add
``masks(split)`` and ``eval_masks()`` (aligned with ``eval_tensors()``, ``max_samples``
included).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from clustercam.data.base import ClusterDataModule
from clustercam.data.ucr import CBF_SIZES, znormalise
from clustercam.exceptions import UserError

log = logging.getLogger(__name__)

CBF_LENGTH = 128
SHAPES = ("square", "disc", "triangle")


def make_cbf(
    n_samples: int, random_state: int, normalise: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cylinder-Bell-Funnel series with their event windows (pyts's generator).

    Args:
        n_samples: N (>= 1).
        random_state: the generator's seed.
        normalise: z-normalise each series.

    Returns:
        x (N x 1 x 128), labels (0 cylinder, 1 bell, 2 funnel) and masks (N x 128 bool,
        True on the event window [a, b]).

    Raises:
        UserError: N < 1, or a pyts whose parameters do not line up with its series.
    """
    from pyts.datasets import make_cylinder_bell_funnel

    if n_samples < 1:
        raise UserError(f"n_samples must be >= 1, got {n_samples}")
    x, y, params = make_cylinder_bell_funnel(
        n_samples=n_samples, random_state=random_state, return_params=True
    )
    a, b = params["a"].reshape(-1, 1), params["b"].reshape(-1, 1)
    t = np.arange(1, CBF_LENGTH + 1)[None, :]
    masks = (t >= a) & (t <= b)
    event = x - params["epsilon"]
    if np.abs(event[~masks]).max(initial=0.0) > 1e-9:
        raise UserError(
            "pyts's CBF parameters do not line up with its series (an old pyts that did not "
            "shuffle them with the samples?): upgrade pyts (>= 0.13) to get the masks right"
        )
    if normalise:
        x = znormalise(x[:, None, :])
    else:
        x = x[:, None, :]
    return x, y.astype(np.int64), masks


def _grating(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random oriented sinusoid in [-1, 1] (size x size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(1.5, 5.0) * 2 * np.pi / size
    phase = rng.uniform(0, 2 * np.pi)
    return np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)


def shape_mask(kind: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Boolean mask (size x size) of a shape centred at (cy, cx) with half-size r."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    if kind == "square":
        return (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    if kind == "disc":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    if kind == "triangle":  # apex up, base at cy + r, as wide as the square
        dy = yy - (cy - r)
        return (dy >= 0) & (yy <= cy + r) & (np.abs(xx - cx) <= dy / 2)
    raise UserError(f"unknown shape {kind!r}; choose one of {SHAPES}")


def _distractor(rng: np.random.Generator, size: int, avoid: np.ndarray) -> np.ndarray:
    """A horizontal or vertical bar (2 px thick) that keeps one pixel away from ``avoid``."""
    grown = avoid.copy()  # the shape dilated by one pixel
    grown[1:] |= avoid[:-1]
    grown[:-1] |= avoid[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    bar = np.zeros_like(avoid)
    for _ in range(100):
        length = int(rng.integers(size // 4, size // 2 + 1))
        along = int(rng.integers(0, size - length + 1))
        across = int(rng.integers(0, size - 1))
        bar[:] = False
        if rng.random() < 0.5:
            bar[across : across + 2, along : along + length] = True
        else:
            bar[along : along + length, across : across + 2] = True
        if not (bar & grown).any():
            return bar
    return np.zeros_like(avoid)  # no room (a very large shape): no distractor


def make_shapes(
    n_samples: int, size: int = 32, seed: int = 0, noise: float = 0.05, distractor: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images x (N x 1 x size x size, in [0, 1]), labels (index into ``SHAPES``), masks.

    Classes are balanced and shuffled. The texture (two gratings plus pixel noise) and the
    distractor bar are independent of the class, so only the shape carries the class.
    """
    if n_samples < 1:
        raise UserError(f"n_samples must be >= 1, got {n_samples}")
    if size < 12:
        raise UserError(f"size must be >= 12 pixels, got {size}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_samples) % len(SHAPES))
    x = np.empty((n_samples, 1, size, size))
    masks = np.empty((n_samples, size, size), dtype=bool)
    for i, label in enumerate(y):
        r = rng.uniform(size / 8, size / 4)
        cy, cx = rng.uniform(r + 1, size - r - 2, size=2)
        mask = shape_mask(SHAPES[label], size, cy, cx, r)
        bright = mask | _distractor(rng, size, mask) if distractor else mask
        texture = 0.35 + 0.1 * (_grating(rng, size) + _grating(rng, size)) / 2
        image = np.where(bright, 0.85, texture) + noise * rng.standard_normal((size, size))
        x[i, 0] = np.clip(image, 0.0, 1.0)
        masks[i] = mask
    return x, y.astype(np.int64), masks


def split_sizes(n_train: int, n_test: int) -> dict[str, int]:
    """The sizes of a generated dataset's splits, checked (both >= 1) before anything runs.

    Raises:
        UserError: n_train or n_test < 1.
    """
    if n_train < 1 or n_test < 1:
        raise UserError(f"n_train and n_test must be >= 1, got {n_train}, {n_test}")
    return {"train": n_train, "test": n_test}


class MaskedDataModule(ClusterDataModule):
    """A ``ClusterDataModule`` whose samples carry a ground-truth mask over their positions.

    Subclasses implement ``generate(split) -> (x, y, masks)``; the scoring callback scores
    the maps against ``eval_masks()``.

    Args:
        **kwargs (Any): the keys of :class:`~clustercam.data.base.ClusterDataModule`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._masks: dict[str, Tensor] = {}

    def generate(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What a subclass implements: inputs, labels and bool masks (N x spatial) of a split."""
        raise NotImplementedError

    def load_split(self, split: str) -> tuple[Tensor, Tensor]:
        """The generated inputs and labels of one split (its masks are kept aside)."""
        x, y, masks = self.generate(split)
        self._masks[split] = torch.from_numpy(np.asarray(masks, dtype=bool))
        return torch.from_numpy(np.asarray(x)).float(), torch.from_numpy(np.asarray(y)).long()

    def masks(self, split: str) -> Tensor:
        """Bool masks (N x spatial) of one split, aligned with ``split(split).x``."""
        n = len(self.split(split))  # loads (and caps) the split first
        return self._masks[split][:n]

    def eval_masks(self) -> Tensor:
        """Masks of the evaluated split, in the order of ``eval_tensors()``."""
        return self.masks(self.eval_split)


class SyntheticCBFDataModule(MaskedDataModule):
    """Cylinder-Bell-Funnel with the event window as the mask (``data=synthetic_cbf``).

    The same series as the offline UCR CBF (pyts's generator, the same seeds), N x 1 x 128,
    labels 0 cylinder, 1 bell, 2 funnel.

    Args:
        n_train: train series (UCR: 30).
        n_test: test series (UCR: 900).
        seed: of the generator (train and test get different streams).
        normalise: z-normalise each series.
        name: accepted so that configs written for UCR (``experiment=trace
            data=synthetic_cbf`` sets ``data.name=Trace``) compose; anything but CBF is
            ignored with a warning, since this module always generates CBF.
        **kwargs (Any): the keys every clustercam datamodule takes
            (:class:`~clustercam.data.base.ClusterDataModule`: ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``eval_split``, ``max_samples``,
            ``pin_memory``).

    Raises:
        UserError: n_train or n_test < 1.

    Example:
        >>> from clustercam.data.synthetic import SyntheticCBFDataModule
        >>> dm = SyntheticCBFDataModule(n_train=6, n_test=9)
        >>> dm.setup()
        >>> dm.input_shape, dm.num_classes, tuple(dm.eval_masks().shape)
        ((1, 128), 3, (9, 128))
    """

    def __init__(
        self,
        n_train: int = CBF_SIZES["train"],
        n_test: int = CBF_SIZES["test"],
        seed: int = 0,
        normalise: bool = True,
        name: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.sizes = split_sizes(n_train, n_test)
        if name is not None and "cbf" not in name.lower():
            log.warning("data.name=%s is ignored: the synthetic datamodule always generates CBF", name)
        self.name = "SyntheticCBF"
        self.seed = seed
        self.normalise = normalise

    def generate(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Series N x 1 x 128, labels and event-window masks N x 128 of one split."""
        # the seeds of clustercam.data.ucr's offline CBF: the same series, plus masks
        return make_cbf(self.sizes[split], self.seed * 2 + (split == "test"), self.normalise)


class SyntheticShapesDataModule(MaskedDataModule):
    """Square / disc / triangle on a texture, with a distractor bar (``data=synthetic_shapes``).

    Images 1 x size x size in [0, 1], labels 0 square, 1 disc, 2 triangle; the shape's
    pixels are the mask. Texture and bar are the same for every class: only the shape is
    the class, and "bright" is not "discriminative".

    Args:
        n_train: train images.
        n_test: test images.
        size: the image side in pixels.
        seed: of the generator (train and test get different streams).
        noise: Gaussian pixel noise.
        distractor: draw the bright bar.
        **kwargs (Any): the keys every clustercam datamodule takes
            (:class:`~clustercam.data.base.ClusterDataModule`: ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``eval_split``, ``max_samples``,
            ``pin_memory``).

    Raises:
        UserError: n_train or n_test < 1.

    Example:
        >>> from clustercam.data.synthetic import SyntheticShapesDataModule
        >>> dm = SyntheticShapesDataModule(n_train=6, n_test=3, size=16)
        >>> dm.setup()
        >>> x, y = dm.eval_tensors()
        >>> tuple(x.shape), y.tolist(), tuple(dm.eval_masks().shape)
        ((3, 1, 16, 16), [0, 1, 2], (3, 16, 16))
    """

    def __init__(
        self,
        n_train: int = 3000,
        n_test: int = 600,
        size: int = 32,
        seed: int = 0,
        noise: float = 0.05,
        distractor: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.sizes = split_sizes(n_train, n_test)
        self.name = "SyntheticShapes"
        self.size = size
        self.seed = seed
        self.noise = noise
        self.distractor = distractor

    def generate(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images N x 1 x size x size, labels and shape masks N x size x size of one split."""
        return make_shapes(
            self.sizes[split], self.size, seed=self.seed * 2 + (split == "test"), noise=self.noise,
            distractor=self.distractor,
        )
