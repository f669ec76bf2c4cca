"""Motifs: series whose class is a *pair* of motifs, with a mask per motif (ground truth for
concepts over time), the 1-D twin of :mod:`clustercam.data.parts`.

Each univariate series (1 x length, 256 by default) holds two different motifs out of bump,
plateau, sawtooth and chirp; the unordered pair is the class (6 classes, numbered in the
order of ``itertools.combinations(MOTIFS, 2)``: bump+plateau, bump+sawtooth, bump+chirp,
plateau+sawtooth, plateau+chirp, sawtooth+chirp). Motif A is the first of the pair, motif B
the second. Every series also holds a distractor spike train (the same for every class), so
"a large excursion" is not "class evidence".

- Background: a random walk (steps N(0, 0.05)) plus a sine of random period 40-120 steps,
  amplitude 0.3-0.6 and phase, plus N(0, 0.1) noise; kept *without* motifs
  (:meth:`~SyntheticMotifsDataModule.backgrounds`), so a span can be painted out by the
  values that would be there without the motif.
- Motifs, each 24-40 steps long at a random position, added to the background with an
  amplitude of 2.0-3.0 times the background's standard deviation and a random sign:
  ``bump`` (a half-sine), ``plateau`` (a flat pulse with steep edges), ``sawtooth`` (two
  rising ramps), ``chirp`` (a sine burst whose frequency doubles over the motif).
- Distractor: 3-5 single-step spikes spread evenly over a span of 16-24 steps (the first
  and last spike at its ends), each of amplitude 2.0-3.0 background standard deviations and
  a random sign; its mask is the whole span.
- The two motifs and the distractor lie inside the series, in random order, at least
  ``gap`` (4) steps apart.
- Masks per series (:meth:`~SyntheticMotifsDataModule.part_masks`): motif A, motif B,
  distractor (N x 3 x L bool); ``masks(split)`` gives the class region A u B (N x L), the
  interface of the other masked datamodules (``clustercam.data.synthetic``).

Train and test come from different random streams of one seed (``SeedSequence(seed)``
spawned), balanced and shuffled; series are generated when a split is first used.
"""

from __future__ import annotations

import itertools

import numpy as np

from clustercam.data.image_views import ImageViews
from clustercam.data.planted import PlantedPartsDataModule
from clustercam.data.synthetic import split_sizes
from clustercam.exceptions import UserError

MOTIFS = ("bump", "plateau", "sawtooth", "chirp")
PAIRS = tuple(itertools.combinations(range(len(MOTIFS)), 2))
CLASSES = tuple(f"{MOTIFS[a]}+{MOTIFS[b]}" for a, b in PAIRS)
REGIONS = ("motif_a", "motif_b", "distractor")
MOTIF_LENGTH = (24, 40)
SPIKE_SPAN = (16, 24)
SPIKES = (3, 5)
AMPLITUDE = (2.0, 3.0)  # times the background's standard deviation
PERIOD = (40.0, 120.0)
SINE_AMPLITUDE = (0.3, 0.6)


def motif_shape(kind: str, length: int) -> np.ndarray:
    """The unit-amplitude shape (``length`` values, peak 1) of a motif."""
    if kind not in MOTIFS:
        raise UserError(f"unknown motif {kind!r}; choose one of {MOTIFS}")
    t = (np.arange(length) + 0.5) / length  # in (0, 1)
    if kind == "bump":
        return np.sin(np.pi * t)
    if kind == "plateau":  # flat, with one-step edges at half height
        out = np.ones(length)
        out[[0, -1]] = 0.5
        return out
    if kind == "sawtooth":  # two ramps from 0 to 1, each dropping back at once
        return (2 * t) % 1.0
    # chirp: instantaneous frequency f0 (1 + t) goes from f0 to 2 f0 cycles per motif
    return np.sin(2 * np.pi * 2.0 * (t + t**2 / 2))


def background(rng: np.random.Generator, length: int) -> np.ndarray:
    """Random walk N(0, 0.05) + a sine (period 40-120, amplitude 0.3-0.6) + N(0, 0.1) noise."""
    walk = np.cumsum(rng.normal(0.0, 0.05, length))
    period, amp, phase = rng.uniform(*PERIOD), rng.uniform(*SINE_AMPLITUDE), rng.uniform(0, 2 * np.pi)
    sine = amp * np.sin(2 * np.pi * np.arange(length) / period + phase)
    return walk + sine + rng.normal(0.0, 0.1, length)


def _place(rng: np.random.Generator, length: int, spans: list[int], gap: int) -> list[int] | None:
    """Start positions for spans of the given lengths, inside ``length`` and ``gap`` apart."""
    for _ in range(200):
        starts = [int(rng.integers(0, length - s + 1)) for s in spans]
        order = np.argsort(starts)
        ends = [starts[i] + spans[i] for i in order]
        if all(starts[order[j + 1]] >= ends[j] + gap for j in range(len(spans) - 1)):
            return starts
    return None


