"""Hand-computed checks of the GRMP-IQA losses and gradient regularizers."""

import math

import pytest
import torch

from iqa.methods.grmp.losses import (
    mse,
    pairwise_regularizer,
    project_gradients,
    quality_loss,
    semantic_loss,
    soft_bce,
)


def test_soft_bce_value_and_gradient_by_hand():
    p = torch.tensor([0.8], requires_grad=True)
    loss = soft_bce(p, torch.tensor([0.6]))
    loss.backward()
    # -(0.6 ln 0.8 + 0.4 ln 0.2); d/dp = -(y/p - (1-y)/(1-p)) = -(0.75 - 2)
    assert loss.item() == pytest.approx(-(0.6 * math.log(0.8) + 0.4 * math.log(0.2)), rel=1e-6)
    assert p.grad.item() == pytest.approx(1.25, rel=1e-5)


def test_soft_bce_is_finite_on_saturated_probabilities():
    loss = soft_bce(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert torch.isfinite(loss)


def test_quality_loss_by_name():
    assert quality_loss("bce") is soft_bce
    assert quality_loss("mse") is mse
    assert mse(torch.tensor([0.5, 1.0]), torch.tensor([0.0, 0.0])).item() == pytest.approx(0.625)
    with pytest.raises(ValueError, match="unknown quality loss 'l1'"):
        quality_loss("l1")


def test_pairwise_regularizer_three_values_by_hand():
    cos = torch.tensor([0.1, 0.5, 0.2], requires_grad=True)
    y = torch.tensor([0.0, 1.0, 0.5])
    loss = pairwise_regularizer(cos, y)
    # pairs (0,1): -0.4+1.0=0.6, (0,2): -0.1+0.5=0.4, (1,2): 0.3-0.5=-0.2
    assert loss.item() == pytest.approx((0.36 + 0.16 + 0.04) / 3, rel=1e-5)
    loss.backward()
    # dL/dcos_k = 2/3 * (sum of d over pairs where k is i - sum where k is j)
    expected = torch.tensor([2 / 3 * (0.6 + 0.4), 2 / 3 * (-0.6 - 0.2), 2 / 3 * (-0.4 + 0.2)])
    torch.testing.assert_close(cos.grad, expected, rtol=1e-5, atol=1e-6)


def test_pairwise_regularizer_zero_when_cosines_follow_labels():
    y = torch.tensor([0.2, 0.9, 0.4, 0.1])
    assert pairwise_regularizer(y + 0.3, y).item() == pytest.approx(0.0, abs=1e-12)


def test_pairwise_regularizer_single_image_is_zero_and_differentiable():
    cos = torch.tensor([0.4], requires_grad=True)
    loss = pairwise_regularizer(cos, torch.tensor([0.7]))
    loss.backward()
    assert loss.item() == 0.0 and cos.grad.item() == 0.0


def test_pairwise_regularizer_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="equal length"):
        pairwise_regularizer(torch.zeros(3), torch.zeros(2))


def test_semantic_loss_cross_entropy_by_hand():
    teacher = torch.tensor([[2.0, 2.0]])  # uniform target
    student = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)  # q = (1/4, 3/4)
    loss = semantic_loss(student, teacher)
    assert loss.item() == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), rel=1e-6)
    loss.backward()
    # d CE / d logits = q - target
    torch.testing.assert_close(student.grad, torch.tensor([[0.25 - 0.5, 0.75 - 0.5]]))


def test_semantic_loss_does_not_train_the_teacher():
    teacher = torch.randn(4, 9, requires_grad=True)
    semantic_loss(torch.randn(4, 9, requires_grad=True), teacher).backward()
    assert teacher.grad is None


def test_projection_on_two_param_quadratic_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    loss_q = 0.5 * (w**2).sum()  # g_q = (1, 2)
    loss_s = 3 * w[0] + w[1]  # g_s = (3, 1); <g_q, g_s> = 5 > 0; ||g_s||^2 = 10
    assert project_gradients([w], loss_q, loss_s, lam=5.0) == 1
    torch.testing.assert_close(w.grad, torch.tensor([1 - 5 * 0.5 * 3, 2 - 5 * 0.5 * 1]))


def test_projection_with_lambda_one_is_orthogonal_to_semantic_gradient():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    project_gradients([w], 0.5 * (w**2).sum(), 3 * w[0] + w[1], lam=1.0)
    torch.testing.assert_close(w.grad, torch.tensor([-0.5, 1.5]))
    assert torch.dot(w.grad, torch.tensor([3.0, 1.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_projection_is_per_tensor_and_keeps_non_conflicting_gradients():
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    loss_q = 0.5 * (a**2).sum() + 0.5 * (b**2).sum()  # g_q: a -> (1,2), b -> (1,0)
    loss_s = 3 * a[0] + a[1] - b[0]  # g_s: a -> (3,1) conflicts, b -> (-1,0): <.,.> = -1 <= 0
    assert project_gradients([a, b], loss_q, loss_s, lam=1.0) == 1
    torch.testing.assert_close(a.grad, torch.tensor([-0.5, 1.5]))
    torch.testing.assert_close(b.grad, torch.tensor([1.0, 0.0]))


def test_projection_handles_unused_params_and_zero_semantic_gradient():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    only_s = torch.nn.Parameter(torch.tensor([3.0]))
    unused = torch.nn.Parameter(torch.tensor([4.0]))
    frozen = torch.nn.Parameter(torch.tensor([5.0]), requires_grad=False)
    w.grad = torch.tensor([100.0, 100.0])  # stale gradient must be overwritten
    loss_q = 0.5 * (w**2).sum()
    loss_s = 0.0 * w.sum() + only_s.sum()  # g_s of w is exactly zero
    assert project_gradients([w, only_s, unused, frozen], loss_q, loss_s) == 0
    torch.testing.assert_close(w.grad, torch.tensor([1.0, 2.0]))
    assert only_s.grad is None and unused.grad is None and frozen.grad is None


def test_projection_when_semantic_loss_has_no_graph():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    project_gradients([w], 0.5 * (w**2).sum(), torch.tensor(0.3))
    torch.testing.assert_close(w.grad, torch.tensor([1.0, -2.0]))


def test_projection_shared_graph_matches_separate_autograd():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    out = layer(x)
    loss_q, loss_s = out[:, 0].pow(2).mean(), out.sum()
    gq = torch.autograd.grad(loss_q, layer.weight, retain_graph=True)[0]
    gs = torch.autograd.grad(loss_s, layer.weight, retain_graph=True)[0]
    project_gradients(layer.parameters(), loss_q, loss_s, lam=2.0)
    dot = (gq * gs).sum()
    expected = gq if dot <= 0 else gq - 2.0 * dot / (gs * gs).sum() * gs
    torch.testing.assert_close(layer.weight.grad, expected)


def test_projection_needs_trainable_params():
    frozen = torch.nn.Parameter(torch.ones(1), requires_grad=False)
    with pytest.raises(ValueError, match="no parameters"):
        project_gradients([frozen], torch.tensor(1.0), torch.tensor(1.0))
