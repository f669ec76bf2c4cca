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
IMAGENET_VAL = (2, 2048, 64, [50] * 1000)  # 2 methods, nf_resnet50's 2048 x 8 x 8, 1,000 classes of 50


def _held(scope: str, sizes: list[int], k: int, c: int = 6, hw: tuple[int, int] = (3, 4)) -> tuple:
    """A one-pass run over classes of ``sizes`` images (random activations and labels, batches
    of 5 in a shuffled order): its counts' bytes, the most bytes its NMF sample held after any
    batch, and its per-image numbers' bytes (kept labels, labels waiting to be counted, pooled
    values; the average pool keeps no sums)."""
    torch.manual_seed(0)
    settings = ClassConceptSettings(nmf_max_images=k, scope=scope, n_random=0)
    head = PooledHead(pool=lambda x: x.mean((2, 3)), linear=lambda p: p[:, :2], checked=True)
    run = ClassConceptRun(settings, CONFIGS, n_channels=c, n_classes=len(sizes), pooled_head=head)
    y = torch.cat([torch.full((n,), g) for g, n in enumerate(sizes)])
    peak = 0
    for rows in torch.randperm(len(y)).split(5):
        a = torch.rand(len(rows), c, *hw)
        run.observe(a, {cfg: torch.randint(-1, 3, (len(rows), c)) for cfg in CONFIGS}, y[rows], rows, targets=y[rows])
        peak = max(peak, sum(ch[2].nbytes for chunks in run.sample._chunks.values() for ch in chunks))
    co = sum(acc._co.nbytes + acc.presence.nbytes for acc in run.co.values())
    waiting = sum(p.nbytes for acc in run.co.values() for ps in acc._pending.values() for p in ps)
    labels = sum(v.nbytes for b in run.batches for v in b.partitions.values())
    pooled = sum(b.pooled.pooled.nbytes for b in run.batches)
    assert all(b.pooled.sums is None for b in run.batches)
    return settings, co, peak, labels + pooled + waiting


@pytest.mark.parametrize(("scope", "sizes", "k"), [("class", [3, 7, 12], 2), ("both", [3, 7, 12], 2),
                                                   ("dataset", [3, 7, 12], 5), ("class", [4, 4], 50)])
def test_the_estimate_bounds_what_a_run_holds(scope, sizes, k) -> None:
    settings, co, nmf_peak, per_image = _held(scope, sizes, k)
    m = class_concept_memory(settings, len(CONFIGS), 6, 12, sizes, pooled=True, n_concepts=3)
    assert m.coassociation == co  # exactly
    row = 6 * 12 * 4
    groups = [sum(sizes)] if scope == "dataset" else sizes
    both = [min(sum(sizes), k)] if scope == "both" else []  # the dataset's rows, drawn from the classes'
    fit = (sum(both) + 3 * max([min(n, k) for n in groups] + both)) * row  # one fit at a time: 3 copies
    assert nmf_peak <= m.nmf_sample - fit  # the samples never held more than the bound (2k a group)
    assert per_image <= m.per_image  # a pool that is not the average keeps sums too: counted, not held here
    assert m.per_image - per_image <= sum(sizes) * (4 * 6 + IMAGE_OVERHEAD)


def test_hand_computed_for_ddp_processes_signed_activations_and_the_dataset_scope() -> None:
    s = ClassConceptSettings(nmf_max_images=4)
    # 2 processes: each holds every count matrix, its half of each class (2 and 3 images), at
    # the end both processes' samples, twice while gathered, and 3 copies of the largest fit
    # over the gathered sample (min(6, 4) rows)
    two = class_concept_memory(s, 2, 8, 9, [3, 6], processes=2)
    assert two.coassociation == 2 * 2 * (64 + 8) * 4
    assert two.nmf_sample == ((2 + 3) + 3 * 4 + 2 * 2 * (2 + 3)) * 8 * 9 * 4
    # 2 fits side by side: both classes' copied (3 + 4 rows, 3 times)
    assert class_concept_memory(s, 2, 8, 9, [3, 6], workers=2).nmf_sample == ((3 + 6) + 3 * (3 + 4)) * 8 * 9 * 4
    # labels 2 x 8 int8, pooled + sums 2 x 8 float32; labels waiting (< 64 a class): 2 x 8 int8
    assert two.per_image == 5 * (2 * 8 + 8 * 8 + IMAGE_OVERHEAD) + 5 * 2 * 8
    assert class_concept_memory(s, 2, 8, 9, [3, 6], signed=True).nmf_sample == 0  # tokens: no NMF
    one = class_concept_memory(ClassConceptSettings(nmf_max_images=4, scope="dataset"), 2, 8, 9, [3, 6], pooled=False,
                               n_concepts=300)  # labels past 127: int16 kept, int32 waiting
    assert one.coassociation == 2 * (64 + 8) * 4
    assert one.nmf_sample == (8 + 3 * 4) * 8 * 9 * 4  # 9 images: at most 2 x 4 held; a fit of 4 copied 3 times
    assert one.per_image == 9 * (2 * 8 * 2 + IMAGE_OVERHEAD) + 9 * 2 * 8 * 4


