"""Meta-prompt pre-training (the "MP" of GRMP-IQA): first-order, Reptile-style.

One task per distortion type (TID2013 and KADID-10k in the paper; any `task_list` here). For each
task the fast weights start from the meta weights theta, are trained with Adam (lr 1e-4) on the
task's support part, giving theta'_task; after all tasks of an epoch
theta <- theta - outer_lr * mean_task(theta - theta'_task). Only `model.prompt_parameters()` are
meta-learned; every other tensor stays as it was.

Differences from the released `pretrain.py`, on purpose:
- The released code never resets its fast model to the meta weights: one "temp" model trains on
  task after task and the meta model only follows it. Here the fast weights are reset to theta for
  every task, which is what the first-order meta-learning update assumes.
- It divides the summed task updates by the number of tasks listed, also when some were skipped;
  here by the number of tasks actually run.
Kept from it: the 80/20 support/query split per task; inside a task every support step is
followed by a step on a query batch (the released inner loop trains on both); the loss is the
soft-label binary cross-entropy of the positive-prompt probability p; labels are min-max
normalised per task; the query loss (before its step) is what is reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from iqa.clip.features import FeatureStore
from iqa.errors import InputError
from iqa.labels.datasets import LabelledImage, normalize_scores
from iqa.labels.metrics import srcc
from iqa.methods.grmp.losses import assign_gradients, quality_loss
from iqa.methods.grmp.model import GRMPModel
from iqa.methods.grmp.train import TrainingData, predict_scores


@dataclass
class MetaConfig:
    epochs: int = 50
    inner_lr: float = 1e-4
    outer_lr: float = 0.01
    support_fraction: float = 0.8
    support_batch: int = 75  # official support batch size
    query_batch: int = 50  # official query batch size
    inner_epochs: int = 1  # passes over the support part per task
    quality_loss: str = "bce"  # on p, the positive-prompt probability
    seed: int = 0

    def __post_init__(self) -> None:
        quality_loss(self.quality_loss)
        if not 0.0 < self.support_fraction < 1.0:
            raise InputError(f"support_fraction must be strictly between 0 and 1, got {self.support_fraction}")
        if min(self.epochs, self.support_batch, self.query_batch, self.inner_epochs) < 1:
            raise InputError("epochs, batch sizes and inner_epochs must be positive")


@dataclass
class _Task:
    name: str
    data: TrainingData
    targets: Tensor  # labels min-max normalised within the task
    support: list[int]
    query: list[int]


def meta_pretrain(
    model: GRMPModel,
    tasks: Mapping[str, Sequence[LabelledImage]],
    config: MetaConfig | None = None,
    *,
    store: FeatureStore | None = None,
    validation: Sequence[LabelledImage] | None = None,
    on_epoch: Callable[[int, float, float | None], None] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Meta-learn `model.prompt_parameters()` over `tasks` (name -> labelled images).

    With `validation` images (the official code uses LIVE Challenge), the SRCC of p is measured
    after every epoch and the best epoch's prompts are kept; otherwise the last epoch's.
    `on_epoch(epoch, mean_query_loss, val_srcc)` is called after every epoch. Returns one dict
    per epoch (epoch, loss, tasks, val_srcc).
    """
    config = config or MetaConfig()
    rng = np.random.default_rng(config.seed)
    prepared = [_prepare(name, images, model, store, config, rng) for name, images in tasks.items()]
    prepared = [task for task in prepared if task is not None]
    if not prepared:
        raise InputError("no usable meta-learning task: each needs 3 or more readable images with different scores")
    val_data = TrainingData(model, validation, store=store, progress=False) if validation else None
    params = model.prompt_parameters()
    loss_fn = quality_loss(config.quality_loss)
    best = (-math.inf, _copy(params))
    history = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for epoch in tqdm(range(config.epochs), desc="meta-pretrain", unit="epoch", disable=not progress):
            theta = _copy(params)
            updates = [torch.zeros_like(p) for p in params]
            losses = []
            for task_index in rng.permutation(len(prepared)):
                _assign(params, theta)  # fast weights start from the meta weights for every task
                losses += _inner_loop(model, prepared[task_index], params, loss_fn, config, rng)
                for update, start, fast in zip(updates, theta, params):
                    update += start - fast.detach()
            _assign(params, [start - config.outer_lr * update / len(prepared) for start, update in zip(theta, updates)])
            val_srcc = _validate(model, val_data)
            entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "tasks": len(prepared), "val_srcc": val_srcc}
            history.append(entry)
            score = -math.inf if val_srcc is None or math.isnan(val_srcc) else val_srcc
            if val_data is None or score > best[0]:
                best = (score, _copy(params))
            if on_epoch is not None:
                on_epoch(epoch + 1, entry["loss"], val_srcc)
    _assign(params, best[1])
    return history


def _prepare(name, images, model, store, config, rng) -> _Task | None:
    if len(images) < 3:
        return None
    data = TrainingData(model, images, store=store, progress=False)
    scores = data.scores.numpy()
    if np.ptp(scores) == 0:
        return None
    order = rng.permutation(len(data)).tolist()
    n_support = min(max(int(len(order) * config.support_fraction), 1), len(order) - 1)
    targets = torch.from_numpy(normalize_scores(scores)).float().to(model.device)
    return _Task(name, data, targets, support=order[:n_support], query=order[n_support:])


def _inner_loop(model, task: _Task, params, loss_fn, config: MetaConfig, rng) -> list[float]:
    """Adam on the task's support batches, each step followed by one on the next query batch."""
    optimizer = torch.optim.Adam(params, lr=config.inner_lr)
    query_batches = _batches(task.query, config.query_batch, rng)
    query_losses = []
    model.train()
    for _ in range(config.inner_epochs):
        for support in _batches(task.support, config.support_batch, rng):
            _step(model, task, support, params, loss_fn, optimizer)
            query = next(query_batches, None)
            if query is None:
                query_batches = _batches(task.query, config.query_batch, rng)
                query = next(query_batches)
            query_losses.append(_step(model, task, query, params, loss_fn, optimizer))
    return query_losses


def _step(model, task: _Task, indices: list[int], params, loss_fn, optimizer) -> float:
    inputs = task.data.inputs(indices)
    loss = loss_fn(model.predict(model.features_of(inputs)).p, task.targets[indices])
    assign_gradients(params, loss)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _batches(indices: list[int], size: int, rng):
    order = rng.permutation(indices).tolist()
    return iter([order[i : i + size] for i in range(0, len(order), size)])


def _validate(model: GRMPModel, data: TrainingData | None) -> float | None:
    if data is None:
        return None
    predictions = predict_scores(model, data, list(range(len(data))), prompt_only=True)
    return srcc(predictions, data.scores.numpy())


def _copy(params) -> list[Tensor]:
    return [p.detach().clone() for p in params]


def _assign(params, values) -> None:
    with torch.no_grad():
        for param, value in zip(params, values):
            param.copy_(value)
