"""Fine-tuning GRMP-IQA models with the paper's few-shot protocol.

The protocol (official `finetune.py`): for each of N rounds, a random 80/20 train/test split of the
labelled set, a few-shot subset (default 50 images) drawn from the train part, training, and SRCC
and PLCC of the selected model on the test part; the mean and median over rounds are reported.

Where this differs from the official code, on purpose:
- Model selection. The official code keeps the best test-set SRCC + PLCC seen during training,
  which selects on the test labels. Here a validation part is carved from the train part (never
  from the test part) and selects the model; the test part is scored once per round.
- Labels are min-max normalised with the range of the few-shot training images (as the official
  code does for its training labels); validation and test scores only enter rank and linear
  correlations, which that affine map does not change.
- No crop/flip augmentation: the seed variant trains on cached features of the whole photo, and
  the paper variant on the preprocessed photo, so that runs are exactly repeatable.
- Mini-batches are drawn at random (without replacement inside a batch) for every step; with the
  official batch of 192 and 50 images every step is the full batch, as in the official code.

Optimiser per variant (`TRAIN_PRESETS`): paper: SGD without momentum, lr 1e-3, weight decay 1e-4,
lr x0.3 after 6 validations without improvement of SRCC + PLCC, stop below lr 5e-7 (official).
seed: Adam (the seed document names no optimiser; Adam trains the small head and prompt on cached
features in seconds), same plateau rule.
"""

from __future__ import annotations

import math
import random
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from iqa.clip.backbones import Backbone
from iqa.clip.features import FeatureStore
from iqa.errors import InputError
from iqa.labels.datasets import LabelledImage, normalize_scores, split_indices
from iqa.labels.metrics import all_metrics, plcc, srcc
from iqa.methods.grmp.checkpoint import save_checkpoint
from iqa.methods.grmp.losses import (
    assign_gradients,
    pairwise_regularizer,
    project_gradients,
    quality_loss,
    semantic_loss,
)
from iqa.methods.grmp.model import GRMPConfig, GRMPModel, zero_shot_scene_logits
from iqa.methods.grmp.scorer import shares_features
from iqa.methods.grmp.state_file import read_state, write_state
from iqa.names import REGULARIZERS
from iqa.photos.photo import PhotoError, open_photo

OPTIMIZERS = ("sgd", "adam")
STATE_FILE = "train_state.safetensors"
LEGACY_STATE_FILE = "train_state.pt"  # pickles of older versions: never read, they could run code

StepCallback = Callable[[int, float, "float | None"], None]


@dataclass
class TrainConfig:
    """Optimisation settings of one fine-tuning run (one round of the protocol)."""

    steps: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    quality_loss: str  # "bce" (paper) or "mse" (seed), on the model's final score
    regularizer: str  # "projection" (paper), "pairwise" (seed) or "none"
    lam: float  # projection strength, or weight of the pairwise term
    eval_every: int = 5  # steps between validations
    plateau_patience: int = 5  # validations without improvement before lr is cut
    plateau_factor: float = 0.3
    min_lr: float = 5e-7  # training stops once lr falls below this
    checkpoint_every: int = 0  # steps between resumable checkpoints (0: none)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.regularizer not in REGULARIZERS:
            raise InputError(f"unknown regularizer {self.regularizer!r}; choose one of {REGULARIZERS}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        quality_loss(self.quality_loss)
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.checkpoint_every < 0:
            raise InputError("steps, batch_size and eval_every must be positive, checkpoint_every >= 0")
        if self.lr <= 0 or self.lam < 0:
            raise InputError(f"lr must be positive and lam non-negative, got lr={self.lr}, lam={self.lam}")

    @classmethod
    def for_variant(cls, variant: str, **overrides: Any) -> TrainConfig:
        """The preset of a GRMP variant ("paper" or "seed") with some fields replaced."""
        if variant not in TRAIN_PRESETS:
            raise InputError(f"no training preset for variant {variant!r}; choose one of {sorted(TRAIN_PRESETS)}")
        return replace(TRAIN_PRESETS[variant], **overrides)


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # official finetune.py: 2000 epochs of one full batch each, validation every 5 epochs
    "paper": TrainConfig(
        steps=2000,
        batch_size=192,
        optimizer="sgd",
        lr=1e-3,
        weight_decay=1e-4,
        quality_loss="bce",
        regularizer="projection",
        lam=5.0,
    ),
    "seed": TrainConfig(
        steps=300,
        batch_size=192,
        optimizer="adam",
        lr=3e-2,
        weight_decay=0.0,
        quality_loss="mse",
        regularizer="pairwise",
        lam=1.0,
        eval_every=10,
    ),
}


