"""Synthetic data whose class evidence is planted: two parts (or motifs) and a distractor.

The parts images (:mod:`clustercam.data.parts`) and the motifs series
(:mod:`clustercam.data.motifs`) share what the ground-truth scores read: per sample the masks
of part A, part B and the distractor (N x 3 x positions), the class region A u B as the
masked-data interface, and the sample without its parts (the background the painting-out
check puts back). Only the generator differs: a subclass implements :meth:`make`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from clustercam.data.synthetic import MaskedDataModule


class PlantedPartsDataModule(MaskedDataModule):
    """A :class:`MaskedDataModule` with part masks and part-free backgrounds per sample.

    ``make(split) -> (x, y, part_masks, backgrounds)`` is the subclass's generator, seeded
    per split (the same split twice gives the same samples). The backgrounds are kept for the
    evaluated split only (painting out happens there); another split's are made again when
    asked for.

    Args:
        **kwargs (Any): the keys of :class:`~clustercam.data.synthetic.MaskedDataModule`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._parts: dict[str, Tensor] = {}
        self._backgrounds: dict[str, Tensor] = {}

    def make(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """What a subclass implements: inputs, labels, part masks (N x 3 x positions, bool)
        and backgrounds (like the inputs) of one split."""
        raise NotImplementedError

    def generate(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs, labels and class-region masks (A u B, N x positions) of one split."""
        x, y, masks, bg = self.make(split)
        self._parts[split] = torch.from_numpy(masks)
        if split == self.eval_split:
            self._backgrounds[split] = torch.from_numpy(bg)
        return x, y, masks[:, 0] | masks[:, 1]

    def part_masks(self, split: str) -> Tensor:
        """N x 3 x positions bool (part A, part B, distractor), aligned with ``split(split).x``."""
        n = len(self.split(split))  # generates (and caps) the split first
        return self._parts[split][:n]

    def backgrounds(self, split: str) -> Tensor:
        """The samples of the split without their parts and distractor (like ``split(split).x``)."""
        n = len(self.split(split))
        if split not in self._backgrounds:
            self._backgrounds[split] = torch.from_numpy(self.make(split)[3])
        return self._backgrounds[split][:n]

    def eval_part_masks(self) -> Tensor:
        """Part masks of the evaluated split (order of ``eval_tensors()``)."""
        return self.part_masks(self.eval_split)

    def eval_backgrounds(self) -> Tensor:
        """Part-free backgrounds of the evaluated split (order of ``eval_tensors()``)."""
        return self.backgrounds(self.eval_split)
