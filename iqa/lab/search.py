"""Pair search: every candidate pair scored from cached image features, ranked, and a greedy
forward selection whose worth is measured by cross-validation.

The image features are computed once; each candidate costs two text encodings (up to the end
token, `iqa.clip.text_tower`) and a column of a matrix product. The metric is SRCC against mean opinion
scores or ROC AUC against keep/reject labels, both computed for all columns at once from ranks.
The selection greedily adds the pair that most improves the training metric of the pairs' mean p,
among the `pool` pairs that look best on their own by a linear stand-in for the metric (the
standardised difference of the classes' mean p, or Pearson's correlation with the scores' ranks:
no sorting, so choosing the pool on each fold is cheap), and stops at `max_pairs` or when nothing
improves it. Its
cross-validated figure repeats the whole selection on each fold's training photos and measures the
held-out fold, so it says whether a suggestion generalises or only fits the labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.stats import rankdata

from iqa.clip.features import FeatureStore, ProgressFn
from iqa.errors import InputError
from iqa.lab.folds import DEFAULT_FOLDS, DEFAULT_SEED, CrossValidated, label_folds, score_folds, training
from iqa.labels.keep import require_labels
from iqa.methods.clipiqa.scorer import pair_features
from iqa.methods.prompts import PromptPair, check_pairs

Metric = Literal["srcc", "auc"]
METRICS: tuple[Metric, ...] = ("srcc", "auc")
DEFAULT_MAX_PAIRS = 5
DEFAULT_POOL = 50
TEXT_CHUNK = 64  # candidate pairs per text encoding call: the unit of progress


@dataclass(frozen=True)
class Target:
    """What a search or a fit optimises: scores (SRCC) or keep labels as 1/0 (AUC), with its folds."""

    values: np.ndarray
    metric: Metric
    folds: list[np.ndarray]

    @property
    def n(self) -> int:
        return int(self.values.size)

    def counts(self) -> str:
        """How many photos and labels the figures come from."""
        if self.metric == "auc":
            keep = int(self.values.sum())
            return f"{self.n} photos ({keep} keep, {self.n - keep} reject), {len(self.folds)} folds"
        return f"{self.n} photos with scores, {len(self.folds)} folds"


@dataclass(frozen=True)
class Candidate:
    pair: PromptPair
    tag: str
    figure: float  # the metric on all photos: of this pair alone in a ranking, of the set so far in a selection


@dataclass(frozen=True)
class SearchReport:
    metric: Metric
    ranking: list[Candidate]  # best first
    selected: list[Candidate]  # in the order chosen
    selection: CrossValidated  # the whole selection, repeated on each fold's training photos
    baselines: list[CrossValidated]  # fixed sets (the table, a preset) on the same folds
    counts: str
    left_out: list[str]  # "pair: reason" for candidates that cannot be used


def make_target(
    scores: Sequence[float] | np.ndarray,
    keep: Sequence[bool | None],
    metric: Metric,
    k: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> Target:
    """The target of `metric` with its stratified, seeded folds; refuses a set the folds cannot split."""
    if metric == "auc":
        labels = np.asarray(require_labels(keep), dtype=bool)
        return Target(labels.astype(float), metric, label_folds(labels, k, seed))
    if metric != "srcc":
        raise InputError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    values = np.asarray(scores, dtype=float)
    if not np.isfinite(values).all():
        raise InputError("the labelled set has scores that are not finite numbers")
    return Target(values, metric, score_folds(values, k, seed))


def column_metric(predictions: np.ndarray, target: np.ndarray, metric: Metric) -> np.ndarray:
    """The metric of every column of predictions [N, C] against target [N] (higher is better).

    AUC: the probability that a keep photo (target 1) outscores a reject photo, ties half.
    SRCC: Pearson's correlation of the ranks; a constant column agrees with nothing and gets 0
    (never NaN), as a constant target is refused before this.
    """
    ranks = rankdata(predictions, axis=0)
    if metric == "auc":
        good = target > 0.5
        n_good, n_bad = int(good.sum()), int((~good).sum())
        return (ranks[good].sum(axis=0) - n_good * (n_good + 1) / 2) / (n_good * n_bad)
    centred = ranks - ranks.mean(axis=0)
    wanted = rankdata(target)
    wanted = wanted - wanted.mean()
    scale = np.linalg.norm(centred, axis=0) * np.linalg.norm(wanted)
    return np.divide(wanted @ centred, scale, out=np.zeros(centred.shape[1]), where=scale > 0)


def probabilities(
    store: FeatureStore,
    images: torch.Tensor,
    pairs: Sequence[PromptPair],
    temperature: float,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """p(positive) of every photo for every pair, [N, P] float64; texts encoded TEXT_CHUNK pairs at a time."""
    order = _shortest_first(store, pairs)
    columns = []
    for start in range(0, len(pairs), TEXT_CHUNK):
        positive, negative = pair_features(store, [pairs[i] for i in order[start : start + TEXT_CHUNK]])
        columns.append(torch.sigmoid(temperature * (images @ (positive - negative).T)))
        if progress is not None:
            progress(min(start + TEXT_CHUNK, len(pairs)), len(pairs))
    if not columns:
        return np.zeros((images.shape[0], 0))
    p = torch.cat(columns, dim=1).double().numpy()
    return p[:, np.argsort(order)]


def _shortest_first(store: FeatureStore, pairs: Sequence[PromptPair]) -> np.ndarray:
    """The pairs ordered by their longer text's token count: each chunk is encoded only up to its
    longest text's end token, so chunks of similar lengths waste the least (the end token is the
    largest id of CLIP's tokenizer; with another the order only helps less)."""
    if not pairs:
        return np.zeros(0, dtype=int)
    tokens = store.backbone.tokenizer([text for pair in pairs for text in (pair.positive, pair.negative)])
    ends = tokens.argmax(dim=-1).view(len(pairs), 2).amax(dim=1)
    return np.argsort(ends.numpy(), kind="stable")