@dataclass
class FinetuneProtocol:
    """How the labelled set is split in each round.

    `shots`: size of the few-shot training subset drawn from the train part: a count (50, 100,
    200 in the paper), a fraction of the train part, or None for all of it (after validation).
    `val_size`: images carved from the train part for model selection, a count or a fraction of
    the train part. `group_by_ref`: keep all versions of one reference image on one side of the
    train/test split (TID2013, KADID-10k, synthetic sets).
    """

    rounds: int = 10
    test_fraction: float = 0.2
    shots: int | float | None = 50
    val_size: int | float = 0.2
    group_by_ref: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Split:
    train: list[int]
    val: list[int]
    test: list[int]


def make_splits(images: Sequence[LabelledImage], protocol: FinetuneProtocol) -> list[Split]:
    """The train/validation/test indices of every round, reproducible from `protocol.seed`."""
    n = len(images)
    groups = [image.ref for image in images] if protocol.group_by_ref else None
    splits = []
    for round_index in range(protocol.rounds):
        seed = protocol.seed * 1000 + round_index
        train_part, test = split_indices(n, 1.0 - protocol.test_fraction, seed=seed, groups=groups)
        order = np.random.default_rng(seed).permutation(train_part).tolist()
        n_val = _count(protocol.val_size, len(order), "val_size")
        val, rest = order[:n_val], order[n_val:]
        n_train = len(rest) if protocol.shots is None else _count(protocol.shots, len(order), "shots")
        if n_train > len(rest) or n_train < 2:
            raise InputError(
                f"round {round_index}: {n_train} training images asked for, but the train part of "
                f"{len(order)} images has {len(rest)} left after {n_val} for validation (need 2 or more)"
            )
        splits.append(Split(train=sorted(rest[:n_train]), val=sorted(val), test=test))
    return splits


def _count(size: int | float, total: int, name: str) -> int:
    """A count given as an int, or as a float fraction of `total`."""
    if isinstance(size, float):
        if not 0.0 <= size <= 1.0:
            raise InputError(f"{name} as a fraction must be in [0, 1], got {size}")
        return int(round(size * total))
    if size < 0:
        raise InputError(f"{name} must not be negative, got {size}")
    return int(size)


