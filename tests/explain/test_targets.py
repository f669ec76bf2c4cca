"""Grad-CeAM targets are values: a user's target works wherever a target name does, and the
hooks grad_ceam registers never outlive the call."""

import functools

import pytest
import torch

from clustercam.exceptions import UserError
from clustercam.explain import GradCeAMTarget, cardinality, grad_ceam, score_explanations
from clustercam.explain.assignments import squared_distances
from clustercam.explain.gradceam import ASSIGNMENT, GRADCEAM_TARGETS, resolve_target
from clustercam.models.components.resnet_cae import ResNetCAE


def my_assignment(z, mu, temperature=1.0):
    """log softmax_k(-||z - mu_k||^2 / T), written out by hand."""
    d = ((z[:, None, :] - mu[None]) ** 2).sum(-1)
    return -d / temperature - torch.logsumexp(-d / temperature, dim=1, keepdim=True)


def student_t(z, mu, alpha=1.0):
    """log q of DEC's Student-t kernel."""
    q = (1 + squared_distances(z, mu) / alpha) ** (-(alpha + 1) / 2)
    return torch.log(q / q.sum(1, keepdim=True))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = ResNetCAE((1, 40), filters=(6, 8), embedding_dim=4).double().eval()
    x = torch.randn(12, 1, 40, dtype=torch.float64)
    mu = net.encoder(x[:3]).detach()
    return net.encoder, x, mu


@pytest.mark.parametrize("closed_form", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_a_custom_target_reimplementing_assignment_gives_its_weights_and_maps(setup, closed_form, temperature):
    enc, x, mu = setup
    mine = GradCeAMTarget(functools.partial(my_assignment, temperature=temperature), reduction="mean",
                          scale=1.0, relu=True)
    assert mine.name == "my_assignment"
    run = (lambda m: grad_ceam(enc, "features", x, mu, target=m, temperature=temperature)) if closed_form \
        else (lambda m: grad_ceam(torch.nn.Sequential(enc), "0.features", x, mu, target=m,
                                  temperature=temperature))  # a wrapper hides linear_head
    ref, got = run("assignment"), run(mine)
    torch.testing.assert_close(got.channel_weights, ref.channel_weights, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.raw, ref.raw, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got.heatmaps, ref.heatmaps, rtol=1e-9, atol=1e-9)
    assert got.mode == "my_assignment" and ref.mode == "assignment"


def test_the_closed_form_and_autograd_agree_for_every_built_in_and_a_sum_target(setup):
    enc, x, mu = setup
    summed = GradCeAMTarget(student_t, reduction="sum", scale=3.0, relu=False)
    for target in [*GRADCEAM_TARGETS.values(), summed]:
        fast = grad_ceam(enc, "features", x, mu, target=target)
        slow = grad_ceam(torch.nn.Sequential(enc), "0.features", x, mu, target=target)
        torch.testing.assert_close(fast.channel_weights, slow.channel_weights, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(fast.heatmaps, slow.heatmaps, rtol=1e-7, atol=1e-8)


def test_a_student_t_target_runs_through_grad_ceam_cardinality_and_the_scores(setup):
    enc, x, mu = setup
    target = GradCeAMTarget(student_t, reduction="mean", scale=1.0, relu=True, name="student_t")
    res = grad_ceam(enc, "features", x, mu, target=target)
    assert res.heatmaps.shape == (12, 3, 40) and torch.isfinite(res.channel_weights).all()
    table = cardinality(enc, "features", x, mu, res.channel_weights)
    assert int(table.before.sum()) == 12 and table.after.shape == (3,)
    clusters = squared_distances(enc(x).detach(), mu).argmin(1)
    report = score_explanations(enc, "features", x.float(), mu, clusters=clusters,
                                methods=[target, "random"], steps=3)
    assert {r["method"] for r in report.rows} == {"gradceam_student_t", "random"}
    assert 0 <= report.results["scores/gradceam_student_t/deletion_auc"] <= 1


def test_targets_are_validated():
    with pytest.raises(UserError, match="reduction must be one of"):
        GradCeAMTarget(student_t, reduction="max")
    with pytest.raises(UserError, match="loss must be callable"):
        GradCeAMTarget("student_t")
    with pytest.raises(UserError, match="unknown Grad-CeAM target 'nope'"):
        resolve_target("nope")
    assert resolve_target("assignment") is ASSIGNMENT
    bad = GradCeAMTarget(lambda z, mu: z.sum(1), name="bad")
    enc = ResNetCAE((1, 16), filters=(4,), embedding_dim=3).encoder
    with pytest.raises(UserError, match=r"target 'bad': loss\(z, centroids\) must return N x K"):
        grad_ceam(enc, "features", torch.randn(4, 1, 16), torch.randn(2, 3), target=bad)


def _hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in module.modules())


class Exploding(torch.nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, x):
        self.enc(x)  # the target layer's hook runs
        raise RuntimeError("boom inside the encoder")


def test_hooks_are_released_after_a_call_and_after_an_exception(setup):
    enc, x, mu = setup
    assert _hooks(enc) == 0
    res = grad_ceam(enc, "features", x, mu)
    cardinality(enc, "features", x, mu, res.channel_weights)
    score_explanations(enc, "features", x.float(), mu, clusters=torch.zeros(12, dtype=torch.long),
                       methods=["activation", "gradceam_paper"], steps=2)
    assert _hooks(enc) == 0
    wrapped = Exploding(enc)
    for call in (lambda: grad_ceam(wrapped, "enc.features", x, mu),
                 lambda: cardinality(wrapped, "enc.features", x, mu, res.channel_weights)):
        with pytest.raises(RuntimeError, match="boom"):
            call()
        assert _hooks(wrapped) == 0
    assert enc.training is False  # eval state restored too


def test_a_target_layer_the_forward_never_calls_is_named(setup):
    enc, x, mu = setup
    enc.unused = torch.nn.Conv1d(1, 1, 1)
    try:
        with pytest.raises(UserError, match=r"target layer 'unused' \(Conv1d\) was not called"):
            grad_ceam(enc, "unused", x, mu)
    finally:
        del enc.unused
