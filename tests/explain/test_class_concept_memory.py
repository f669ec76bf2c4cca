"""What the class concepts keep in memory: the estimate against the bytes a run really holds,
and the check that stops a run the machine cannot hold at its first batch."""

from __future__ import annotations

import warnings

import pytest
import torch

from clustercam.exceptions import UserError
from clustercam.explain.concepts.classes.coassociation import (
    ClassConceptSettings,
    ClassConceptWarning,
)
from clustercam.explain.concepts.classes.memory import (
    IMAGE_OVERHEAD,
    check_class_concept_memory,
    class_concept_memory,
    size_text,
)
from clustercam.explain.concepts.classes.passes import ClassConceptRun
from clustercam.explain.concepts.image.ablation import PooledHead

CONFIGS = [("cgap", "kmeans", 3), ("cpha", "kmeans", 3)]


def _held(scope: str, sizes: list[int], k: int, c: int = 6, hw: tuple[int, int] = (3, 4)) -> tuple:
    """A one-pass run over classes of ``sizes`` images (random activations and labels), and
    the bytes its counts, its NMF sample and its per-image numbers really take."""
    torch.manual_seed(0)
    settings = ClassConceptSettings(nmf_max_images=k, scope=scope, n_random=0)
    head = PooledHead(pool=lambda x: x.mean((2, 3)), linear=lambda p: p[:, :2], checked=True)
    run = ClassConceptRun(settings, CONFIGS, n_channels=c, n_classes=len(sizes), pooled_head=head)
    y = torch.cat([torch.full((n,), g) for g, n in enumerate(sizes)])
    for rows in torch.randperm(len(y)).split(5):  # batches of 5 in a shuffled order
        a = torch.rand(len(rows), c, *hw)
        run.observe(a, {cfg: torch.randint(-1, 3, (len(rows), c)) for cfg in CONFIGS}, y[rows], rows, targets=y[rows])
    co = sum(acc._co.nbytes + acc.presence.nbytes for acc in run.co.values())
    sample = run.sample
    nmf = sum(sample._compact(g)[2].nbytes for g in list(sample._chunks))
    labels = sum(v.nbytes for b in run.batches for v in b.partitions.values())
    pooled = sum(b.pooled.pooled.nbytes for b in run.batches)
    return settings, (co, nmf, labels + pooled)


@pytest.mark.parametrize(("scope", "sizes", "k"), [("class", [3, 7, 12], 5), ("both", [3, 7, 12], 5),
                                                   ("dataset", [3, 7, 12], 5), ("class", [4, 4], 50)])
def test_the_estimate_is_what_a_run_holds(scope, sizes, k) -> None:
    settings, (co, nmf, per_image) = _held(scope, sizes, k)
    m = class_concept_memory(settings, len(CONFIGS), 6, 12, sizes, pooled=True)
    assert (m.coassociation, m.nmf_sample) == (co, nmf)
    assert per_image <= m.per_image <= per_image + IMAGE_OVERHEAD * sum(sizes)  # + index, class, target, flags


def test_hand_computed_for_ddp_processes_and_the_dataset_scope() -> None:
    s = ClassConceptSettings(nmf_max_images=4)
    # 2 processes: each holds every count matrix, its half of each class (2 and 3 images) and,
    # at the end, both processes' samples
    two = class_concept_memory(s, 2, 8, 9, [3, 6], processes=2)
    assert two.coassociation == 2 * 2 * (64 + 8) * 4
    assert two.nmf_sample == (2 + 3) * 8 * 9 * 4 * (1 + 2)
    assert two.per_image == 5 * (2 * 8 + 4 * 8 + IMAGE_OVERHEAD)
    # one matrix per configuration, one sample of at most 4 images over all classes
    one = class_concept_memory(ClassConceptSettings(nmf_max_images=4, scope="dataset"), 2, 8, 9, [3, 6], pooled=False)
    assert (one.coassociation, one.nmf_sample, one.per_image) == (2 * (64 + 8) * 4, 4 * 8 * 9 * 4, 9 * (16 + 32))


def test_imagenet_validation_at_nf_resnet50_would_need_tens_of_gib() -> None:
    """The case the check is for: 1,000 classes of 50 photos, C = 2048 at 8 x 8, 2 methods."""
    m = class_concept_memory(ClassConceptSettings(scope="both"), 2, 2048, 64, [50] * 1000)
    assert m.coassociation == 2 * 1000 * (2048 * 2048 + 2048) * 4  # 31.3 GiB
    assert m.nmf_sample == 50_000 * 2048 * 64 * 4  # 24.4 GiB: 50 of at most 200 images a class
    assert str(m).startswith("56.3 GiB (co-association counts 31.3 GiB, NMF samples 24.4 GiB")


def test_the_check_stops_warns_or_stays_silent() -> None:
    s = ClassConceptSettings(scope="both")
    args = (s, 2, 2048, 64, [50] * 1000)
    need = class_concept_memory(*args).total
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_class_concept_memory(*args, None)  # unknown: no check
        check_class_concept_memory(*args, 2 * need + 2)  # under half: silent
    with pytest.warns(ClassConceptWarning, match="more than half of the"):
        check_class_concept_memory(*args, need + 1)
    dataset = class_concept_memory(ClassConceptSettings(scope="dataset"), 2, 2048, 64, [50] * 1000).total
    no_nmf = class_concept_memory(ClassConceptSettings(scope="both", nmf_max_images=0), 2, 2048, 64, [50] * 1000).total
    with pytest.raises(UserError) as err:
        check_class_concept_memory(*args, 20 * 2**30, prefix="callbacks.concepts.")
    text = str(err.value)
    assert "1000 classes" in text and "56.3 GiB" in text and "20.0 GiB of memory available" in text
    # the ways out that fit: one matrix for all images (0.7 GiB); not dropping NMF alone (31.9 GiB)
    assert text.endswith(f"set callbacks.concepts.scope=dataset ({size_text(dataset)}), "
                         "or callbacks.concepts.class_concepts=false")
    with pytest.raises(UserError) as err:
        check_class_concept_memory(*args, no_nmf + 1, prefix="callbacks.concepts.")
    assert str(err.value).endswith(f"set callbacks.concepts.scope=dataset ({size_text(dataset)}), "
                                   f"callbacks.concepts.nmf_max_images=0 (no NMF baseline) ({size_text(no_nmf)}), "
                                   "or callbacks.concepts.class_concepts=false")
    with pytest.raises(UserError) as err:  # already one matrix: only turning them off is left
        check_class_concept_memory(ClassConceptSettings(scope="dataset", nmf_max_images=0), 2, 2048, 64,
                                   [50] * 1000, 1000, prefix="callbacks.concepts.")
    assert str(err.value).endswith("of memory available: set callbacks.concepts.class_concepts=false")
    # 4 processes on this machine: each holds all the counts and a quarter of the images
    per_process = class_concept_memory(*args, processes=4).total
    with pytest.raises(UserError, match="in each of 4 processes"):
        check_class_concept_memory(*args, 4 * per_process - 1, processes=4, local_processes=4)


def test_size_text() -> None:
    assert [size_text(n) for n in (512, 1536, 352 * 2**20, 31.3 * 2**30)] == ["512 B", "1.5 KiB", "352 MiB",
                                                                               "31.3 GiB"]