class TrainingData:
    """The readable images of a labelled set, as model inputs.

    Frozen-feature models (seed) get their image features computed once through a
    `FeatureStore` (shared with CLIP-IQA on the same backbone); the others (paper) get
    preprocessed pixels, loaded on demand and kept for the images used repeatedly.
    Unreadable images are left out and reported in `skipped`.
    """

    def __init__(
        self,
        model: GRMPModel,
        images: Sequence[LabelledImage],
        store: FeatureStore | None = None,
        batch_size: int = 32,
        progress: bool = True,
    ):
        self.model = model
        self.skipped: list[str] = []
        self._pixels: dict[int, Tensor] = {}
        self.features: Tensor | None = None
        if model.features_frozen:
            if store is None or not shares_features(model, store):
                store = FeatureStore(model.backbone, preprocessor=model.preprocessor, batch_size=batch_size)
            self.images, self.features = self._encode(images, store, batch_size, progress)
        else:
            self.images = [image for image in images if self._readable(image)]
        if len(self.images) < 3:
            raise InputError(f"only {len(self.images)} of {len(images)} images are readable; need at least 3")
        self.scores = torch.tensor([float(image.score) for image in self.images], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.images)

    def inputs(self, indices: Sequence[int], keep: bool = True) -> Tensor:
        """Features [n, D] or pixels [n, 3, H, W] of the images at `indices`."""
        if self.features is not None:
            return self.features[list(indices)]
        preprocess = self.model.preprocessor
        tensors = []
        for i in indices:
            pixels = self._pixels.get(i)
            if pixels is None:
                pixels = preprocess(open_photo(self.images[i].path).image)
                if keep:
                    self._pixels[i] = pixels
            tensors.append(pixels)
        return torch.stack(tensors)

    def _encode(self, images, store, batch_size, progress):
        kept, features = [], []
        for start in tqdm(range(0, len(images), batch_size), desc="features", unit="batch", disable=not progress):
            chunk = images[start : start + batch_size]
            photos = []
            for image in chunk:
                try:
                    photos.append(open_photo(image.path))
                except (PhotoError, OSError) as error:
                    self.skipped.append(str(error))
                    continue
                kept.append(image)
            if photos:
                features.append(store.image_features(photos))
        stacked = torch.cat(features) if features else torch.empty(0, self.model.backbone.embed_dim)
        return kept, stacked

    def _readable(self, image: LabelledImage) -> bool:
        try:
            open_photo(image.path)
        except (PhotoError, OSError) as error:
            self.skipped.append(str(error))
            return False
        return True


@torch.no_grad()
def predict_scores(
    model: GRMPModel,
    data: TrainingData,
    indices: Sequence[int],
    batch_size: int = 64,
    keep: bool = True,
    prompt_only: bool = False,
) -> np.ndarray:
    """The model's scores of the images at `indices`, in eval mode; with `prompt_only`, p of the
    learned prompt pair (what meta-pre-training trains) instead of the score."""
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        inputs = data.inputs(chunk, keep=keep)
        output = model.predict(model.features_of(inputs))
        scores.append((output.p if prompt_only else output.score).float().cpu())
    model.train(was_training)
    return torch.cat(scores).numpy() if scores else np.empty(0)


