"""The scores figure: mean deletion and insertion curves per map method."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from clustercam.explain.scores.curves import PerturbationCurves, mean_curves


def curves_figure(
    means: Mapping[str, Mapping[str, np.ndarray]], assignment: str = "softmax", over: str = ""
) -> Figure:
    """Mean deletion and insertion curves per method, each labelled with its area.

    The soft assignment on top, the hard one below.

    Args:
        means: per method, the mean curves of :func:`~clustercam.explain.scores.mean_curves`.
        assignment: the soft assignment's name, for the axis label.
        over: which samples the means are over, for the title ("" : none).

    Returns:
        The figure (2 x 2 panels).
    """
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True, sharey="row")
    panels = [("deletion", 0, 0), ("insertion", 0, 1), ("deletion_hard", 1, 0), ("insertion_hard", 1, 1)]
    for key, row, col in panels:
        ax = axes[row, col]
        for method, c in means.items():
            f, v = c["fractions"], c[key]
            auc = float(np.sum((v[1:] + v[:-1]) / 2 * np.diff(f)))
            ax.plot(f, v, marker="o", markersize=3, label=f"{method} (AUC {auc:.3f})")
        kind = "deletion" if key.startswith("deletion") else "insertion"
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} is better)", fontsize=10)
        ax.set_xlabel(f"fraction of positions {'removed' if kind == 'deletion' else 'inserted'}")
        if col == 0:
            ax.set_ylabel(f"soft assignment to own cluster ({assignment})" if row == 0
                          else "share still in own cluster (hard)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Deletion / insertion: mean curves per method" + (f"\n({over})" if over else ""),
                 fontsize=11)
    fig.tight_layout()
    return fig


def report_curves_figure(curves: Mapping[str, PerturbationCurves], assignment: str) -> Figure:
    """The mean deletion / insertion curves of a score report, one panel per curve kind.

    Averaged over the samples whose all-baseline input leaves their cluster where there are
    any (the others cannot move on the curves), else over all samples.

    Args:
        curves: ``ScoreReport.curves``, one entry per map method.
        assignment: the soft assignment the curves follow (for the axis label).

    Returns:
        The figure.
    """
    informative = any(bool(c.informative.any()) for c in curves.values())
    return curves_figure(mean_curves(curves, informative_only=informative), assignment,
                         "samples whose all-baseline input leaves their cluster" if informative else "all samples")
