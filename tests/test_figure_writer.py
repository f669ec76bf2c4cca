"""outputs.FigureWriter: the PNGs save_figure writes (same pixels and metadata), its errors
raised when it is left, and no half-written file. The figures use the concept figures'
PanelCanvas, whose PNGs the writer compresses in its worker thread."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from clustercam import outputs  # noqa: E402
from clustercam.explain.plots.canvas import PanelCanvas  # noqa: E402


def figure(seed: int) -> plt.Figure:
    fig, axes = plt.subplots(2, 3, figsize=(5, 3), dpi=72)  # dpi differs from the saved one
    rng = np.random.default_rng(seed)
    for ax in axes.flat:
        ax.imshow(rng.random((16, 16)), cmap="jet")
        ax.set_title(f"panel {seed}")
    fig.suptitle("a figure")
    PanelCanvas(fig)
    return fig


def test_writer_saves_the_pixels_and_metadata_of_save_figure(tmp_path) -> None:
    for seed in range(3):
        outputs.save_figure(figure(seed), tmp_path / f"ref{seed}.png", dpi=100)
    figs = [figure(seed) for seed in range(3)]
    with outputs.FigureWriter() as writer:
        paths = [writer.save(fig, tmp_path / "w" / f"{seed}.png", dpi=100) for seed, fig in enumerate(figs)]
    assert not any(plt.fignum_exists(fig.number) for fig in figs)  # each saved figure closed
    for seed, path in enumerate(paths):
        ref, got = Image.open(tmp_path / f"ref{seed}.png"), Image.open(path)
        assert got.size == ref.size == (500, 300) and got.info == ref.info
        assert np.array_equal(np.asarray(got), np.asarray(ref))
    assert not np.array_equal(np.asarray(Image.open(paths[0])), np.asarray(Image.open(paths[1])))


def test_a_failed_write_is_raised_on_leaving_and_leaves_no_file(tmp_path) -> None:
    (tmp_path / "taken").write_text("a file where a folder should be")
    with pytest.raises(OSError):
        with outputs.FigureWriter() as writer:
            writer.save(figure(0), tmp_path / "ok.png", dpi=50)
            writer.save(figure(1), tmp_path / "taken" / "bad.png", dpi=50)
    assert (tmp_path / "ok.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png", "taken"]


def test_encode_png_decodes_to_pillows_pixels_and_info(tmp_path) -> None:
    """The concept figures' own PNG encoder (Up filter): a strided RGB view of an RGBA
    buffer, with wrapping row differences, reads back as Pillow's PNG of the same pixels."""
    import io

    from PIL.PngImagePlugin import PngInfo

    from clustercam.explain.plots.canvas import encode_png

    rgba = np.random.default_rng(0).integers(0, 256, (37, 53, 4), dtype=np.uint8)
    rgba[5:9] = 255  # flat rows beside noisy ones
    info = PngInfo()
    info.add_text("Software", "test")
    ref = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba[..., :3])).save(ref, format="png", dpi=(100, 100), pnginfo=info)
    got = Image.open(io.BytesIO(encode_png(rgba[..., :3], 100.0, {"Software": "test"})))
    want = Image.open(ref)
    assert got.mode == want.mode == "RGB" and got.info == want.info
    assert np.array_equal(np.asarray(got), rgba[..., :3])
