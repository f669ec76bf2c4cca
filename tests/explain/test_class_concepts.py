"""Class-level concepts: co-association, stability, importance, galleries, NMF, truth rows.

Hand-made partitions and activations where the answer is computed by hand; random
partitions for the chance level of stability; planted factors for NMF; split batches for
the DDP property (merged accumulators equal one accumulator); random activations for the
one pass of a pooling + linear head against the two passes of the full computation.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.metrics import adjusted_rand_score

from clustercam.explain.concepts import concept_importance
from clustercam.explain.concepts.classes.coassociation import (
    DATASET,
    ClassConcepts,
    ClassConceptSettings,
    ClassConceptWarning,
    CoAssociation,
    coassociation_concepts,
    number_by_size,
    random_groups,
)
from clustercam.explain.concepts.classes.linkage import average_linkage_groups
from clustercam.explain.concepts.classes.nmf import NMFSample, nmf_channel_groups, nmf_concepts
from clustercam.explain.concepts.classes.passes import ClassConceptRun, pooled_head_or_none
from clustercam.explain.concepts.classes.scores import ClassConceptScores, max_jaccard
from clustercam.explain.concepts.image.ablation import PooledHead
from clustercam.explain.plots.class_concepts import class_concept_figure, gallery_indices
from clustercam.outputs import CLASS_CONCEPT_COLUMNS, class_gallery_path
from clustercam.outputs import CLASS_CONCEPTS_TRUTH_COLUMNS as TRUTH_COLUMNS
from clustercam.outputs.concept_tables import (
    class_concept_rows,
    class_run_rows,
    class_run_truth_rows,
)
from clustercam.outputs.concept_tables import class_truth_rows as truth_rows

# three images of one class, four channels (channel 3 dropped in image 2)
THREE = torch.tensor([[0, 0, 1, 1], [0, 0, 1, -1], [0, 1, 1, 0]])
# [L_i(c) = L_i(c') >= 0] summed by hand over the three images
THREE_CO = torch.tensor([[3, 2, 0, 1], [2, 3, 1, 0], [0, 1, 3, 1], [1, 0, 1, 2]], dtype=torch.int32)


def pooled_head(n_classes: int, n_channels: int, seed: int = 0):
    """A GAP + linear head with fixed random weights."""
    w = torch.randn(n_channels, n_classes, generator=torch.Generator().manual_seed(seed))
    return lambda a: a.mean((2, 3)) @ w.to(a.dtype)


def one_class(labels: torch.Tensor, n_class: int, **kw) -> ClassConcepts:
    acc = CoAssociation(labels.shape[1], 1)
    acc.update(labels, torch.zeros(len(labels)))
    return acc.finalise(n_class, **kw)


# ---------------------------------------------------------------------------------------
# co-association and class concepts
# ---------------------------------------------------------------------------------------
def test_coassociation_of_three_hand_made_partitions():
    acc = CoAssociation(4, 1)
    acc.update(THREE[:2], torch.zeros(2))
    acc.update(THREE[2:], torch.zeros(1))
    assert torch.equal(acc.co[0], THREE_CO)
    assert acc.presence[0].tolist() == [3, 3, 3, 2] and int(acc.images[0]) == 3
    assert torch.allclose(acc.similarity(0), THREE_CO.double() / 3)
    assert torch.allclose(acc.presence_share(0), torch.tensor([1, 1, 1, 2 / 3], dtype=torch.float64))
    # 1 - S: d01 = 1/3 merges first; then d(2,3) = 2/3 < d({0,1},2) = d({0,1},3) = 5/6
    assert acc.finalise(2).labels.tolist() == [[0, 0, 1, 1]]
    # channel 3 is kept in 2/3 of the images: out at min_presence 0.7; {0,1} then {2}
    assert acc.finalise(2, min_presence=0.7).labels.tolist() == [[0, 0, 1, -1]]
    assert acc.finalise(1).labels.tolist() == [[0, 0, 0, 0]]


def test_average_linkage_differs_from_single_linkage_on_a_chain():
    # S for a chain 0-1-2 (strong links) and 3 (linked to 2 only, weakly): average linkage
    # keeps {0, 1} apart from {2, 3}, single linkage would chain 0-1-2 first
    co = torch.tensor([[10, 9, 2, 0], [9, 10, 8, 0], [2, 8, 10, 7], [0, 0, 7, 10]])
    # distances: d01 .1, d12 .2, d23 .3, d02 .8; average: {0,1}, then d(2,3)=.3 < d({0,1},2)=.5
    assert coassociation_concepts(co, co.diagonal(), 10, 2).tolist() == [0, 0, 1, 1]


def test_average_linkage_groups_are_scikit_learns_partition_also_with_tied_counts():
    from sklearn.cluster import AgglomerativeClustering

    gen = torch.Generator().manual_seed(0)
    for _ in range(30):  # few images and few concepts: co-association counts tie often
        c, n = int(torch.randint(6, 40, (1,), generator=gen)), int(torch.randint(2, 8, (1,), generator=gen))
        labels = torch.randint(-1, 3, (n, c), generator=gen)
        co = ((labels[:, :, None] == labels[:, None, :]) & (labels[:, :, None] >= 0)).sum(0)
        d = (1.0 - co.double() / n).numpy()
        np.fill_diagonal(d, 0.0)
        for k in (2, 3, 5):
            ref = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit(d).labels_
            got = average_linkage_groups(d, k)
            assert len(np.unique(got)) == k
            assert torch.equal(number_by_size(torch.as_tensor(got), k), number_by_size(torch.as_tensor(ref), k))


def test_concepts_numbered_by_decreasing_size_and_scope_both_adds_the_dataset_group():
    labels = torch.tensor([[0, 0, 0, 1, 1, 2], [0, 0, 0, 1, 1, 2], [1, 1, 1, 0, 0, 2]])
    classes = torch.tensor([0, 0, 1])
    acc = CoAssociation(6, 2, scope="both")
    acc.update(labels, classes)
    with pytest.warns(ClassConceptWarning, match="class 1 has one image"):
        cc = acc.finalise(3)
    assert cc.groups == [0, 1, DATASET] and cc.n_images.tolist() == [2, 1, 3]
    assert cc.labels[0].tolist() == [0, 0, 0, 1, 1, 2]
    assert cc.counts()[0].tolist() == [3, 2, 1]
    assert torch.equal(acc.similarity(DATASET) * 3, (acc.co[0] + acc.co[1]).double())
    only = CoAssociation(6, 2, scope="dataset")
    only.update(labels, classes)
    assert torch.equal(only.co[0], acc.co.sum(0)) and only.finalise(3).groups == [DATASET]


def test_merged_accumulators_equal_one_accumulator_exactly():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(-1, 5, (90, 40), generator=gen)
    classes = torch.randint(0, 3, (90,), generator=gen)
    one, a, b = (CoAssociation(40, 3, scope="both") for _ in range(3))
    for s in range(0, 90, 16):
        one.update(labels[s:s + 16], classes[s:s + 16])
    # rank 0 / rank 1 of a DistributedSampler: interleaved, other batch sizes
    a.update(labels[0::2], classes[0::2])
    for s in range(0, 45, 7):
        b.update(labels[1::2][s:s + 7], classes[1::2][s:s + 7])
    summed = {k: a.state()[k] + b.state()[k] for k in a.state()}  # what all_reduce(SUM) does
    merged = CoAssociation.from_state(summed, "both")
    for k, v in one.state().items():
        assert torch.equal(merged.state()[k], v), k
        assert torch.equal(a.merge(b).state()[k], v) if k == "co" else True
    assert torch.equal(merged.finalise(4).labels, one.finalise(4).labels)
    assert one.co.dtype == torch.int32 and one.co.element_size() * 40 * 40 == one.co[0].nbytes


def test_keep_flags_drop_sampler_repeats():
    acc, ref = CoAssociation(4, 1), CoAssociation(4, 1)
    acc.update(torch.cat([THREE, THREE[:1]]), torch.zeros(4), keep=torch.tensor([1, 1, 1, 0]).bool())
    ref.update(THREE, torch.zeros(3))
    assert all(torch.equal(acc.state()[k], ref.state()[k]) for k in ref.state())


# ---------------------------------------------------------------------------------------
# stability, importance, gallery
# ---------------------------------------------------------------------------------------
def test_stability_of_the_hand_made_class():
    cc = one_class(THREE, 2)
    sc = ClassConceptScores(cc, gallery_size=2)
    sc.update(pooled_head(2, 4), torch.rand(3, 4, 2, 2), THREE, torch.zeros(3), torch.arange(3))
    # G0 = {0,1}: J = 1, 1, 1/3; G1 = {2,3}: J = 1, |{2}|/|{2,3}| = 1/2, 1/3
    assert sc.summary()["stability"][0].tolist() == pytest.approx([7 / 9, 11 / 18])
    assert max_jaccard(torch.tensor([[0, 0, -1]]), torch.tensor([[-1, -1, -1]]), 2)[0, 0] == 0
    assert math.isnan(max_jaccard(torch.tensor([[0, 0, -1]]), torch.tensor([[0, 1, 1]]), 2)[0, 1])


def test_stability_is_one_when_every_image_has_the_same_partition():
    part = torch.randint(0, 4, (30,), generator=torch.Generator().manual_seed(1))
    labels = part.expand(20, 30)
    cc = one_class(labels, 4)
    assert adjusted_rand_score(part.numpy(), cc.labels[0].numpy()) == 1.0
    sc = ClassConceptScores(cc, gallery_size=0)
    sc.update(pooled_head(1, 30), torch.rand(20, 30, 2, 2), labels, torch.zeros(20), torch.arange(20))
    assert torch.equal(sc.summary()["stability"], torch.ones(1, 4, dtype=torch.float64))


def _random_level(groups: np.ndarray, n_img: int, c: int, n: int, rng) -> np.ndarray:
    """E[max_l Jaccard(G, l)] against fresh uniform random partitions, by plain loops."""
    out = np.zeros(groups.max() + 1)
    for _ in range(n_img):
        lab = rng.integers(0, n, c)
        for g in range(len(out)):
            gs = set(np.flatnonzero(groups == g))
            out[g] += max(len(gs & set(np.flatnonzero(lab == j))) / len(gs | set(np.flatnonzero(lab == j)))
                          for j in range(n))
    return out / n_img


def test_stability_is_at_the_random_level_when_partitions_are_independent():
    c, n, n_img = 40, 4, 300
    labels = torch.randint(0, n, (n_img, c), generator=torch.Generator().manual_seed(2))
    cc = one_class(labels, n)
    sc = ClassConceptScores(cc, gallery_size=0)
    for s in range(0, n_img, 64):
        sc.update(pooled_head(1, c), torch.rand(len(labels[s:s + 64]), c, 2, 2), labels[s:s + 64],
                  torch.zeros(len(labels[s:s + 64])), torch.arange(s, s + len(labels[s:s + 64])))
    stab = sc.summary()["stability"][0].numpy()
    level = _random_level(cc.labels[0].numpy(), 400, c, n, np.random.default_rng(3))
    assert np.abs(stab - level).max() < 0.03, (stab, level)
    assert stab.max() < 0.5


def test_importance_is_the_mean_and_std_of_the_per_image_ablation():
    gen = torch.Generator().manual_seed(4)
    a = torch.rand(5, 6, 3, 3, generator=gen)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]] * 5)
    cc = one_class(labels, 3)
    head, y = pooled_head(3, 6), torch.tensor([0, 1, 2, 0, 1])
    sc = ClassConceptScores(cc, gallery_size=0)
    sc.update(head, a, labels, torch.zeros(5), torch.arange(5), targets=y)
    per_image = concept_importance(head, a, cc.labels[0].expand(5, 6), y, n_concepts=3).numpy()
    s = sc.summary()
    assert s["importance"][0].numpy() == pytest.approx(per_image.mean(0))
    assert s["importance_std"][0].numpy() == pytest.approx(per_image.std(0, ddof=1))


def test_gallery_keeps_the_top_images_by_concept_mass_across_merges():
    a = torch.zeros(6, 4, 2, 2)
    mass0 = torch.tensor([1.0, 5.0, 3.0, 5.0, 0.5, 4.0])  # concept 0 = channels 0, 1
    a[:, 0] = mass0[:, None, None] / 4
    a[:, 2] = torch.arange(6.0)[:, None, None]            # concept 1 = channels 2, 3
    a[:, 3] = 1.0
    labels = torch.tensor([[0, 0, 1, 1]] * 6)
    cc = one_class(labels, 2)
    head = pooled_head(1, 4)
    one = ClassConceptScores(cc, gallery_size=3)
    one.update(head, a, labels, torch.zeros(6), torch.arange(10, 16))
    gal = one.gallery(0)
    assert gal.index[0].tolist() == [11, 13, 15]  # mass 5, 5 (tie: lower index first), 4
    assert gal.index[1].tolist() == [15, 14, 13]
    assert gal.score[0].tolist() == pytest.approx([5.0, 5.0, 4.0])
    assert torch.allclose(gal.maps[0, 0], a[1, 0] + a[1, 1])
    # two ranks, one image on both (sampler padding): the merged gallery is the same
    r0, r1 = ClassConceptScores(cc, 3), ClassConceptScores(cc, 3)
    r0.update(head, a[0::2], labels[:3], torch.zeros(3), torch.arange(10, 16)[0::2])
    r1.update(head, a[[1, 3, 5, 0]], labels[:4], torch.zeros(4), torch.tensor([11, 13, 15, 10]))
    merged = ClassConceptScores.merged(cc, [r0.state(), r1.state()], gallery_size=3)
    for k in ("gallery_index", "gallery_score", "gallery_maps"):
        assert torch.equal(merged.state()[k], one.state()[k]), k
    assert gallery_indices(gal.index) == [11, 13, 14, 15]


# ---------------------------------------------------------------------------------------
# NMF baseline
# ---------------------------------------------------------------------------------------
def planted(n_rows: int = 400, c: int = 30, k: int = 3, noise: float = 0.01, seed: int = 5):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(k), c // k)
    rng.shuffle(truth)
    w = rng.gamma(1.0, 1.0, (n_rows, k)) * (rng.random((n_rows, k)) < 0.5)
    h = np.zeros((k, c))
    h[truth, np.arange(c)] = rng.uniform(0.5, 2.0, c)
    return w @ h + noise * rng.random((n_rows, c)), truth


def test_nmf_recovers_planted_factors():
    x, truth = planted()
    labels = nmf_channel_groups(torch.tensor(x, dtype=torch.float32), 3, seed=0)
    assert adjusted_rand_score(truth, labels.numpy()) == 1.0
    assert labels.min() >= 0 and torch.bincount(labels).tolist() == [10, 10, 10]


def test_nmf_tolerance_of_the_settings_reaches_scikit_learn(monkeypatch):
    import sklearn.decomposition

    seen = []

    class Recording(sklearn.decomposition.NMF):
        def fit_transform(self, x, y=None, W=None, H=None):
            seen.append(self.tol)
            return super().fit_transform(x, y, W=W, H=H)

    monkeypatch.setattr(sklearn.decomposition, "NMF", Recording)
    x, _ = planted(n_rows=8 * 4)
    a = torch.tensor(x, dtype=torch.float32).view(8, 2, 2, 30).permute(0, 3, 1, 2)
    labels = {("cgap", "kmeans", 3): torch.randint(0, 3, (8, 30))}
    run = ClassConceptRun(ClassConceptSettings(n_random=0, nmf_tol=2e-3), list(labels), 30, 1)
    run.observe(a, labels, torch.zeros(8), torch.arange(8))
    run.finalise()
    assert seen == [2e-3]
    got = run.concepts[("cgap", "kmeans", 3)]["nmf"][0].labels[0]
    seen.clear()
    assert torch.equal(got, nmf_channel_groups(a.permute(0, 2, 3, 1).reshape(-1, 30), 3, tol=2e-3)) and seen == [2e-3]


def test_nmf_concepts_from_a_sample_of_image_activations():
    x, truth = planted(n_rows=40 * 4)
    a = torch.tensor(x, dtype=torch.float32).view(40, 2, 2, 30).permute(0, 3, 1, 2)  # B x C x h x w
    a[:, 0] = 0.0  # a dead channel: no loading
    sample = NMFSample(max_images=25, seed=0)
    for s in range(0, 40, 8):
        sample.update(a[s:s + 8], torch.zeros(8), torch.arange(s, s + 8))
    assert len(sample.activations(0)) == 25
    like = ClassConcepts([0], torch.zeros(1, 30, dtype=torch.long), 3, torch.tensor([40]))
    nmf = nmf_concepts(sample, like)
    assert nmf.source == "nmf" and int(nmf.labels[0, 0]) == -1
    assert adjusted_rand_score(truth[1:], nmf.labels[0, 1:].numpy()) == 1.0


def test_nmf_sample_does_not_depend_on_batch_order_or_ranks():
    a = torch.rand(50, 3, 1, 1)
    y = torch.arange(50) % 2
    one = NMFSample(max_images=7, seed=3)
    one.update(a, y, torch.arange(50))
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    r0, r1 = NMFSample(7, 3), NMFSample(7, 3)
    for s in range(0, 25, 4):
        r0.update(a[perm[s:min(s + 4, 25)]], y[perm[s:min(s + 4, 25)]], perm[s:min(s + 4, 25)])
    r1.update(a[perm[20:]], y[perm[20:]], perm[20:])  # 5 images on both ranks
    rows = {k: torch.cat([r0.state()[k], r1.state()[k]]) for k in r0.state()}
    for merged in (NMFSample.from_state(rows, 7, 3), r0.merge(r1)):
        for g in (0, 1):
            assert torch.equal(merged.activations(g), one.activations(g))
    both = NMFSample(7, 3, scope="both")
    both.update(a, y, torch.arange(50))
    only = NMFSample(7, 3, scope="dataset")
    only.update(a, y, torch.arange(50))
    assert torch.equal(both.activations(DATASET), only.activations(DATASET))


def test_nmf_sample_compacted_is_read_without_copies_until_new_images_come():
    a, y = torch.rand(30, 3, 2, 2), torch.arange(30) % 2
    sample, ref = NMFSample(6, 1, scope="both"), NMFSample(6, 1, scope="both")
    sample.update(a[:20], y[:20], torch.arange(20))
    first = sample.compact().activations(0)
    assert sample.activations(0) is first  # compacted: what threads read side by side
    sample.update(a[20:], y[20:], torch.arange(20, 30))
    ref.update(a, y, torch.arange(30))
    for g in (0, 1, DATASET):
        assert torch.equal(sample.activations(g), ref.activations(g))
    assert not torch.equal(sample.activations(0), first)  # the later images entered the bottom-k


def test_finalise_in_threads_gives_the_serial_class_concepts_bit_for_bit(monkeypatch):
    from clustercam.explain.concepts.classes import passes

    gen = torch.Generator().manual_seed(3)
    a = torch.relu(torch.randn(36, 48, 3, 3, generator=gen))
    y = torch.arange(36) % 3
    cfgs = [("cgap", "kmeans", 3), ("cpha", "kmeans", 4)]
    parts = {c: torch.randint(-1, c[2], (36, 48), generator=gen) for c in cfgs}
    workers: list[int] = []
    real = passes.call_all
    monkeypatch.setattr(passes, "call_all", lambda t, n, cost, progress=None: (workers.append(n), real(t, n, cost, progress))[1])
    found = []
    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            run = ClassConceptRun(ClassConceptSettings(scope="both", n_random=2, nmf_max_images=8), cfgs, 48, 3)
            for s in range(0, 36, 10):
                run.observe(a[s:s + 10], {c: p[s:s + 10] for c, p in parts.items()}, y[s:s + 10],
                            torch.arange(s, min(s + 10, 36)))
            run.finalise()
        finally:
            torch.set_num_threads(before)
        found.append({(c, src, r): m.labels for c, f in run.concepts.items() for src, ms in f.items()
                      for r, m in enumerate(ms)})
    assert workers == [0, 2]  # serial, then two threads
    serial, threaded = found
    assert serial.keys() == threaded.keys() and len(serial) == 2 * (1 + 1 + 2)
    assert all(torch.equal(serial[k], threaded[k]) for k in serial)
    assert all(serial[k].shape == (4, 48) for k in serial)  # 3 classes + all images
    for c in run.configs:  # the one-group-after-the-other computation, from the public pieces
        cc = run.co[c].finalise(c.n_concepts)
        assert torch.equal(threaded[c, "coassociation", 0], cc.labels)
        assert torch.equal(threaded[c, "nmf", 0], nmf_concepts(run.sample, cc).labels)
        assert torch.equal(threaded[c, "random", 1], random_groups(cc, 2)[1].labels)


def test_nmf_concepts_in_threads_equal_one_after_the_other():
    a = torch.relu(torch.randn(24, 20, 2, 2, generator=torch.Generator().manual_seed(4)))
    sample = NMFSample(10, 0, scope="both")
    sample.update(a, torch.arange(24) % 3, torch.arange(24))
    like = ClassConcepts([0, 1, 2, DATASET], torch.zeros(4, 20, dtype=torch.long), 3, torch.tensor([8, 8, 8, 24]))
    one, two = nmf_concepts(sample, like, workers=0), nmf_concepts(sample, like, workers=2)
    assert torch.equal(one.labels, two.labels) and one.labels.shape == (4, 20)
    assert torch.equal(one.labels[0], nmf_channel_groups(sample.activations(0).permute(0, 2, 3, 1).reshape(-1, 20), 3))


# ---------------------------------------------------------------------------------------
# degenerate classes: NaN and a warning, never a crash
# ---------------------------------------------------------------------------------------
def _run(a: torch.Tensor, labels: torch.Tensor, y: torch.Tensor, n: int, n_classes: int = 2):
    settings = ClassConceptSettings(n_class=n, n_random=2, gallery_size=2, nmf_max_images=10)
    cfg = ("cgap", "kmeans", n)
    run = ClassConceptRun(settings, [cfg], a.shape[1], n_classes)
    run.observe(a, {cfg: labels}, y, torch.arange(len(y)))
    run.finalise(["c0", "c1"])
    masks = torch.zeros(len(y), 3, *a.shape[-2:], dtype=torch.bool)
    masks[:, 0, 0, 0] = masks[:, 1, -1, -1] = masks[:, 2, 0, -1] = True
    run.score(pooled_head(n_classes, a.shape[1]), a, {cfg: labels}, y, torch.arange(len(y)), masks=masks)
    return run


def test_a_class_of_one_image_gives_nan_stability_and_std():
    a = torch.rand(4, 6, 2, 2)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]] * 4)
    with pytest.warns(ClassConceptWarning, match="class c1 has one image"):
        run = _run(a, labels, torch.tensor([0, 0, 0, 1]), 3)
    rows = [r for r in class_run_rows(run) if r["class"] == 1 and r["method"] == "cgap"]
    assert len(rows) == 3 and all(r["n_images"] == 1 for r in rows)
    assert all(math.isnan(r["stability"]) and math.isnan(r["importance_std"]) for r in rows)
    assert all(math.isfinite(r["importance"]) for r in rows)
    assert all(math.isfinite(r["stability"]) for r in class_run_rows(run) if r["class"] == 0)


def test_all_zero_activations_give_nan_scores_and_warnings():
    a = torch.zeros(4, 6, 2, 2)
    labels = torch.full((4, 6), -1)
    with pytest.warns(ClassConceptWarning, match="no channel is kept"):
        run = _run(a, labels, torch.tensor([0, 0, 1, 1]), 3)
    rows = class_run_rows(run)
    assert len(rows) == 2 * 3 * 2 and all(r["channels"] == 0 for r in rows)
    assert all(math.isnan(r[k]) for r in rows for k in ("stability", "importance", "importance_std"))
    truth = class_run_truth_rows(run)
    assert len(truth) == 2 * 3 and all(math.isnan(r["part_a_mass"]) for r in truth)


def test_fewer_channels_than_concepts_leaves_the_extra_concepts_empty():
    a = torch.rand(4, 3, 2, 2) + 0.1
    labels = torch.tensor([[0, 1, 1]] * 4)
    with pytest.warns(ClassConceptWarning, match="3 channels pass min_presence for 5"):
        run = _run(a, labels, torch.tensor([0, 0, 1, 1]), 5)
    rows = [r for r in class_run_rows(run) if r["class"] == 0 and r["method"] == "cgap"]
    assert [r["channels"] for r in rows] == [1, 1, 1, 0, 0]
    assert all(math.isnan(r["importance"]) and math.isnan(r["stability"]) for r in rows[3:])
    assert all(math.isfinite(r["stability"]) for r in rows[:3])


def test_planted_class_concepts_are_found_from_cgap_partitions_and_by_nmf():
    # every image: 3 blobs at random places; channels 0-7 copy blob 0, 8-15 blob 1, 16-23
    # blob 2 (random scales, noise): CGAP finds the groups per image, the class level too
    from clustercam.explain.concepts import cluster_channels

    gen = torch.Generator().manual_seed(7)
    truth = torch.arange(24) // 8
    blobs = torch.zeros(30, 3, 8, 8)
    for i in range(30):
        for g in range(3):
            r, c = torch.randint(0, 6, (2,), generator=gen).tolist()
            blobs[i, g, r:r + 3, c:c + 3] = 1.0
    scale = torch.rand(30, 24, 1, 1, generator=gen) + 0.5
    a = (blobs[:, truth] * scale + 0.05 * torch.rand(30, 24, 8, 8, generator=gen)).clamp_min(0)
    parts = cluster_channels(a, method="cgap", n_concepts=3, n_init=3).labels
    settings = ClassConceptSettings(n_class=3, n_random=0, gallery_size=2, nmf_max_images=30)
    cfg = ("cgap", "kmeans", 3)
    run = ClassConceptRun(settings, [cfg], 24, 1)
    run.observe(a, {cfg: parts}, torch.zeros(30), torch.arange(30))
    run.finalise()
    run.score(pooled_head(2, 24), a, {cfg: parts}, torch.zeros(30), torch.arange(30))
    for src in ("coassociation", "nmf"):
        found = run.concepts[cfg][src][0].labels[0]
        assert adjusted_rand_score(truth.numpy(), found.numpy()) == 1.0, src
    stab = [r["stability"] for r in class_run_rows(run) if r["method"] == "cgap"]
    assert min(stab) > 0.9


# ---------------------------------------------------------------------------------------
# the CSV rows
# ---------------------------------------------------------------------------------------
def parts_batch():
    """Two images 4 x 4; channels 0-1 on part A (top-left), 2-3 on part B (bottom-right),
    4-5 on the distractor (top-right); masks at the activation size (no resize)."""
    a = torch.zeros(2, 6, 4, 4)
    a[:, 0:2, :2, :2] = 1.0
    a[:, 2:4, 2:, 2:] = 2.0
    a[:, 4:6, :2, 2:] = 0.5
    masks = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    masks[:, 0, :2, :2] = masks[:, 1, 2:, 2:] = masks[:, 2, :2, 2:] = True
    return a, masks


def test_truth_rows_on_hand_built_masks():
    a, masks = parts_batch()
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2)
    cc = ClassConcepts([0], labels[:1], 3, torch.tensor([2]))
    w = torch.zeros(6, 2)

    def head(x):  # class 0 from both parts (A weighs more), class 1 from the distractor
        return x.mean((2, 3)) @ w

    w[0:2, 0], w[2:4, 0], w[4:6, 1] = 4.0, 1.0, 1.0
    sc = {"coassociation": ClassConceptScores(cc, 0),
          "random": [ClassConceptScores(c, 0, stability=False) for c in random_groups(cc, 4, seed=0)]}
    for s in [sc["coassociation"], *sc["random"]]:
        s.update(head, a, labels, torch.zeros(2), torch.arange(2), masks=masks)
    assert sc["coassociation"].summary()["masses"][0].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    rows = truth_rows(sc, "cgap", "kmeans")
    assert [r["source"] for r in rows] == ["coassociation", "random"]
    assert all(list(r) == list(TRUTH_COLUMNS) for r in rows)
    assert [rows[0][k] for k in TRUTH_COLUMNS[4:]] == [1.0, 1.0, 1.0, 1.0]
    rnd = rows[1]
    assert 0 <= rnd["part_a_mass"] < 1 and 0 <= rnd["part_b_mass"] < 1 and 0 <= rnd["parts_in_top2"] <= 1
    # the distractor's concept becomes the second most important: parts not in the top 2
    w[2:4, 0], w[4:6, 0] = 0.5, 6.0
    other = ClassConceptScores(cc, 0)
    other.update(head, a, labels, torch.zeros(2), torch.arange(2), masks=masks)
    assert truth_rows({"coassociation": other}, "cgap", "kmeans")[0]["parts_in_top2"] == 0.0


def test_class_concept_rows_have_the_csv_columns():
    cc = one_class(THREE, 2)
    sc = ClassConceptScores(cc, gallery_size=1)
    sc.update(pooled_head(2, 4), torch.rand(3, 4, 2, 2), THREE, torch.zeros(3), torch.arange(3))
    rows = class_concept_rows(cc, sc, "cgap", "kmeans", ["tench"])
    assert [list(r) for r in rows] == [list(CLASS_CONCEPT_COLUMNS)] * 2
    assert [(r["class_name"], r["concept"], r["channels"], r["n_images"]) for r in rows] == \
        [("tench", 0, 2, 3), ("tench", 1, 2, 3)]
    nmf = ClassConcepts(cc.groups, cc.labels, 2, cc.n_images, source="nmf")
    assert {(r["method"], r["algorithm"]) for r in class_concept_rows(nmf, sc, "cgap", "kmeans")} == \
        {("nmf", "cgap/kmeans")}


# ---------------------------------------------------------------------------------------
# the run: two simulated ranks equal one process; the gallery figure
# ---------------------------------------------------------------------------------------
def _batches(n_img: int = 36, c: int = 12, seed: int = 6):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n_img, c, 4, 4, generator=gen) * (torch.rand(n_img, c, 1, 1, generator=gen) > 0.2)
    labels = torch.randint(0, 3, (n_img, c), generator=gen).masked_fill(a.flatten(2).amax(2) == 0, -1)
    _, masks = parts_batch()
    return a, labels, torch.arange(n_img) % 3, masks[:1].expand(n_img, -1, -1, -1)


def _passes(run: ClassConceptRun, a, labels, y, idx, masks, batch: int) -> None:
    cfg = run.configs[0]
    for s in range(0, len(y), batch):
        run.observe(a[s:s + batch], {cfg: labels[s:s + batch]}, y[s:s + batch], idx[s:s + batch])


def _score(run: ClassConceptRun, head, a, labels, y, idx, masks, batch: int) -> None:
    cfg = run.configs[0]
    for s in range(0, len(y), batch):
        run.score(head, a[s:s + batch], {cfg: labels[s:s + batch]}, y[s:s + batch], idx[s:s + batch],
                  masks=masks[s:s + batch])


def test_two_ranks_give_the_one_process_tables():
    a, labels, y, masks = _batches()
    idx, head = torch.arange(len(y)), pooled_head(3, 12)
    settings = ClassConceptSettings(n_class=3, gallery_size=3, nmf_max_images=8, n_random=3, scope="both")
    cfg = [("cgap", "kmeans", 3)]
    one = ClassConceptRun(settings, cfg, 12, 3, map_size=(4, 4))
    _passes(one, a, labels, y, idx, masks, 8)
    one.finalise()
    _score(one, head, a, labels, y, idx, masks, 8)

    ranks = [ClassConceptRun(settings, cfg, 12, 3, map_size=(4, 4)) for _ in range(2)]
    part = [idx[r::2] for r in range(2)]
    for run, p in zip(ranks, part):
        _passes(run, a[p], labels[p], y[p], p, masks[p], 5)
    counts = [r.counts_state() for r in ranks]
    summed = {k: counts[0][k] + counts[1][k] for k in counts[0]}  # all_reduce(SUM)
    samples = [r.sample_state() for r in ranks]
    rows = {k: torch.cat([s[k] for s in samples]) for k in samples[0]}  # gather_split
    for run in ranks:
        run.load_counts_state(summed)
        run.load_sample_state(rows)
        run.finalise()
    ranks[1].load_concepts_state(ranks[0].concepts_state())  # broadcast from rank 0
    for run, p in zip(ranks, part):
        _score(run, head, a[p], labels[p], y[p], p, masks[p], 5)
    states = [r.scores_state() for r in ranks]  # all_gather, split by rank
    ranks[0].load_scores_states(states)

    got, want = class_run_rows(ranks[0], ["a", "b", "c"]), class_run_rows(one, ["a", "b", "c"])
    assert len(got) == len(want) == (3 + 1) * 3 * 2
    truth = class_run_truth_rows(ranks[0]), class_run_truth_rows(one)
    assert len(truth[0]) == len(truth[1]) == (3 + 1) * 3
    for g, w in [*zip(got, want), *zip(*truth)]:
        assert list(g) == list(w)
        for k, v in w.items():  # scores: the sums' order differs; the rest exactly
            assert g[k] == (pytest.approx(v, rel=1e-12, nan_ok=True) if isinstance(v, float) else v), k
    for g, w in zip(ranks[0].galleries(), one.galleries()):
        assert (g.group, g.config, g.source) == (w.group, w.config, w.source)
        assert torch.equal(g.figure["index"], w.figure["index"])
        assert torch.equal(g.figure["maps"], w.figure["maps"])


def test_gallery_figure_one_row_per_concept(tmp_path):
    a, labels, y, masks = _batches()
    settings = ClassConceptSettings(n_class=3, gallery_size=4, nmf_max_images=8, n_random=0)
    run = ClassConceptRun(settings, [("cgap", "kmeans", 3)], 12, 3)
    _passes(run, a, labels, y, torch.arange(len(y)), masks, 12)
    run.finalise()
    _score(run, pooled_head(3, 12), a, labels, y, torch.arange(len(y)), masks, 12)
    figs = list(run.galleries(["a", "b", "c"]))
    paths = [class_gallery_path("abc"[f.group], f.config, f.source, run.configs) for f in figs]
    assert [p.split("/")[-1] for p in paths] == ["a_cgap.png", "b_cgap.png", "c_cgap.png", "a_nmf-cgap.png",
                                                 "b_nmf-cgap.png", "c_nmf-cgap.png"]
    kw = figs[0].figure
    stem = paths[0].split("/")[-1].removesuffix(".png")
    images = {i: torch.rand(3, 16, 16) for i in gallery_indices(kw["index"])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = class_concept_figure(images=images, **kw)
    assert isinstance(fig, Figure) and not fig.axes  # figure-level panels and colour bar
    assert [t.get_text() for t in fig.texts if t.get_gid() == "colourbar-label"] == ["class concept map (min-max)"]
    texts = [t.get_text() for t in fig.texts if not t.get_gid() and t is not fig._suptitle]
    labels = [t for t in texts if t.startswith("G")]
    assert len(labels) == 3 and len([t for t in texts if t.startswith("#")]) == int((kw["index"] >= 0).sum())
    fig.savefig(tmp_path / f"{stem}.png")
    assert (tmp_path / "a_cgap.png").stat().st_size > 0


@pytest.mark.parametrize("bad", [{"min_presence": 0}, {"min_presence": 1.5}, {"n_class": 0},
                                 {"gallery_size": -1}, {"nmf_max_images": 2.5}, {"scope": "image"},
                                 {"nmf_tol": 0}])
def test_bad_settings_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ClassConceptSettings(**bad)


def test_bad_inputs_are_refused():
    acc = CoAssociation(4, 2)
    with pytest.raises(ValueError, match="labels must be B x 4"):
        acc.update(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="classes must be in"):
        acc.update(torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        nmf_channel_groups(-torch.ones(3, 2), 2)


def test_truth_table_averages_classes_then_runs():
    from clustercam.outputs.concept_markdown import class_truth_table as truth_table_markdown

    def rows(shift):
        return [{"class": c, "method": "cgap", "algorithm": "kmeans", "source": s,
                 "part_a_mass": str(base + shift + c / 10), "part_b_mass": base, "distractor_mass": 0.0,
                 "parts_in_top2": float(c == 0)}
                for s, base in (("random", 0.1), ("coassociation", 0.3)) for c in (0, 1, DATASET)]

    table = truth_table_markdown([rows(0.0), rows(0.1)]).splitlines()
    assert table[0].startswith("| method | algorithm | source | part_a_mass")
    # seed means over classes 0 and 1: 0.35 and 0.45 -> 0.400 +- 0.071
    assert table[2] == "| cgap | kmeans | coassociation | 0.400 ± 0.071 | 0.300 ± 0.000 | " \
                       "0.000 ± 0.000 | 0.500 ± 0.000 | 2 |"
    assert table[3].startswith("| cgap | kmeans | random | 0.200 ± 0.071")


@pytest.mark.parametrize("n_img, world, batch", [(99, 2, 32), (100, 3, 7), (10, 4, 3)])
def test_padding_rule_of_the_integration_plan_gives_one_process_counts(n_img, world, batch):
    # an unshuffled DistributedSampler: rank r's j-th test sample is position r + j * world of the padded
    # list; positions >= N are the DistributedSampler's repeats
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    labels = torch.randint(-1, 4, (n_img, 8), generator=torch.Generator().manual_seed(n_img))
    classes = torch.arange(n_img) % 2
    ds = TensorDataset(torch.arange(n_img))
    one, summed = CoAssociation(8, 2), CoAssociation(8, 2)
    one.update(labels, classes)
    for r in range(world):
        acc, seen = CoAssociation(8, 2), 0
        for (i,) in DataLoader(ds, batch_size=batch, sampler=DistributedSampler(ds, world, r, shuffle=False)):
            keep = (r + (seen + torch.arange(len(i))) * world) < n_img
            seen += len(i)
            acc.update(labels[i], classes[i], keep)
        summed.merge(acc)
    assert all(torch.equal(summed.state()[k], one.state()[k]) for k in one.state())


# ---------------------------------------------------------------------------------------
# one pass (a pooling + linear head) against two passes
# ---------------------------------------------------------------------------------------
def _one_and_two_passes(head, pooled: PooledHead, a, labels, y, targets, masks, batch: int = 7,
                        **settings) -> tuple[ClassConceptRun, ClassConceptRun]:
    """The same images through the one pass (scores from the pooled numbers, gallery maps
    from the NMF sample or recomputed for the gallery images) and through two passes (``score`` with the full head
    and the activations again)."""
    s = ClassConceptSettings(**{"n_class": 3, "gallery_size": 3, "nmf_max_images": 8, "n_random": 2,
                                "scope": "both", **settings})
    cfg, n_img = ("cgap", "kmeans", 3), len(y)
    idx = torch.arange(100, 100 + n_img)
    one = ClassConceptRun(s, [cfg], a.shape[1], 3, map_size=a.shape[-2:],
                          pooled_head=pooled_head_or_none(head, pooled, a))
    two = ClassConceptRun(s, [cfg], a.shape[1], 3, map_size=a.shape[-2:])
    for run in (one, two):
        for st in range(0, n_img, batch):
            sl = slice(st, st + batch)
            m = None if masks is None else masks[sl]
            run.observe(a[sl], {cfg: labels[sl]}, y[sl], idx[sl], targets=targets[sl], masks=m)
        run.finalise()
    assert one.one_pass and not two.one_pass
    one.score_observed()
    for st in range(0, n_img, batch):
        sl = slice(st, st + batch)
        two.score(head, a[sl], {cfg: labels[sl]}, y[sl], idx[sl], targets[sl],
                  None if masks is None else masks[sl])
    # the maps of the gallery images only, in batches of 4 (two passes drew every image's)
    asked: list[int] = []

    def activations_of(index: list[int]) -> torch.Tensor:
        asked.extend(index)
        return a[torch.tensor(index) - 100]

    assert one.fill_gallery_maps(activations_of, batch_size=4) == len(asked)
    # each gallery image once, no other; none the NMF sample kept (nmf_max_images of a class)
    kept, _ = one.sample.find(two.gallery_images())
    assert sorted(asked) == sorted(set(two.gallery_images()) - set(kept))
    one.asked, one.kept = asked, kept  # for the tests' own checks
    return one, two


def _same_results(one: ClassConceptRun, two: ClassConceptRun, rel: float) -> None:
    for got, want in ((class_run_rows(one), class_run_rows(two)),
                      (class_run_truth_rows(one), class_run_truth_rows(two))):
        assert len(got) == len(want) and (len(want) > 0 or two.masked is False)
        for g, w in zip(got, want):
            assert list(g) == list(w)
            for k, v in w.items():
                assert g[k] == (pytest.approx(v, rel=rel, abs=1e-12, nan_ok=True) if isinstance(v, float) else v), k
    for g, w in zip(one.galleries(), two.galleries()):
        assert (g.group, g.config, g.source) == (w.group, w.config, w.source)
        assert torch.equal(g.figure["index"], w.figure["index"])
        assert torch.allclose(g.figure["maps"], w.figure["maps"], rtol=1e-5, atol=1e-6)
        assert g.figure["maps"].abs().sum() > 0


def _random_images(n_img: int = 40, c: int = 24, hw: int = 5, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n_img, c, hw, hw, generator=gen) * (torch.rand(n_img, c, 1, 1, generator=gen) > 0.2)
    labels = torch.randint(0, 3, (n_img, c), generator=gen).masked_fill(a.flatten(2).amax(2) == 0, -1)
    masks = torch.rand(n_img, 3, 12, 12, generator=gen) < 0.3  # resized maps: the region kernels
    masks[0, 2] = False  # an empty distractor mask: NaN in both
    y = torch.arange(n_img) % 3
    return a, labels, y, masks


def test_one_pass_equals_two_passes_on_random_activations_with_a_pooled_head():
    """Average pool + linear: the importances are the same arithmetic (bit-equal here), the
    part masses the same sums in another order, the galleries the same images and maps."""
    a, labels, y, masks = _random_images()
    linear = torch.nn.Linear(a.shape[1], 5)
    torch.nn.init.normal_(linear.weight, generator=torch.Generator().manual_seed(0))
    one, two = _one_and_two_passes(lambda x: linear(x.mean((2, 3))),
                                   PooledHead(pool=lambda x: x.mean((2, 3)), linear=linear),
                                   a, labels, y, (y + 2) % 5, masks)
    assert one.batches[0].pooled.sums is None  # the average pool: C numbers an image
    assert len(one.asked) > 0 and len(one.kept) > 0  # gallery images from the sample and recomputed
    _same_results(one, two, rel=1e-6)  # the two passes sum float32 maps
    want = class_run_truth_rows(two)
    assert any(math.isnan(r["part_a_mass"]) for r in want) or all(0 <= r["part_a_mass"] <= 1 for r in want)


def test_one_pass_equals_two_passes_with_a_max_pool_and_without_masks():
    """Another channel-wise pool: the channel sums are kept beside it; no masks: no
    random controls scored, no truth rows, in either."""
    a, labels, y, _ = _random_images(n_img=23, c=16, hw=4, seed=3)
    linear = torch.nn.Linear(a.shape[1], 3)

    def pool(x):
        return x.amax((2, 3))

    one, two = _one_and_two_passes(lambda x: linear(pool(x)), PooledHead(pool=pool, linear=linear),
                                   a, labels, y, y, None, batch=5, scope="class")
    assert one.batches[0].pooled.sums is not None
    assert class_run_truth_rows(one) == class_run_truth_rows(two) == []
    _same_results(one, two, rel=1e-6)  # the two passes sum float32 maps


def test_a_head_that_is_not_pooling_plus_linear_takes_the_second_pass():
    a, labels, y, masks = _random_images(n_img=6, c=8, hw=4)
    linear = torch.nn.Linear(8, 3)

    def head(x):  # a 2 x 2 pool before the linear layer: masking does not commute with a mean
        return linear(torch.nn.functional.avg_pool2d(x, 2).flatten(2).pow(2).mean(-1))

    claimed = PooledHead(pool=lambda x: x.mean((2, 3)), linear=linear)
    with pytest.warns(RuntimeWarning, match="does not reproduce the head"):
        assert pooled_head_or_none(head, claimed, a) is None
    assert pooled_head_or_none(head, None, a) is None
    s = ClassConceptSettings(n_class=2, gallery_size=2, nmf_max_images=0, n_random=0)
    cfg = ("cgap", "kmeans", 3)
    run = ClassConceptRun(s, [cfg], 8, 3, pooled_head=None)
    run.observe(a, {cfg: labels}, y, torch.arange(6))
    run.finalise()
    assert not run.one_pass and run.batches[0].pooled is None
    with pytest.raises(RuntimeError, match="second pass"):
        run.score_observed()
    # a pooled head, but part masks over negative activations: the clip needs the maps
    good = pooled_head_or_none(lambda x: linear(x.mean((2, 3))), claimed, a)
    neg = ClassConceptRun(s, [cfg], 8, 3, pooled_head=good)
    neg.observe(a, {cfg: labels}, y, torch.arange(6), masks=masks[:6])
    assert neg.one_pass
    neg.observe(a - 0.5, {cfg: labels}, y, torch.arange(6, 12), masks=masks[:6])
    assert not neg.one_pass


def test_finalise_reports_every_clustering_and_nmf_fit() -> None:
    """2 classes and the dataset group (scope both) x 2 configurations of the same n: 6
    co-association clusterings and 3 NMF fits (NMF sees the sample, not the partitions:
    one fit per group for both configurations)."""
    from clustercam.explain.concepts import cluster_channels

    settings = ClassConceptSettings(n_random=0, nmf_max_images=4, scope="both")
    configs = [("cgap", "kmeans", 2), ("cpha", "kmeans", 2)]
    run = ClassConceptRun(settings, configs, n_channels=8, n_classes=2)
    torch.manual_seed(0)
    a, y = torch.rand(6, 8, 3, 3), torch.tensor([0, 0, 0, 1, 1, 1])
    labels = cluster_channels(a, n_concepts=2, n_init=2).labels
    run.observe(a, {c: labels for c in configs}, y, torch.arange(6))
    seen: list[tuple[int, int]] = []
    run.finalise(progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 9) for i in range(1, 10)]


def test_the_dataset_sample_of_scope_both_is_the_bottom_k_of_the_class_samples_rows() -> None:
    """Cut from the class samples without copying them all: the same rows, in the same (key)
    order, as the bottom k of their concatenation."""
    from clustercam.explain.concepts.classes.nmf import _bottom

    torch.manual_seed(0)
    sample = NMFSample(max_images=5, seed=3, scope="both")
    for b in range(6):
        idx = torch.arange(b * 7, (b + 1) * 7)
        sample.update(torch.rand(7, 4, 2, 2), torch.randint(0, 3, (7,)), idx)
    parts = [sample._compact(g) for g in sample.groups()]
    key, idx, acts = (torch.cat([p[j] for p in parts]) for j in range(3))
    assert torch.equal(sample.activations(-1), acts[_bottom(key, idx, 5)])
    assert sample.activations(-1).shape == (5, 4, 2, 2)


def test_ranks_that_read_the_sign_apart_give_up_the_same_things():
    """One rank meets a signed batch (it drops the NMF sample; with part masks, the one pass),
    the other never does: after the summed counts both have given up the same, so neither
    waits in a gather or a second pass the other skips."""
    settings = ClassConceptSettings(n_random=0, nmf_max_images=4)
    ph = PooledHead(pool=lambda x: x.mean((2, 3)), linear=lambda p: p[:, :2], checked=True)
    ranks = [ClassConceptRun(settings, [("cgap", "kmeans", 2)], 6, 2, map_size=(3, 3), pooled_head=ph)
             for _ in range(2)]
    cfg, y, masks = ranks[0].configs[0], torch.tensor([0, 1]), torch.ones(2, 3, 3, 3)
    labels = {cfg: torch.randint(0, 2, (2, 6))}
    with pytest.warns(ClassConceptWarning, match="signed"):
        ranks[0].observe(torch.rand(2, 6, 3, 3) - 0.5, labels, y, torch.arange(2), targets=y, masks=masks)
    ranks[1].observe(torch.rand(2, 6, 3, 3), labels, y, torch.arange(2, 4), targets=y, masks=masks)
    assert ranks[0].sample is None and not ranks[0].one_pass
    assert ranks[1].sample is not None and ranks[1].one_pass
    counts = [r.counts_state() for r in ranks]
    summed = {k: counts[0][k] + counts[1][k] for k in counts[0]}  # all_reduce(SUM)
    for run in ranks:
        run.load_counts_state(summed)
        assert run.sample is None and not run.one_pass
    alone = ClassConceptRun(settings, [("cgap", "kmeans", 2)], 6, 2, map_size=(3, 3), pooled_head=ph)
    alone.observe(torch.rand(2, 6, 3, 3), labels, y, torch.arange(2), targets=y, masks=masks)
    alone.load_counts_state(alone.counts_state())  # one process: nothing given up stays so
    assert alone.sample is not None and alone.one_pass
