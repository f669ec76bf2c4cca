"""outputs.run_figure_jobs: figures drawn in forked workers are the files one process writes
(same bytes, same order), a job's error reaches the caller, torch's threads come back; and
the concept callback's figures and galleries through it, forked or not, byte for byte."""

from __future__ import annotations

import math
import multiprocessing
import os
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from clustercam import outputs  # noqa: E402
from clustercam.callbacks.concept_figures import class_gallery_figures, concept_figures  # noqa: E402
from clustercam.explain.concepts.classes.passes import ClassGallery  # noqa: E402
from clustercam.explain.concepts.image.settings import ConceptSettings  # noqa: E402
from clustercam.explain.concepts.vocabulary import ConceptConfig  # noqa: E402
from clustercam.explain.plots.concepts import concept_figure  # noqa: E402
from clustercam.explain.plots.fidelity import ORDERS  # noqa: E402
from clustercam.outputs import figure_jobs  # noqa: E402

FORK = "fork" in multiprocessing.get_all_start_methods()


def drawing_job(out: Path, i: int):
    """Job i: one concept figure of its own random image, and the process that drew it."""
    def job(save):
        g = torch.Generator().manual_seed(i)
        image, maps = torch.rand(3, 24, 24, generator=g), torch.rand(3, 24, 24, generator=g)
        fig = concept_figure(image, maps, [2, 1, 0], [30.0 + i, 10.0, math.nan], title=f"job {i}")
        (out / f"{i}.pid").write_text(str(os.getpid()))
        return [save(fig, out / f"{i}.png", 100)]
    return job


def files(folder: Path, suffix: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"*{suffix}"))}


def test_forked_workers_write_the_files_of_one_process(tmp_path) -> None:
    serial, forked = tmp_path / "serial", tmp_path / "forked"
    for d in (serial, forked):
        d.mkdir()
    one = outputs.run_figure_jobs([drawing_job(serial, i) for i in range(5)], workers=1)
    two = outputs.run_figure_jobs([drawing_job(forked, i) for i in range(5)], workers=2)
    assert one == [serial / f"{i}.png" for i in range(5)] and two == [forked / f"{i}.png" for i in range(5)]
    assert files(serial, ".png") == files(forked, ".png") and len(files(serial, ".png")) == 5
    assert len(set(files(serial, ".png").values())) == 5  # five different figures
    assert {int(v) for v in files(serial, ".pid").values()} == {os.getpid()}
    if FORK:  # drawn in other processes
        assert os.getpid() not in {int(v) for v in files(forked, ".pid").values()}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_raises_in_the_caller(tmp_path, workers) -> None:
    def bad(save):
        raise ValueError("job 1 could not draw")
    with pytest.raises(ValueError, match="job 1 could not draw"):
        outputs.run_figure_jobs([drawing_job(tmp_path, 0), bad], workers=workers)


def test_torch_runs_on_one_thread_while_drawing_and_gets_its_threads_back() -> None:
    before, seen = torch.get_num_threads(), []
    torch.set_num_threads(2)
    try:
        outputs.run_figure_jobs([lambda save: seen.append(torch.get_num_threads()) or []], workers=1)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_callback_figures_are_the_same_forked_or_not(tmp_path, monkeypatch) -> None:
    """concept_figures (2 images, concepts + sub-concepts, fidelity) and the class galleries
    (2 groups) with one worker and with two: the same files, byte for byte."""
    s = ConceptSettings(method="cgap", n_concepts=3, sub_concepts=2, n_init=1)
    g = torch.Generator().manual_seed(0)
    f, c, n, k = len(s.details), len(s.configs), s.l_max, s.n_sub
    data = SimpleNamespace(
        idx=torch.arange(2), maps=torch.rand(2, f, n, 4, 4, generator=g),
        sub_maps=torch.rand(2, f, n, k, 4, 4, generator=g), channels=torch.full((2, c, n), 4),
        importance=torch.rand(2, c, n, generator=g) * 50, p_target=torch.full((2,), 0.9),
        sub_channels=torch.full((2, f, n, k), 2), sub_importance=torch.rand(2, f, n, k, generator=g),
        fidelity_curves=torch.rand(2, c, len(ORDERS), 2, n + 1, generator=g))
    images = {i: torch.rand(3, 16, 16, generator=g) for i in range(4)}
    dm = SimpleNamespace(display_image=lambda i: images[int(i)])
    cfg = ConceptConfig("cgap", "kmeans", 3)
    galleries = [ClassGallery(group, cfg, src, {
        "index": torch.tensor([[group, 2], [3, -1], [1, 0]]), "maps": torch.rand(3, 2, 4, 4, generator=g),
        "channels": [3, 2, 0], "stability": [0.5, 1.0, math.nan], "importance": [5.0, 1.0, math.nan],
        "importance_std": [1.0, 0.5, math.nan], "title": f"group {group} {src}"})
        for group, src in ((0, "coassociation"), (1, "nmf"))]
    written = {}
    for workers in (1, 2):
        monkeypatch.setattr(figure_jobs, "figure_workers", lambda w=workers: w)
        out = tmp_path / str(workers)
        paths = concept_figures(s, dm, data, ["a", "b"], ["x", "y"], out, max_figures=None)
        paths += class_gallery_figures(galleries, dm, ["x", "y"], [cfg], out)
        written[workers] = [(str(p.relative_to(out)), p.read_bytes()) for p in paths]
    assert len(written[1]) == 2 * 2 + 1 + 2  # figures, fidelity, galleries
    assert written[1] == written[2]
    assert outputs.CONCEPT_FIDELITY_FIGURE in {name for name, _ in written[1]}


def test_without_fork_the_jobs_run_in_this_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(figure_jobs.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    paths = outputs.run_figure_jobs([drawing_job(tmp_path, i) for i in range(2)], workers=2)
    assert paths == [tmp_path / "0.png", tmp_path / "1.png"]
    assert {int(v) for v in files(tmp_path, ".pid").values()} == {os.getpid()}