def usable(candidates: Sequence[tuple[PromptPair, str]], tokenizer) -> tuple[list[tuple[PromptPair, str]], list[str]]:
    """The candidates a scorer can use, and "pair: reason" for the others."""
    reasons = check_pairs([pair for pair, _ in candidates], tokenizer)
    kept = [c for c, reason in zip(candidates, reasons) if reason is None]
    left_out = [f"{c[0].label}: {reason}" for c, reason in zip(candidates, reasons) if reason is not None]
    return kept, left_out


def linear_figures(p: np.ndarray, target: np.ndarray, metric: Metric) -> np.ndarray:
    """A cheap stand-in for `column_metric` that orders columns much as it does: for AUC the
    difference of the keep and reject photos' mean p over its spread, for SRCC Pearson's
    correlation with the target's ranks (0 for a constant column)."""
    spread = p.std(axis=0)
    if metric == "auc":
        good = target > 0.5
        gap = p[good].mean(axis=0) - p[~good].mean(axis=0)
        return np.divide(gap, spread, out=np.zeros(p.shape[1]), where=spread > 0)
    wanted = rankdata(target)
    if not wanted.std() > 0:  # a training fold whose scores are all equal orders nothing
        return np.zeros(p.shape[1])
    wanted = (wanted - wanted.mean()) / wanted.std()
    covariance = wanted @ (p - p.mean(axis=0)) / len(wanted)
    return np.divide(covariance, spread, out=np.zeros(p.shape[1]), where=spread > 0)


def select(p: np.ndarray, target: np.ndarray, metric: Metric, max_pairs: int, pool: int = DEFAULT_POOL) -> list[int]:
    """Greedy forward selection: the columns whose mean most improves the metric, step by step."""
    candidates = np.argsort(-linear_figures(p, target, metric), kind="stable")[:pool]
    chosen: list[int] = []
    total = np.zeros(p.shape[0])
    best = -np.inf
    for _ in range(max_pairs):
        free = np.array([j for j in candidates if j not in chosen], dtype=int)
        if free.size == 0:
            break
        trial = column_metric((total[:, None] + p[:, free]) / (len(chosen) + 1), target, metric)
        step = int(np.argmax(trial))
        if trial[step] <= best + 1e-12:
            break
        chosen.append(int(free[step]))
        total += p[:, free[step]]
        best = float(trial[step])
    return chosen


