"""Concept fidelity: deletion / insertion over whole concepts, where the answer is known."""

import math

import pytest
import torch

from clustercam.explain.concepts import concept_importance
from clustercam.explain.concepts.image.fidelity import (
    PooledHead,
    concept_fidelity,
    concept_order,
    curve_auc,
    masked_target_probs,
    random_partitions,
)


def group_head(c: int = 12, group=(0, 1, 2), weight: float = 3.0):
    """3 classes; only class 0's logit depends on the channels of ``group`` (a linear head)."""
    w = torch.zeros(3, c)
    w[0, list(group)] = weight
    fc = torch.nn.Linear(c, 3)
    with torch.no_grad():
        fc.weight.copy_(w)
        fc.bias.zero_()

    def head(a):
        return fc(a.mean((2, 3)))

    return head, PooledHead(pool=lambda a: a.mean((2, 3)), linear=fc)


def toy(b: int = 4, c: int = 12):
    torch.manual_seed(0)
    a = torch.rand(b, c, 3, 3) + 0.5
    labels = torch.arange(c).repeat(b, 1) // 3  # 4 concepts of 3 channels: 0 = channels 0-2
    return a, labels


def test_deleting_the_concept_the_head_reads_drops_p_t_to_its_floor_at_step_one():
    a, labels = toy()
    head, _ = group_head()
    targets = torch.zeros(4, dtype=torch.long)
    imp = torch.tensor([[90.0, 1.0, 0.5, 0.0]]).repeat(4, 1)
    fid = concept_fidelity(head, a, labels, targets, imp, repeats=20, seed=0)
    d = fid.deletion["importance"]
    assert d.shape == (4, 5) and torch.allclose(d[:, 0], torch.ones(4, dtype=d.dtype))
    floor = d[:, -1]  # every kept channel zeroed: logits 0, p_t = 1/3
    p_t = torch.softmax(head(a).double(), -1)[:, 0]
    assert torch.allclose(floor, (1 / 3) / p_t)
    assert torch.allclose(d[:, 1], floor) and torch.allclose(d[:, 2:], floor[:, None].expand(4, 3))
    ins = fid.insertion["importance"]  # concept 0 alone restores p_t
    assert torch.allclose(ins[:, 0], floor) and torch.allclose(ins[:, 1:], torch.ones(4, 4, dtype=ins.dtype))
    # a random order deletes concept 0 later on average: worse (higher) deletion AUC
    aucs = fid.aucs
    assert (aucs["random_order"]["deletion_auc"] > aucs["importance"]["deletion_auc"] + 0.1).all()
    assert (aucs["random_order"]["insertion_auc"] < aucs["importance"]["insertion_auc"] - 0.1).all()
    # hand-computed: y = 1, f, f, f, f over x = 0, 1/4, ..., 1
    f = floor
    assert torch.allclose(aucs["importance"]["deletion_auc"], (1 + f) / 8 + 3 * f / 4)
    # random channel groups of the same sizes spread channels 0-2 over several groups
    assert (aucs["random_groups"]["deletion_auc"] > aucs["importance"]["deletion_auc"]).all()


def test_pooled_head_gives_the_generic_curves_in_one_linear_call():
    a, labels = toy(b=3)
    head, pooled = group_head()
    calls = {"head": 0, "linear": 0}

    def counted_head(x):
        calls["head"] += 1
        return head(x)

    def counted_linear(z):
        calls["linear"] += 1
        return pooled.linear(z)

    targets = torch.tensor([0, 1, 2])
    imp = torch.rand(3, 4)
    generic = concept_fidelity(counted_head, a, labels, targets, imp, repeats=5,
                               partition_importance=True, max_rows=10**6)
    assert calls["head"] == 1  # every curve point of the batch in one head call
    calls["head"] = 0
    fast = concept_fidelity(counted_head, a, labels, targets, imp, repeats=5, partition_importance=True,
                            pooled_head=PooledHead(pooled.pool, counted_linear))
    assert calls["linear"] == 2 and calls["head"] == 1  # one check on 2 images, one call for all
    for order in generic.deletion:
        assert torch.allclose(generic.deletion[order], fast.deletion[order], atol=1e-6)
        assert torch.allclose(generic.insertion[order], fast.insertion[order], atol=1e-6)
    assert torch.allclose(generic.partition_importance, fast.partition_importance, atol=1e-4)
    for r in range(5):  # the random groups' importances are eq. 3 on those groups
        ref = concept_importance(head, a, generic.partitions[r], targets, n_concepts=4)
        assert torch.allclose(generic.partition_importance[r], ref, atol=1e-6)
    # chunked generic calls give the same numbers
    chunked = concept_fidelity(head, a, labels, targets, imp, repeats=5, max_rows=7)
    assert torch.allclose(chunked.deletion["random_groups"], generic.deletion["random_groups"])