def make_motifs(
    n_samples: int,
    length: int = 256,
    seed: int | np.random.SeedSequence = 0,
    gap: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n_samples`` motif series.

    Args:
        n_samples: N (>= 1).
        length: the series length (>= 2 * 40 + 24 + 2 * gap).
        seed: of the generator.
        gap: the least number of background steps between the motifs and the distractor.

    Returns:
        x (N x 1 x length, float32), labels (index into ``CLASSES``; balanced, shuffled),
        masks (N x 3 x length bool: motif A, motif B, distractor) and the motif-free
        backgrounds (like x).

    Raises:
        UserError: N < 1, a negative gap, or a length too short for two motifs and the
            distractor.
    """
    if n_samples < 1:
        raise UserError(f"n_samples must be >= 1, got {n_samples}")
    if gap < 0:
        raise UserError(f"gap must be >= 0 steps, got {gap}")
    least = 2 * MOTIF_LENGTH[1] + SPIKE_SPAN[1] + 2 * gap
    if length < least:
        raise UserError(f"length must be >= {least} steps (two 40-step motifs, a 24-step spike train "
                        f"and the gaps), got {length}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_samples) % len(CLASSES))
    x = np.empty((n_samples, 1, length), dtype=np.float32)
    masks = np.zeros((n_samples, 3, length), dtype=bool)
    backgrounds = np.empty_like(x)
    for i, label in enumerate(y):
        while True:  # a draw with no room for all three (rare with the defaults) is redrawn
            spans = [int(rng.integers(MOTIF_LENGTH[0], MOTIF_LENGTH[1] + 1)) for _ in range(2)]
            spans.append(int(rng.integers(SPIKE_SPAN[0], SPIKE_SPAN[1] + 1)))
            starts = _place(rng, length, spans, gap)
            if starts is not None:
                break
        bg = background(rng, length)
        scale = float(bg.std())
        series = bg.copy()
        for r, kind in enumerate(PAIRS[label]):
            amp = rng.uniform(*AMPLITUDE) * scale * rng.choice((-1.0, 1.0))
            series[starts[r]: starts[r] + spans[r]] += amp * motif_shape(MOTIFS[kind], spans[r])
        n_spikes = int(rng.integers(SPIKES[0], SPIKES[1] + 1))
        where = starts[2] + np.round(np.linspace(0, spans[2] - 1, n_spikes)).astype(int)
        series[where] += rng.uniform(*AMPLITUDE, n_spikes) * scale * rng.choice((-1.0, 1.0), n_spikes)
        for r in range(3):
            masks[i, r, starts[r]: starts[r] + spans[r]] = True
        x[i, 0], backgrounds[i, 0] = series, bg
    return x, y.astype(np.int64), masks, backgrounds


class SyntheticMotifsDataModule(ImageViews, PlantedPartsDataModule):
    """The motifs dataset (``data=synthetic_motifs``): the class is a pair of motifs.

    Univariate series 1 x length; the class is the unordered pair of two motifs out of bump,
    plateau, sawtooth, chirp (6 classes), plus a distractor spike train in every series.
    ``masks(split)``: the class region A u B (N x L); ``part_masks(split)``: N x 3 x L
    (motif A, motif B, distractor); ``backgrounds(split)``: the series without motifs and
    spikes (for painting out). Batches are ``(x, y, index)`` as for every series datamodule.

    Args:
        n_train: train series.
        n_test: test series.
        length: the series length (>= 112 + 2 * gap).
        seed: of the generator (train and test get different streams).
        gap: the least number of background steps between the motifs and the distractor.
        **kwargs (Any): the keys every clustercam datamodule takes
            (:class:`~clustercam.data.base.ClusterDataModule`: ``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``eval_split``, ``max_samples``,
            ``pin_memory``).

    Raises:
        UserError: n_train or n_test < 1, a negative gap, a length too short.

    Example:
        >>> from clustercam.data.motifs import SyntheticMotifsDataModule
        >>> dm = SyntheticMotifsDataModule(n_train=6, n_test=3)
        >>> dm.setup()
        >>> dm.input_shape, tuple(dm.eval_part_masks().shape), len(dm.classes)
        ((1, 256), (3, 3, 256), 6)
    """

    classes = CLASSES

    def __init__(
        self,
        n_train: int = 6000,
        n_test: int = 600,
        length: int = 256,
        seed: int = 0,
        gap: int = 4,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.sizes = split_sizes(n_train, n_test)
        make_motifs(1, length, 0, gap)  # checks the arguments now
        self.name = "SyntheticMotifs"
        self.length, self.seed, self.gap = length, seed, gap

    def make(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Series N x 1 x L, labels, motif masks and motif-free backgrounds."""
        streams = np.random.SeedSequence(self.seed).spawn(2)
        return make_motifs(self.sizes[split], self.length, streams[split == "test"], self.gap)
