"""Losses of GRMP-IQA: quality losses and the two gradient regularizers.

Two regularizers exist because the project keeps two variants:

- "projection" (the paper and its official code): a semantic loss L_s is computed but never
  added to the loss; its gradient only decides the direction in which the quality gradient
  is corrected (`project_gradients`).
- "pairwise" (the seed document): an extra loss term L_reg that asks the change of the
  image-text cosine between two images to equal the change of their quality labels
  (`pairwise_regularizer`); total loss = L_q + lambda * L_reg.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-6


def soft_bce(p: Tensor, y: Tensor) -> Tensor:
    """Binary cross-entropy with soft labels: mean of -(y log p + (1 - y) log(1 - p)).

    `p` is the probability of the "high quality" prompt, `y` the MOS min-max normalised to
    [0, 1] (the official fine-tuning loss). `p` is clamped away from 0 and 1 so that a
    saturated softmax gives a large finite loss instead of inf.
    """
    p = p.clamp(_EPS, 1.0 - _EPS)
    return -(y * torch.log(p) + (1.0 - y) * torch.log1p(-p)).mean()


def mse(p: Tensor, y: Tensor) -> Tensor:
    """Mean squared error between predicted and true score (the seed's regression loss)."""
    return F.mse_loss(p, y)


QUALITY_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"bce": soft_bce, "mse": mse}


def quality_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The quality loss called `name` ("bce" for the paper, "mse" for the seed)."""
    try:
        return QUALITY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown quality loss {name!r}; choose one of {sorted(QUALITY_LOSSES)}") from None


def pairwise_regularizer(cos: Tensor, y: Tensor) -> Tensor:
    """The seed's L_reg: mean over pairs i < j of ((cos_i - cos_j) - (y_i - y_j))^2.

    `cos` [N] holds each image's cosine with the (positive) quality prompt and `y` [N] its
    normalised label. Fewer than two images have no pair: the result is then a zero that
    still belongs to the graph of `cos`, so `backward()` works on any batch.
    """
    if cos.shape != y.shape or cos.dim() != 1:
        raise ValueError(f"cos and y must be 1-D of equal length, got {tuple(cos.shape)} and {tuple(y.shape)}")
    n = cos.shape[0]
    if n < 2:
        return cos.sum() * 0.0
    i, j = torch.triu_indices(n, n, offset=1, device=cos.device)
    return (((cos[i] - cos[j]) - (y[i] - y[j])) ** 2).mean()


def semantic_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Soft-target cross-entropy between the teacher's and the student's scene softmax.

    As in the official code: mean over images of -sum_k softmax(t/T)_k log softmax(s/T)_k,
    times T^2 (T = 1 there). It differs from KL(teacher || student) only by the teacher's
    entropy, a constant, so both give the same gradient; only the gradient is ever used.
    The teacher is treated as fixed (detached).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
            f"{tuple(teacher_logits.shape)}"
        )
    target = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return -(target * log_q).sum(dim=-1).mean() * temperature**2


def project_gradients(params: Iterable[torch.nn.Parameter], loss_q: Tensor, loss_s: Tensor, lam: float = 5.0) -> int:
    """Write the paper's quality-aware regularized gradient into each parameter's `.grad`.

    Per parameter tensor, with g_q = dL_q/dtheta and g_s = dL_s/dtheta:
    g = g_q when <g_q, g_s> <= 0, else g = g_q - lam * <g_q, g_s> / ||g_s||^2 * g_s.
    A tensor that L_q does not reach gets `.grad = None`; one that L_s does not reach, or
    whose g_s is zero, keeps g_q. Existing `.grad` values are overwritten, not accumulated.
    Returns how many tensors were projected (their gradients conflicted).
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("project_gradients got no parameters that require grad")
    g_q = _grads(loss_q, params, retain_graph=loss_s.requires_grad)
    g_s = _grads(loss_s, params, retain_graph=False)
    projected = 0
    for p, gq, gs in zip(params, g_q, g_s):
        if gq is None:
            p.grad = None
            continue
        if gs is not None:
            dot = torch.sum(gq * gs)
            if dot > 0:
                gq = gq - lam * dot / torch.sum(gs * gs) * gs
                projected += 1
        p.grad = gq.detach()
    return projected


def assign_gradients(params: Sequence[torch.nn.Parameter], loss: Tensor) -> None:
    """Write d`loss`/d`param` into each parameter's `.grad` (None where `loss` does not reach it),
    overwriting, not accumulating: the plain step, where `project_gradients` is the regularized one."""
    for param, grad in zip(params, torch.autograd.grad(loss, params, allow_unused=True)):
        param.grad = grad


def _grads(loss: Tensor, params: list[torch.nn.Parameter], retain_graph: bool) -> list[Tensor | None]:
    if not loss.requires_grad:
        return [None] * len(params)
    return list(torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True))
