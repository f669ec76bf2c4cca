"""What every figure shares: the colour map, tensor -> numpy, the map colour bar.

No ``matplotlib.use()`` anywhere in clustercam: headless runs fall back to Agg (or
``MPLBACKEND``), notebooks keep their inline backend.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

CMAP = "jet"


def to_numpy(a: Any) -> np.ndarray:
    """A tensor or array-like as a numpy array, for matplotlib.

    Args:
        a: a tensor (any device; floating dtypes become float32) or anything
            ``np.asarray`` takes.

    Returns:
        The array.
    """
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        return (a.float() if a.is_floating_point() else a).numpy()
    return np.asarray(a)


def colour_bar(fig: Figure, label: str = "Grad-CeAM (normalised)", cmap: str = CMAP,
               rect: tuple[float, float, float, float] = (0.91, 0.15, 0.02, 0.7)) -> None:
    """A [0, 1] map colour bar at full opacity (blended panels use a transparent map).

    Args:
        fig: the figure to add it to.
        label: the bar's label.
        cmap: the colour map of the maps.
        rect: the bar's axes, (left, bottom, width, height) in figure coordinates.
    """
    cax = fig.add_axes(rect)
    fig.colorbar(ScalarMappable(norm=plt.Normalize(0, 1), cmap=cmap), cax=cax, label=label)