def selection_score(predictions: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """(SRCC, plain PLCC) on a validation part; the model with the largest sum is kept."""
    if len(predictions) < 3:
        return float("nan"), float("nan")
    return srcc(predictions, targets), plcc(predictions, targets, fit=False)


TEST_METRICS = ("srcc", "krcc", "plcc", "plcc_raw")  # the keys of `all_metrics`


@dataclass
class RoundResult:
    round: int
    n_train: int
    n_val: int
    n_test: int
    best_step: int
    val_srcc: float
    val_plcc: float
    test: dict[str, float]  # TEST_METRICS; nan where the test part was too small or too uniform
    history: list[dict] = field(default_factory=list)


@dataclass
class FinetuneResult:
    rounds: list[RoundResult]
    skipped: list[str]
    checkpoint: tuple[Path, Path] | None = None

    def summary(self) -> dict[str, float]:
        """Mean and median test SRCC and PLCC over the rounds (the paper reports both)."""
        out = {}
        for metric in ("srcc", "plcc"):
            values = [r.test[metric] for r in self.rounds if math.isfinite(r.test[metric])]
            out[f"mean_{metric}"] = float(np.mean(values)) if values else math.nan
            out[f"median_{metric}"] = float(statistics.median(values)) if values else math.nan
        return out


def trainable_state(model: GRMPModel) -> dict[str, Tensor]:
    """Copies of the fine-tuned tensors, by state-dict name."""
    wanted = {id(p) for p in model.trainable_parameters()}
    return {name: p.detach().clone() for name, p in model.named_parameters() if id(p) in wanted}


def load_trainable_state(model: GRMPModel, state: dict[str, Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


@dataclass(frozen=True)
class Best:
    """The best validated step of a round so far: its selection score (SRCC + PLCC), step, SRCC,
    PLCC and trainable tensors."""

    state: dict[str, Tensor]
    score: float = -math.inf
    step: int = 0
    srcc: float = math.nan
    plcc: float = math.nan


class _Run:
    """One fine-tuning run (a protocol round): the loop, validation, plateau schedule, state."""

    def __init__(self, model: GRMPModel, data: TrainingData, split: Split, config: TrainConfig, round_index: int):
        self.model, self.data, self.split, self.config = model, data, split, config
        self.round = round_index
        self.params = model.trainable_parameters()
        train_scores = data.scores[split.train].numpy()
        self.low, self.high = float(train_scores.min()), float(train_scores.max())
        self.targets = torch.from_numpy(normalize_scores(train_scores, self.low, self.high)).float().to(model.device)
        self.loss_fn = quality_loss(config.quality_loss)
        self.teacher = self._teacher_logits() if config.regularizer == "projection" else None
        self.optimizer: torch.optim.Optimizer
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience, threshold=0.0
        )
        self.generator = torch.Generator().manual_seed(config.seed * 1000 + round_index)
        self.step = 0
        self.best = Best(state=trainable_state(model))
        self.history: list[dict] = []

    def _teacher_logits(self) -> Tensor:
        """The frozen zero-shot CLIP's scene logits of the training images (fixed: no augmentation)."""
        if self.model.config.pretrained is None and not self.model.backbone.is_test:
            raise InputError(
                f"the projection regularizer needs a zero-shot CLIP teacher, but this model's backbone "
                f"{self.model.config.backbone!r} has no pretrained weights (an imported or randomly initialised "
                f"model carries only its own fine-tuned CLIP); fine-tune it with --regularizer none, or start "
                f"from a model on a pretrained backbone"
            )
        inputs = self.data.inputs(self.split.train)
        backbone = self.model.backbone
        if not self.model.features_frozen:  # pixels: the plain tower's features
            inputs = torch.nn.functional.normalize(backbone.encode_image(inputs).float(), dim=-1)
        return zero_shot_scene_logits(backbone, inputs).to(self.model.device)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def train_step(self) -> float:
        n = len(self.split.train)
        batch = torch.randperm(n, generator=self.generator)[: self.config.batch_size]
        inputs = self.data.inputs([self.split.train[i] for i in batch.tolist()])
        targets = self.targets[batch.to(self.targets.device)]
        self.model.train()
        features = self.model.features_of(inputs)
        out = self.model.predict(features)
        loss_q = self.loss_fn(out.score, targets)
        if self.teacher is not None:  # the projection regularizer
            loss_s = semantic_loss(self.model.scene_logits(features), self.teacher[batch.to(self.teacher.device)])
            project_gradients(self.params, loss_q, loss_s, lam=self.config.lam)
            loss = loss_q
        else:
            loss = loss_q
            if self.config.regularizer == "pairwise":
                loss = loss_q + self.config.lam * pairwise_regularizer(out.s_pos, targets)
            assign_gradients(self.params, loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(loss.detach())

    def validate(self) -> tuple[float, float]:
        predictions = predict_scores(self.model, self.data, self.split.val)
        return selection_score(predictions, self.data.scores[self.split.val].numpy())

    def observe(self, val_srcc: float, val_plcc: float) -> None:
        """Keep the best model so far and cut lr on a plateau (official: SRCC + PLCC)."""
        score = val_srcc + val_plcc
        score = -math.inf if math.isnan(score) else score
        if score > self.best.score:
            self.best = Best(
                score=score, step=self.step, srcc=val_srcc, plcc=val_plcc, state=trainable_state(self.model)
            )
        self.scheduler.step(score)

    @property
    def finished(self) -> bool:
        return self.step >= self.config.steps or self.lr < self.config.min_lr

    def state_dict(self) -> dict:
        return {
            "round": self.round,
            "step": self.step,
            "model": trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "best": dict(vars(self.best)),
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        load_trainable_state(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.best = Best(**state["best"])
        self.history = state["history"]


def fine_tune(
    model: GRMPModel,
    data: TrainingData,
    split: Split,
    config: TrainConfig,
    *,
    round_index: int = 0,
    on_step: StepCallback | None = None,
    state_path: str | Path | None = None,
    resume: dict | None = None,
    extra_state: dict | None = None,
    progress: bool = True,
) -> RoundResult:
    """Train `model` on `split.train`, select on `split.val`, score `split.test`.

    `on_step(step, loss, val_srcc)` is called after every step; `val_srcc` is None on steps
    without validation. With `state_path` and `config.checkpoint_every`, a resumable state
    (trainable tensors, optimiser, schedule, random generators, best model, history) is written
    every that many steps; `resume` is such a state, and the run then continues exactly as the
    uninterrupted run would have. The best validated model is loaded into `model` at the end.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed * 1000 + round_index)
        run = _Run(model, data, split, config, round_index)
        if resume is not None:
            run.load_state_dict(resume)
        bar = tqdm(total=config.steps, initial=run.step, desc=f"round {round_index}", unit="step", disable=not progress)
        while not run.finished:
            loss = run.train_step()
            val_srcc = None
            entry = {"round": round_index, "step": run.step, "loss": loss, "lr": run.lr}
            if split.val and (run.step % config.eval_every == 0 or run.step == config.steps):
                val_srcc, val_plcc = run.validate()
                run.observe(val_srcc, val_plcc)
                entry.update(val_srcc=val_srcc, val_plcc=val_plcc)
            run.history.append(entry)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", val_srcc=f"{run.best.srcc:.3f}")
            if on_step is not None:
                on_step(run.step, loss, val_srcc)
            if state_path is not None and config.checkpoint_every and run.step % config.checkpoint_every == 0:
                write_state(state_path, {**(extra_state or {}), "run": run.state_dict()})
        bar.close()
    if not split.val:  # nothing to select on: keep the last model
        run.best = replace(run.best, step=run.step, state=trainable_state(model))
    load_trainable_state(model, run.best.state)
    test = dict.fromkeys(TEST_METRICS, math.nan)  # a test part too small (or too uniform) to correlate
    if len(split.test) >= 3:
        predictions = predict_scores(model, data, split.test, keep=False)
        test = all_metrics(predictions, data.scores[split.test].numpy())
    return RoundResult(
        round=round_index,
        n_train=len(split.train),
        n_val=len(split.val),
        n_test=len(split.test),
        best_step=run.best.step,
        val_srcc=run.best.srcc,
        val_plcc=run.best.plcc,
        test=test,
        history=run.history,
    )


def run_protocol(
    model: GRMPModel,
    images: Sequence[LabelledImage],
    protocol: FinetuneProtocol,
    config: TrainConfig,
    *,
    store: FeatureStore | None = None,
    checkpoint_dir: str | Path | None = None,
    save_to: str | Path | None = None,
    on_step: StepCallback | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune `model` over `protocol.rounds` random splits and score each round's test part.

    Every round starts from the model as given (e.g. meta-pre-trained prompts). With
    `checkpoint_dir`, resumable state goes to `<checkpoint_dir>/train_state.safetensors` every
    `config.checkpoint_every` steps and after each round; calling again with the same arguments
    continues from it. At the end `model` holds the round whose validation score was best, and
    with `save_to` it is written by `save_checkpoint`, with the protocol, the settings, the
    training images and the per-round metrics in its config's `training` field.
    """
    data = TrainingData(model, images, store=store, progress=progress)
    splits = make_splits(data.images, protocol)
    initial = trainable_state(model)
    settings = {"protocol": asdict(protocol), "config": asdict(config), "n_images": len(data)}
    state_path = Path(checkpoint_dir) / STATE_FILE if checkpoint_dir is not None else None
    saved = _read_state(state_path, settings)
    done: list[RoundResult] = saved.get("done", [])
    best_round = saved.get("best_round")
    for round_index in range(len(done), protocol.rounds):
        resume = saved.get("run") if saved.get("run", {}).get("round") == round_index else None
        load_trainable_state(model, initial)
        round_result = fine_tune(
            model,
            data,
            splits[round_index],
            config,
            round_index=round_index,
            on_step=on_step,
            state_path=state_path,
            resume=resume,
            progress=progress,
            extra_state={"settings": settings, "done": done, "best_round": best_round},
        )
        done.append(round_result)
        if best_round is None or _val_key(round_result) > _val_key(best_round["result"]):
            best_round = {"result": round_result, "state": trainable_state(model)}
        if state_path is not None:
            write_state(state_path, {"settings": settings, "done": done, "best_round": best_round})
    assert best_round is not None  # protocol.rounds >= 1
    load_trainable_state(model, best_round["state"])
    result = FinetuneResult(rounds=done, skipped=data.skipped)
    chosen = best_round["result"]
    model.config.training = {
        **settings,
        "variant": model.config.variant,
        "selected_round": chosen.round,
        "train_images": [str(data.images[i].path) for i in splits[chosen.round].train],
        "rounds": [_round_summary(r) for r in done],
        "summary": result.summary(),
        "skipped": data.skipped,
    }
    if save_to is not None:
        result.checkpoint = save_checkpoint(model, save_to)
    return result


def _val_key(result: RoundResult) -> float:
    score = result.val_srcc + result.val_plcc
    return -math.inf if math.isnan(score) else score


def _round_summary(result: RoundResult) -> dict:
    return {k: v for k, v in asdict(result).items() if k != "history"}


def _read_state(path: Path | None, settings: dict) -> dict:
    """The saved state of an interrupted run with these settings ({} when there is none)."""
    if path is None:
        return {}
    legacy = path.with_name(LEGACY_STATE_FILE)
    if legacy.exists() and not path.exists():
        warnings.warn(
            f"ignored {legacy}: training state of an older version, stored as a pickle that could "
            f"run code; it is never read (delete it); training starts afresh",
            stacklevel=3,
        )
    if not path.exists():
        return {}
    state = read_state(path, {"RoundResult": RoundResult})
    if state.get("settings") != settings:
        raise InputError(
            f"{path} was written by a run with other settings; delete it or use another checkpoint_dir "
            f"(saved: {state.get('settings')}, now: {settings})"
        )
    return state


def adapt_seed(
    source: FeatureStore | Any,
    labelled_images: Sequence[LabelledImage],
    steps: int = 300,
    lam: float = 1.0,
    seed: int = 0,
    on_step: StepCallback | None = None,
    *,
    val_size: int | float = 0.2,
    progress: bool = False,
    **config_overrides: Any,
) -> tuple[GRMPModel, list[dict]]:
    """Few-shot adaptation of the seed variant on a small labelled set (for the app and CLI).

    `source` is a `FeatureStore` (its cached features are reused) or a loaded `Backbone`.
    `val_size` images (count or fraction) are held out to select the best step; all the rest
    train. Returns the adapted model (best validated step, training record in
    `model.config.training`) and the per-step history dicts
    (step, loss, lr, and val_srcc/val_plcc on validation steps).
    """
    store = source if isinstance(source, FeatureStore) else None
    backbone: Backbone = source.backbone if isinstance(source, FeatureStore) else source
    model = GRMPModel(
        GRMPConfig(variant="seed", backbone=backbone.name, pretrained=backbone.pretrained, seed=seed), backbone
    )
    config = TrainConfig.for_variant("seed", steps=steps, lam=lam, seed=seed, **config_overrides)
    data = TrainingData(model, labelled_images, store=store, progress=progress)
    order = np.random.default_rng(seed).permutation(len(data)).tolist()
    n_val = _count(val_size, len(order), "val_size")
    split = Split(train=sorted(order[n_val:]), val=sorted(order[:n_val]), test=[])
    if len(split.train) < 2:
        raise InputError(f"{len(data)} readable images leave {len(split.train)} for training; need 2 or more")
    result = fine_tune(model, data, split, config, on_step=on_step, progress=progress)
    model.config.training = {
        "val_size": val_size,
        "config": asdict(config),
        "n_images": len(data),
        "train_images": [Path(data.images[i].path).name for i in split.train],  # no server paths
        "best_step": result.best_step,
        "val_srcc": result.val_srcc,
        "val_plcc": result.val_plcc,
        "skipped": data.skipped,
    }
    return model, result.history
