"""DEC's Student-t q, its target distribution P and KL(P || Q) (Xie et al. 2016, eq. 1-5)."""

from fractions import Fraction as Fr

import pytest
import torch

from clustercam.exceptions import UserError
from clustercam.explain.assignments import (
    kl_divergence,
    log_student_t_assignment,
    soft_assignment,
    student_t_assignment,
    target_distribution,
)
from clustercam.explain.gradceam.targets import student_t_target
from clustercam.models.components.clustering_layer import ClusteringLayer

# 3 points on a line, 2 centroids at 0 and 2; alpha = 1: kernel 1 / (1 + d^2)
Z = torch.tensor([[0.0], [1.0], [4.0]], dtype=torch.float64)
MU = torch.tensor([[0.0], [2.0]], dtype=torch.float64)


def _hand() -> tuple[list[list[Fr]], list[list[Fr]]]:
    kernels = [[Fr(1), Fr(1, 5)], [Fr(1, 2), Fr(1, 2)], [Fr(1, 17), Fr(1, 5)]]  # d^2 = 0,4 | 1,1 | 16,4
    q = [[k / sum(row) for k in row] for row in kernels]
    f = [sum(q[i][k] for i in range(3)) for k in range(2)]
    w = [[q[i][k] ** 2 / f[k] for k in range(2)] for i in range(3)]
    p = [[v / sum(row) for v in row] for row in w]
    return q, p


def test_q_and_p_by_hand_on_three_points_and_two_centroids():
    q_hand, p_hand = _hand()
    q = student_t_assignment(Z, MU)
    p = target_distribution(q)
    torch.testing.assert_close(q, torch.tensor([[float(v) for v in r] for r in q_hand], dtype=torch.float64))
    torch.testing.assert_close(p, torch.tensor([[float(v) for v in r] for r in p_hand], dtype=torch.float64))
    # q row 3 = (5/22, 17/22): a hand value, not just the formula again
    assert q[2, 0].item() == pytest.approx(5 / 22)
    for m in (q, p):
        torch.testing.assert_close(m.sum(1), torch.ones(3, dtype=torch.float64))
    # P sharpens Q: the largest entry of each row grows (the tied middle row stays near 1/2,
    # moved only by the cluster sizes f)
    for i in (0, 2):
        assert p[i].max() > q[i].max()
    assert p[1, 0] < 0.5 < p[1, 1]  # f_0 > f_1: the larger cluster is discounted


def test_frequencies_summed_elsewhere_give_the_same_p_as_the_whole_split():
    q = student_t_assignment(torch.randn(40, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))
    whole = target_distribution(q)
    # two "ranks" with their own halves and f summed over both
    f = q[:20].sum(0) + q[20:].sum(0)
    halves = torch.cat([target_distribution(q[:20], f), target_distribution(q[20:], f)])
    torch.testing.assert_close(halves, whole)
    assert not torch.allclose(target_distribution(q[:20]), whole[:20])  # local f is not enough


def test_other_alphas_and_the_old_float64_path_agree():
    z, mu = torch.randn(7, 4), torch.randn(3, 4)
    for alpha in (0.5, 1.0, 3.0):
        d2 = torch.cdist(z.double(), mu.double()) ** 2
        kern = (1 + d2 / alpha) ** (-(alpha + 1) / 2)
        torch.testing.assert_close(student_t_assignment(z.double(), mu.double(), alpha),
                                   kern / kern.sum(1, keepdim=True))
        torch.testing.assert_close(soft_assignment(z, mu, "student_t", alpha=alpha),
                                   kern / kern.sum(1, keepdim=True))
    # far away embeddings at a large alpha: the kernel itself underflows float32 (1e-69),
    # the log form does not divide 0 by 0
    zf, muf = torch.tensor([[1000.0]]), torch.tensor([[0.0], [1.0]])
    naive = (1 + torch.cdist(zf, muf) ** 2 / 30) ** (-31 / 2)
    assert (naive == 0).all()
    far = log_student_t_assignment(zf, muf, alpha=30.0).exp()
    assert torch.isfinite(far).all() and far[0, 1] > far[0, 0]
    with pytest.raises(UserError, match="alpha must be > 0"):
        student_t_assignment(z, mu, 0.0)
    with pytest.raises(UserError, match="frequencies"):
        target_distribution(torch.rand(4, 2), torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_kl_gradient_through_the_clustering_layer_matches_dec_eq_4_and_5(alpha):
    # DEC eq. 4-5 for L = sum_i KL(P_i || Q_i), here divided by N (the mean over the batch):
    # dL/dz_i   =  (a+1)/a sum_j (1 + ||z_i - mu_j||^2 / a)^-1 (p_ij - q_ij)(z_i - mu_j)
    # dL/dmu_j  = -(a+1)/a sum_i (1 + ||z_i - mu_j||^2 / a)^-1 (p_ij - q_ij)(z_i - mu_j)
    torch.manual_seed(0)
    layer = ClusteringLayer(3, 4, alpha).double()
    layer.initialise(torch.randn(3, 4, dtype=torch.float64))
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    q = layer(z)
    p = target_distribution(q)
    kl_divergence(p, q).backward()
    with torch.no_grad():
        diff = z[:, None, :] - layer.centroids[None]  # N x K x m
        inv = 1 / (1 + diff.pow(2).sum(-1) / alpha)  # N x K
        coef = (alpha + 1) / alpha * inv * (p - q) / z.shape[0]
        dz = (coef[..., None] * diff).sum(1)
        dmu = -(coef[..., None] * diff).sum(0)
    torch.testing.assert_close(z.grad, dz)
    torch.testing.assert_close(layer.centroids.grad, dmu)
    assert kl_divergence(q.detach(), q).abs().item() < 1e-12  # KL(Q || Q) = 0


def test_student_t_gradceam_target_is_the_log_q_of_the_clustering_layer():
    layer = ClusteringLayer(3, 2, alpha=2.0)
    layer.initialise(torch.randn(3, 2))
    z = torch.randn(5, 2)
    target = student_t_target(alpha=2.0)
    assert target.name == "student_t" and target.relu and target.reduction == "mean"
    torch.testing.assert_close(target.losses(z, layer.centroids.detach()), layer(z).log().detach())
    with pytest.raises(UserError, match="alpha"):
        student_t_target(alpha=-1)
