"""The threaded PNG writer of the figure-heavy callbacks (the concept figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clustercam.outputs.files import atomic_write, save_figure


class FigureWriter:
    """Saves matplotlib figures as PNG like :func:`save_figure`; for a canvas that hands
    out a writer of its drawn image (``png_image()``, the concept figures' ``PanelCanvas``)
    the PNG encoding and the write run in a worker thread: drawing (Agg) holds the GIL, zlib does
    not, so the next figure is drawn while the last one is compressed (same bytes). Other
    figures are saved at once by :func:`save_figure`. Use as a context manager; leaving it
    waits for every file and raises the first error of the worker."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="png")
        self._pending: list[Any] = []

    def save(self, fig: Any, path: str | Path, dpi: int = 120) -> Path:
        """Save ``fig`` as a PNG at ``path`` and close it (the write may finish later)."""
        import matplotlib.pyplot as plt

        path = Path(path)
        if not hasattr(fig.canvas, "png_image"):
            return save_figure(fig, path, dpi)
        try:
            fig.set_dpi(dpi)  # as savefig(dpi=...) does while it draws
            job = fig.canvas.png_image()
        finally:
            plt.close(fig)
        if job is None:  # a transparent figure: Agg's own path
            return save_figure(fig, path, dpi)
        self._pending.append(self._pool.submit(atomic_write, path, job, "wb"))
        return path

    def __enter__(self) -> FigureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for job in self._pending:
                job.result()
        finally:
            self._pool.shutdown(wait=True)