def mean_figures(p: np.ndarray, target: np.ndarray, metric: Metric, columns: Sequence[int]) -> list[float]:
    """The metric of the mean of the first 1, 2, ... of `columns`."""
    means = np.cumsum(p[:, list(columns)], axis=1) / np.arange(1, len(columns) + 1)
    return [float(v) for v in column_metric(means, target, metric)]


def cross_validate_selection(
    p: np.ndarray, target: Target, max_pairs: int, pool: int = DEFAULT_POOL, name: str = "search"
) -> CrossValidated:
    """The selection repeated on each fold's training photos, measured on the held-out fold."""
    figures = []
    for i, test in enumerate(target.folds):
        train = training(target.folds, i, target.n)
        chosen = select(p[train], target.values[train], target.metric, max_pairs, pool)
        held_out = p[np.ix_(test, np.array(chosen))].mean(axis=1, keepdims=True)
        figures.append(float(column_metric(held_out, target.values[test], target.metric)[0]))
    return CrossValidated(name, tuple(figures))


def cross_validate_fixed(name: str, scores: np.ndarray, target: Target) -> CrossValidated:
    """A fixed score (nothing fitted) measured on each fold: the baseline the search is compared with."""
    figures = [float(column_metric(scores[test, None], target.values[test], target.metric)[0]) for test in target.folds]
    return CrossValidated(name, tuple(figures))


def weighted_mean(p: np.ndarray, pairs: Sequence[PromptPair]) -> np.ndarray | None:
    """The CLIP-IQA score of a table: the weighted mean of p over its enabled pairs (None if none weighs)."""
    weights = np.array([pair.weight if pair.enabled else 0.0 for pair in pairs])
    if not weights.sum() > 0:
        return None
    return p @ weights / weights.sum()


def search_pairs(
    store: FeatureStore,
    images: torch.Tensor,
    target: Target,
    candidates: Sequence[tuple[PromptPair, str]],
    baselines: Mapping[str, Sequence[PromptPair]],
    temperature: float | None = None,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    pool: int = DEFAULT_POOL,
    progress: ProgressFn | None = None,
) -> SearchReport:
    """Rank the candidates, select up to `max_pairs` of them, and cross-validate the selection
    beside each baseline table (its enabled pairs at their weights) on the same folds."""
    if not 1 <= max_pairs <= 50:
        raise InputError(f"max pairs must be from 1 to 50, got {max_pairs}")
    if images.shape[0] != target.n:
        raise InputError(f"{images.shape[0]} photos' features for {target.n} labels")
    t = store.backbone.logit_scale if temperature is None else float(temperature)
    kept, left_out = usable(candidates, store.backbone.tokenizer)
    if not kept:
        raise InputError("no candidate pair can be used" + (f" ({left_out[0]})" if left_out else ""))
    p = probabilities(store, images, [pair for pair, _ in kept], t, progress)
    figures = column_metric(p, target.values, target.metric)
    order = np.argsort(-figures, kind="stable")
    ranking = [Candidate(kept[j][0], kept[j][1], float(figures[j])) for j in order]
    chosen = select(p, target.values, target.metric, max_pairs, pool)
    steps = mean_figures(p, target.values, target.metric, chosen)
    selected = [Candidate(kept[j][0], kept[j][1], figure) for j, figure in zip(chosen, steps)]
    compared = [cross_validate_selection(p, target, max_pairs, pool, "selected pairs")]
    for name, table in baselines.items():
        scores = _table_scores(store, images, table, t)
        if scores is not None:
            compared.append(cross_validate_fixed(name, scores, target))
    return SearchReport(target.metric, ranking, selected, compared[0], compared[1:], target.counts(), left_out)


def _table_scores(
    store: FeatureStore, images: torch.Tensor, table: Sequence[PromptPair], t: float
) -> np.ndarray | None:
    valid = [pair for pair, reason in zip(table, check_pairs(list(table), store.backbone.tokenizer)) if reason is None]
    if not valid:
        return None
    return weighted_mean(probabilities(store, images, valid, t), valid)


def as_table(selected: Sequence[Candidate]) -> list[PromptPair]:
    """The selected pairs as a prompt table (equal weights, enabled), as `score --pairs` reads it."""
    return [PromptPair(c.pair.positive, c.pair.negative) for c in selected]
