"""Pair search, selection and learned weights on sets where the right answer is known by construction."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iqa.clip.features import FeatureStore
from iqa.errors import InputError
from iqa.lab.folds import label_folds, score_folds
from iqa.lab.search import as_table, column_metric, make_target, search_pairs, select
from iqa.lab.vocabulary import VOCABULARY, candidate_pairs, fill, parse_words
from iqa.lab.weights import cross_validate_weights, fit_weights, learn_weights
from iqa.methods.prompts import PRESETS, PromptPair


def planted_features(store: FeatureStore, pair: PromptPair, signs: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Image features of random content plus `signs` x the pair's direction; the content is made
    orthogonal to that direction, so the pair separates the signs exactly and other pairs only partly."""
    texts = store.text_features([pair.positive, pair.negative])
    direction = F.normalize(texts[0] - texts[1], dim=0)
    noise = torch.randn(len(signs), direction.numel(), generator=torch.Generator().manual_seed(seed))
    noise -= (noise @ direction)[:, None] * direction
    planted = noise + 0.3 * torch.as_tensor(signs, dtype=torch.float32)[:, None] * direction
    return F.normalize(planted, dim=-1)


@pytest.fixture
def store(rn_backbone):
    return FeatureStore(rn_backbone)


def labelled_set(store):
    keep = np.array([True] * 30 + [False] * 30)
    good = PromptPair("a clean photo", "a noisy photo")
    return planted_features(store, good, np.where(keep, 1.0, -1.0)), keep


def test_a_word_that_separates_the_classes_is_found_and_selected_first(store):
    images, keep = labelled_set(store)
    target = make_target(keep.astype(float), keep.tolist(), "auc", k=5)
    candidates = candidate_pairs(VOCABULARY, ("a {} photo",))
    report = search_pairs(store, images, target, candidates, {"pyiqa": PRESETS["pyiqa"]}, max_pairs=3)
    best = report.ranking[0]
    assert (best.pair.positive, best.pair.negative, best.tag) == ("a clean photo", "a noisy photo", "technical")
    assert best.figure == 1.0 and report.ranking[1].figure < 1.0
    assert len(report.ranking) == len(candidates) and not report.left_out
    assert report.selected[0].pair == best.pair and report.selected[0].figure == 1.0
    assert len(report.selected) == 1  # nothing improves a perfect AUC
    assert report.selection.folds == (1.0,) * 5 and report.selection.text() == "1.0000 ± 0.0000"
    assert [b.name for b in report.baselines] == ["pyiqa"] and len(report.baselines[0].folds) == 5
    assert report.counts == "60 photos (30 keep, 30 reject), 5 folds"
    assert as_table(report.selected) == [PromptPair("a clean photo", "a noisy photo")]


def test_srcc_search_finds_the_word_that_follows_the_scores(store):
    scores = np.linspace(1, 5, 45)
    images = planted_features(store, PromptPair("a sharp photo", "a blurry photo"), scores - 3)
    target = make_target(scores.tolist(), [None] * 45, "srcc", k=3)
    report = search_pairs(store, images, target, candidate_pairs(VOCABULARY[:10], ("a {} photo",)), {})
    assert report.ranking[0].pair == PromptPair("a sharp photo", "a blurry photo")
    assert report.ranking[0].figure > 0.95 > report.ranking[1].figure and report.selection.mean > 0.9
    assert report.counts == "45 photos with scores, 3 folds"


def test_column_metrics_match_their_definitions():
    rng = np.random.default_rng(1)
    p = rng.random((40, 3))
    p[:, 2] = 0.5  # a constant column: no agreement, never NaN
    scores = rng.random(40)
    from scipy.stats import spearmanr

    srcc = column_metric(p, scores, "srcc")
    assert srcc[:2] == pytest.approx([spearmanr(p[:, j], scores).statistic for j in range(2)]) and srcc[2] == 0
    keep = scores > 0.5
    auc = column_metric(p, keep.astype(float), "auc")
    pairs = [(g, b) for g in np.flatnonzero(keep) for b in np.flatnonzero(~keep)]
    by_hand = np.mean([(p[g, 0] > p[b, 0]) + 0.5 * (p[g, 0] == p[b, 0]) for g, b in pairs])
    assert auc[0] == pytest.approx(by_hand) and auc[2] == 0.5


