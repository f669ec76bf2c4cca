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
    """A tensor (any device, any dtype) or array-like as a float numpy array."""
    if hasattr(a, "detach"):
        a = a.detach().cpu()
        return (a.float() if a.is_floating_point() else a).numpy()
    return np.asarray(a)


def colour_bar(fig: Figure, label: str = "Grad-CeAM (normalised)", cmap: str = CMAP,
               rect: tuple[float, float, float, float] = (0.91, 0.15, 0.02, 0.7)) -> None:
    """A [0, 1] map colour bar at full opacity (blended panels use a transparent map)."""
    cax = fig.add_axes(rect)
    fig.colorbar(ScalarMappable(norm=plt.Normalize(0, 1), cmap=cmap), cax=cax, label=label)
