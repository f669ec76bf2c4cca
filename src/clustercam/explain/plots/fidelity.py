"""The concept-fidelity figure: mean deletion and insertion curves per configuration and order."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from clustercam.explain.concepts.vocabulary import CURVES, ORDERS

ORDER_STYLE = {"importance": ("C3", "-"), "random_order": ("C0", "--"), "random_groups": ("C2", ":")}


def fidelity_figure(configs: Sequence[tuple[str, str, int]], curves: Tensor,
                    orders: Sequence[str] = ORDERS) -> Figure:
    """One row per (method, algorithm, n_concepts), deletion left, insertion right; a line
    per order, labelled with the area of its mean curve. ``curves``: images x configs x
    orders x (deletion, insertion) x (L + 1) (NaN past an image's concepts), as
    :class:`~clustercam.explain.concepts.ConceptBatch` holds them (``fidelity_curves``)."""
    mean = torch.nanmean(curves.double(), 0).numpy()  # configs x orders x 2 x (L + 1)
    fig, axes = plt.subplots(len(configs), 2, figsize=(9, 2.6 * len(configs)), squeeze=False,
                             sharey=True)
    for c, (method, algo, n) in enumerate(configs):
        x = np.arange(n + 1) / n
        for k, kind in enumerate(CURVES):
            ax = axes[c, k]
            for o, order in enumerate(orders):
                y = mean[c, o, k, : n + 1]
                auc = float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))
                colour, style = ORDER_STYLE.get(order, ("k", "-"))
                ax.plot(x, y, style, color=colour, marker="o", markersize=3,
                        label=f"{order} (AUC {auc:.3f})")
            better = "lower" if kind == "deletion" else "higher"
            ax.set_title(f"{method.upper()} {algo} n={n}: {kind} ({better} is better)", fontsize=9)
            ax.set_xlabel(f"share of concepts {'removed' if kind == 'deletion' else 'kept'}")
            if k == 0:
                ax.set_ylabel("p_t / p_t(original)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.suptitle("Concept fidelity: mean curves over images", fontsize=11)
    fig.tight_layout()
    return fig