def test_greedy_selection_adds_a_pair_only_while_it_helps():
    rng = np.random.default_rng(2)
    keep = np.repeat([1.0, 0.0], 50)
    half_a = keep + rng.normal(0, 1, 100)
    half_b = keep + rng.normal(0, 1, 100)  # independent errors: the mean of both is better than either
    useless = rng.random(100)
    p = np.stack([useless, half_a, half_b], axis=1)
    chosen = select(p, keep, "auc", max_pairs=3)
    assert sorted(chosen[:2]) == [1, 2] and 0 not in chosen


def test_folds_are_stratified_seeded_and_cover_every_photo():
    keep = np.array([True] * 12 + [False] * 8)
    folds = label_folds(keep, 4, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(20))
    assert all(keep[f].sum() == 3 and (~keep[f]).sum() == 2 for f in folds)
    assert all((a == b).all() for a, b in zip(folds, label_folds(keep, 4, seed=3)))
    assert any((a != b).any() for a, b in zip(folds, label_folds(keep, 4, seed=4)))
    ranked = score_folds(np.arange(30.0), 5)
    assert all(len(f) == 6 and {int(i) // 5 for i in f} == set(range(6)) for f in ranked)


@pytest.mark.parametrize(
    ("scores", "keep", "metric", "message"),
    [
        (
            [1.0] * 10,
            [True] * 6 + [False] * 4,
            "auc",
            "5 folds need at least 5 photos of each class; the set has 6 keep and 4 reject",
        ),
        ([1.0] * 10, [True] * 10, "auc", "all 10 labelled photos are 'keep'"),
        ([1.0] * 10, [True] * 5 + [None] * 5, "auc", "5 of 10 photos have no keep/reject label"),
        ([2.0] * 20, [None] * 20, "srcc", r"all 20 photos have the same score \(2\)"),
        (list(range(14)), [None] * 14, "srcc", r"5 folds need at least 15 photos \(3 per test fold\); the set has 14"),
    ],
)
def test_a_set_the_folds_cannot_measure_is_refused(scores, keep, metric, message):
    with pytest.raises(InputError, match=message):
        make_target(scores, keep, metric, k=5)


def test_user_words_and_templates():
    words = parse_words("# mine\nsunny / rainy\nwarm,cold,aesthetic\n\n")
    assert [(a.positive, a.negative, a.tag) for a in words] == [
        ("sunny", "rainy", "user"),
        ("warm", "cold", "aesthetic"),
    ]
    with pytest.raises(InputError, match="line 1: expected 'good / bad'"):
        parse_words("just one")
    assert fill("a {} photo", "overexposed") == "an overexposed photo" and fill("{} image", "old") == "old image"
    assert len(VOCABULARY) >= 60 and {a.tag for a in VOCABULARY} == {"technical", "aesthetic"}
    assert len(candidate_pairs()) == len({(p.positive, p.negative) for p, _ in candidate_pairs()})


def test_learned_weights_favour_the_pair_that_follows_the_labels(store):
    images, keep = labelled_set(store)
    target = make_target(keep.astype(float), keep.tolist(), "auc", k=5)
    table = [
        PromptPair("a photo that looks cold", "a photo that looks warm"),
        PromptPair("a clean photo", "a noisy photo", 1.0, False),
    ]
    report = learn_weights(store, images, table, target)
    assert report.pairs[1].weight == 1.0 and report.pairs[0].weight < 0.5 and all(p.enabled for p in report.pairs)
    assert report.fitted.mean == 1.0 and report.table is not None and report.table.mean < 1.0
    with pytest.raises(InputError, match="no pair's p rises with the labels"):
        fit_weights(np.stack([1.0 - keep, 0.5 - keep], axis=1), keep.astype(float))


def test_a_fold_no_pair_rises_with_is_measured_with_equal_weights_not_refused():
    rng = np.random.default_rng(0)
    keep = np.array([True] * 15 + [False] * 15)
    p = rng.random((30, 1)) * 0.2 + 0.4 + 0.02 * keep[:, None]
    target = make_target(keep.astype(float), keep.tolist(), "auc", k=5, seed=0)
    assert fit_weights(p, target.values).tolist() == [1.0]  # all the photos: the pair rises with the labels
    report = cross_validate_weights(p, target)  # a fold where it does not no longer refuses the report
    assert len(report.folds) == 5 and all(np.isfinite(report.folds))