def test_a_wrong_pooled_head_is_caught_and_the_full_head_used():
    a, labels = toy(b=2)
    head, pooled = group_head()
    wrong = PooledHead(pool=lambda x: x.amax((2, 3)) * 2, linear=pooled.linear)
    keep = torch.ones(2, 3, 12, dtype=torch.bool)
    keep[:, 1, :3] = False
    with pytest.warns(RuntimeWarning, match="pooled_head does not reproduce the head"):
        got = masked_target_probs(head, a, keep, torch.tensor([0, 0]), wrong)
    assert torch.allclose(got, masked_target_probs(head, a, keep, torch.tensor([0, 0])))


def test_importance_order_breaks_ties_by_size_then_id_and_puts_empty_concepts_last():
    imp = torch.tensor([[5.0, 5.0, 9.0, math.nan, 5.0]])
    sizes = torch.tensor([[2, 3, 1, 0, 3]])
    assert concept_order(imp, sizes).tolist() == [[2, 1, 4, 0, 3]]


def test_random_partitions_keep_the_sizes_and_the_kept_channels():
    labels = torch.tensor([[0, 0, 1, -1, 2, 2, 2, -1], [1, 1, 1, 1, 0, -1, -1, -1]])
    parts = random_partitions(labels, 3, repeats=50, generator=torch.Generator().manual_seed(1))
    assert parts.shape == (50, 2, 8)
    for r in parts:
        assert torch.equal(r < 0, labels < 0)
        for c in range(3):
            assert torch.equal((r == c).sum(1), (labels == c).sum(1))
    assert not (parts == labels).all(-1).all()  # the groups really are reshuffled


def test_images_with_an_empty_concept_use_their_own_number_of_steps():
    a, labels = toy(b=2)
    labels[1] = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2])  # image 1 has no concept 3
    head, _ = group_head()
    imp = torch.tensor([[9.0, 3.0, 2.0, 1.0], [9.0, 3.0, 2.0, math.nan]])
    fid = concept_fidelity(head, a, labels, torch.zeros(2, dtype=torch.long), imp, repeats=3)
    assert fid.n_steps.tolist() == [4, 3]
    d = fid.deletion["importance"][1]
    assert math.isnan(float(d[-1])) and torch.isfinite(d[:4]).all()
    y = d[:4]
    expected = float(((y[1:] + y[:-1]) / 2).sum() / 3)  # trapezoid over x = 0, 1/3, 2/3, 1
    assert float(fid.aucs["importance"]["deletion_auc"][1]) == pytest.approx(expected)
    assert torch.isnan(curve_auc(torch.ones(1, 3), torch.tensor([0]))).all()


def test_bad_shapes_are_clear_errors():
    a, labels = toy(b=2)
    head, _ = group_head()
    with pytest.raises(ValueError, match="labels must be B x C"):
        concept_fidelity(head, a, labels[:, :5], torch.zeros(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="importance must be B x n_concepts"):
        concept_fidelity(head, a, labels, torch.zeros(2), torch.zeros(2, 4), n_concepts=5)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        concept_fidelity(head, a, labels, torch.zeros(2), torch.zeros(2, 4), repeats=0)


def test_importance_through_the_pooled_head_equals_the_full_head_without_copies() -> None:
    """eq. 3 with a PooledHead: the same numbers as ablated copies through the head, and the
    head itself sees only the pooled-head check (2 images), not the B x n copies."""
    torch.manual_seed(1)
    c = 12
    fc = torch.nn.Linear(c, 5)
    calls = []

    def head(x):
        calls.append(len(x))
        return fc(x.mean((2, 3)))

    a, labels = toy(b=6, c=c)
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    ref = concept_importance(head, a, labels, targets, n_concepts=4)
    assert calls == [6 * 5]  # the original + 4 ablations of 6 images, one call
    calls.clear()
    got = concept_importance(head, a, labels, targets, n_concepts=4,
                             pooled_head=PooledHead(pool=lambda x: x.mean((2, 3)), linear=fc))
    assert calls == [2]
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