def test_imagenet_validation_at_nf_resnet50_would_need_tens_of_gib() -> None:
    """The case the check is for: 1,000 classes of 50 photos, C = 2048 at 8 x 8, 2 methods."""
    m = class_concept_memory(ClassConceptSettings(scope="both"), *IMAGENET_VAL)
    assert m.coassociation == 2 * 1000 * (2048 * 2048 + 2048) * 4  # 31.3 GiB
    # 24.8 GiB: every photo, the dataset's 200 drawn from them and copied 3 times by its fit
    assert m.nmf_sample == (50_000 + 200 + 3 * 200) * 2048 * 64 * 4
    assert str(m).startswith("57.2 GiB (co-association counts 31.3 GiB, NMF samples 24.8 GiB")
    eight = class_concept_memory(ClassConceptSettings(scope="both"), *IMAGENET_VAL, workers=8)
    assert eight.nmf_sample - m.nmf_sample == 3 * 7 * 50 * 2048 * 64 * 4  # 7 classes' fits beside it


def _acts(c: int = 2048, side: int = 8, signed: bool = False) -> torch.Tensor:
    a = torch.rand(1, c, side, side)
    return a - 0.5 if signed else a


def test_the_check_stops_warns_or_stays_silent() -> None:
    s, configs = ClassConceptSettings(scope="both"), [("cgap", "kmeans", 5), ("cpha", "kmeans", 5)]
    sizes = [50] * 1000

    def need(**kw) -> int:
        return class_concept_memory(ClassConceptSettings(**{"scope": "both", **kw}), *IMAGENET_VAL, n_concepts=5).total

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_class_concept_memory(s, configs, _acts(), sizes, None)  # unknown: no check
        check_class_concept_memory(s, configs, _acts(), sizes, 2 * need() + 2)  # under half: silent
    with pytest.warns(ClassConceptWarning, match="more than half of the"):
        check_class_concept_memory(s, configs, _acts(), sizes, need() + 1)
    with pytest.raises(UserError) as err:
        check_class_concept_memory(s, configs, _acts(), sizes, 20 * 2**30, prefix="callbacks.concepts.")
    text = str(err.value)
    assert "1000 classes (2 configurations, 2048 channels x 64 positions)" in text
    assert "keep 57.2 GiB" in text and "20.0 GiB of memory available" in text
    # the ways out that fit: one matrix for all images (1.5 GiB); not dropping NMF alone (32.4 GiB)
    assert text.endswith(f"set callbacks.concepts.scope=dataset ({size_text(need(scope='dataset'))}), "
                         "or callbacks.concepts.class_concepts=false")
    with pytest.raises(UserError) as err:
        check_class_concept_memory(s, configs, _acts(), sizes, need(nmf_max_images=0) + 1, prefix="callbacks.concepts.")
    assert str(err.value).endswith(
        f"set callbacks.concepts.scope=dataset ({size_text(need(scope='dataset'))}), callbacks.concepts.nmf_max_images=0 "
        f"(no NMF baseline) ({size_text(need(nmf_max_images=0))}), or callbacks.concepts.class_concepts=false")
    with pytest.raises(UserError) as err:  # already one matrix and no NMF: only turning them off is left
        check_class_concept_memory(ClassConceptSettings(scope="dataset", nmf_max_images=0), configs, _acts(), sizes,
                                   1000, prefix="callbacks.concepts.")
    assert str(err.value).endswith("of memory available: set callbacks.concepts.class_concepts=false")
    # 4 processes on this machine: each holds all the counts and a quarter of the images
    per_process = class_concept_memory(s, *IMAGENET_VAL, n_concepts=5, processes=4).total
    with pytest.raises(UserError, match="in each of 4 processes"):
        check_class_concept_memory(s, configs, _acts(), sizes, 4 * per_process - 1, processes=4, local_processes=4)
    check_class_concept_memory(s, configs, _acts(), sizes, 8 * per_process, processes=4, local_processes=4)


def test_signed_activations_are_checked_without_the_nmf_sample_they_drop() -> None:
    """Transformer tokens are signed: the run drops the NMF baseline, so the check does not count it."""
    s, configs, sizes = ClassConceptSettings(scope="both"), [("cgap", "kmeans", 5)], [50] * 1000
    unsigned = class_concept_memory(s, 1, 768, 196, sizes, n_concepts=5).total
    signed = class_concept_memory(s, 1, 768, 196, sizes, n_concepts=5, signed=True).total
    assert signed < unsigned // 2
    check_class_concept_memory(s, configs, _acts(768, 14, signed=True), sizes, 2 * signed + 2)  # ViT-B/16 tokens
    check_class_concept_memory(s, configs, _acts(768, 14), sizes, 2 * signed + 2, signed=True)  # another rank's sign
    with pytest.raises(UserError):  # the same shape, non-negative: the NMF sample counts
        check_class_concept_memory(s, configs, _acts(768, 14), sizes, 2 * signed + 2)


def test_size_text() -> None:
    assert [size_text(n) for n in (512, 1536, 352 * 2**20, 31.3 * 2**30)] == ["512 B", "1.5 KiB", "352 MiB",
                                                                               "31.3 GiB"]
