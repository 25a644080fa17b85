"""Prompt lab: how well does each antonym pair, and the mean of the chosen pairs, track labels?

Every photo is encoded once through the `FeatureStore`; each pair then costs two text encodings
and a matrix product, so trying new pairs on the same labelled set is nearly free. Large labelled
sets (KonIQ-10k, a server-side folder) come as `LabelledFeatures`: their image features are read
from the disk cache (`iqa.engine.file_features`), so only photos never seen before are decoded.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from iqa.clip.features import FeatureStore
from iqa.engine.disk_cache import DiskCache
from iqa.engine.file_features import file_features
from iqa.errors import InputError, UsageError
from iqa.labels.datasets import DATASETS, LabelledImage, load_csv, load_dataset
from iqa.labels.keep import parse_label
from iqa.labels.metrics import plcc, srcc
from iqa.methods.clipiqa.scorer import combine, pair_features, pair_probabilities
from iqa.methods.prompts import PromptPair, check_pairs
from iqa.photos.photo import Photo, PhotoError, PhotoKey, open_photo

NAME_COLUMNS = ("path", "name", "image", "file")


@dataclass
class PairRank:
    """One pair's agreement with the labels (nan when its probabilities are all equal)."""

    pair: PromptPair
    srcc: float
    plcc: float


@dataclass
class LabReport:
    ranks: list[PairRank]  # best SRCC first
    chosen_srcc: float  # the weighted mean of p over the enabled pairs, as CLIP-IQA scores
    chosen_plcc: float
    n: int
    temperature: float
    invalid: list[str] = field(default_factory=list)  # "pair label: reason" for pairs left out


@dataclass
class LabelledPhotos:
    """Photos with their labels; a `PhotoKey` stands for a photo whose features the store holds."""

    photos: Sequence[Photo | PhotoKey]
    scores: list[float]
    skipped: list[str] = field(default_factory=list)
    keep: list[bool | None] = field(default_factory=list)  # keep/reject labels, where the set has them

    def images(self) -> list[LabelledImage]:
        """The set as the trainers take it: a path and a score per photo (photos read from files)."""
        return [
            LabelledImage(photo.path, score)
            for photo, score in zip(self.photos, self.scores)
            if isinstance(photo, Photo) and photo.path is not None
        ]


@dataclass
class LabelledFeatures:
    """A labelled set held as image features only (no pixels): what large sets are ranked from.

    `model` and `preprocess` are the backbone and preprocessing keys the features belong to;
    `rank_pairs` refuses a store of another backbone.
    """

    names: list[str]
    scores: list[float]
    features: torch.Tensor  # [N, D] float32, L2-normalised
    model: str
    preprocess: str
    skipped: list[str] = field(default_factory=list)
    from_cache: int = 0
    encoded: int = 0
    keep: list[bool | None] = field(default_factory=list)  # keep/reject labels, where the set has them


def labelled_features(
    images: Sequence[LabelledImage], store: FeatureStore, cache: DiskCache | None = None
) -> LabelledFeatures:
    """The features of labelled image files, from `cache` where they are there (see `file_features`)."""
    found = file_features([item.path for item in images], store, cache)
    return LabelledFeatures(
        names=[str(images[i].path) for i in found.index],
        scores=[float(images[i].score) for i in found.index],
        features=found.features,
        model=store.backbone.key,
        preprocess=store.preprocessor.key,
        skipped=found.skipped,
        from_cache=found.from_cache,
        encoded=found.encoded,
        keep=[images[i].keep for i in found.index],
    )


def load_server_dataset(spec: str, store: FeatureStore, cache: DiskCache | None = None) -> LabelledFeatures:
    """The labelled set `NAME:DIR` (a layout of `iqa.labels.datasets.DATASETS` and its folder, e.g.
    `koniq10k:/data/koniq`; for `csv`, the labels file) as features on `store`'s backbone.

    For the app's `--lab-dataset`: call it once at start; `rank_pairs(store, pairs, result)` then
    re-ranks in a fraction of a second per edit. A bad spec or layout raises an `IQAError`.
    """
    name, sep, root = spec.partition(":")
    if not sep or not root or name not in DATASETS:
        raise UsageError(f"labelled set {spec!r}: expected NAME:DIR with NAME one of {', '.join(DATASETS)}")
    return labelled_features(load_dataset(name, root), store, cache)


def rank_pairs(
    store: FeatureStore,
    pairs: Sequence[PromptPair],
    labelled: LabelledPhotos | LabelledFeatures,
    temperature: float | None = None,
) -> LabReport:
    """SRCC and PLCC of every valid pair (enabled or not) and of the enabled pairs' weighted mean."""
    if len(labelled.scores) < 3:
        raise InputError(f"the labelled set has {len(labelled.scores)} usable photos; at least 3 are needed")
    if not all(math.isfinite(score) for score in labelled.scores):
        raise InputError("the labelled set has labels that are not finite numbers")
    if len(set(labelled.scores)) == 1:
        raise InputError(
            f"all {len(labelled.scores)} usable photos have the same label ({labelled.scores[0]:g}): "
            "SRCC and PLCC need labels that differ"
        )
    t = store.backbone.logit_scale if temperature is None else float(temperature)
    reasons = check_pairs(list(pairs), store.backbone.tokenizer)
    valid = [p for p, r in zip(pairs, reasons) if r is None]
    invalid = [f"{p.label}: {r}" for p, r in zip(pairs, reasons) if r is not None]
    if not valid:
        raise InputError("no valid prompt pair to rank" + (f" ({invalid[0]})" if invalid else ""))
    images = labelled_image_features(store, labelled)
    positive, negative = pair_features(store, valid)
    _, _, p = pair_probabilities(images, positive, negative, t)
    ranks = [PairRank(pair, *_agreement(p[:, j], labelled.scores)) for j, pair in enumerate(valid)]
    ranks.sort(key=lambda r: -r.srcc if not math.isnan(r.srcc) else math.inf)
    chosen = [j for j, pair in enumerate(valid) if pair.enabled]
    weights = torch.tensor([valid[j].weight for j in chosen])
    if chosen and float(weights.sum()) > 0:
        chosen_srcc, chosen_plcc = _agreement(combine(p[:, chosen], weights), labelled.scores)
    else:
        chosen_srcc = chosen_plcc = math.nan
    return LabReport(ranks, chosen_srcc, chosen_plcc, len(labelled.scores), t, invalid)


def labelled_image_features(store: FeatureStore, labelled: LabelledPhotos | LabelledFeatures) -> torch.Tensor:
    """The image features of a labelled set on `store` (features of another backbone refused)."""
    if isinstance(labelled, LabelledPhotos):
        return store.image_features(labelled.photos)
    if (labelled.model, labelled.preprocess) != (store.backbone.key, store.preprocessor.key):
        raise InputError(
            f"the labelled set's features were computed on {labelled.model} ({labelled.preprocess}), "
            f"not on the chosen backbone {store.backbone.key} ({store.preprocessor.key})"
        )
    return labelled.features


def _agreement(predictions: torch.Tensor, scores: Sequence[float]) -> tuple[float, float]:
    """SRCC, and PLCC after the 4-parameter logistic fit when there are more points than parameters."""
    values = predictions.double().numpy()
    return srcc(values, scores), plcc(values, scores)


def load_labelled_folder(csv_path: str | Path) -> LabelledPhotos:
    """A labelled set on disk: a CSV with `path,score` and optionally `label` (paths relative to the
    CSV), as examples/ has."""
    photos, scores, skipped, keep = [], [], [], []
    for item in load_csv(csv_path):
        try:
            photos.append(open_photo(item.path, name=Path(item.path).name))
        except PhotoError as err:
            skipped.append(str(err))
            continue
        scores.append(float(item.score))
        keep.append(item.keep)
    return LabelledPhotos(photos, scores, skipped, keep)


def load_labelled_uploads(csv_path: str | Path, files: Sequence[str | Path]) -> LabelledPhotos:
    """Uploaded photos with a CSV of scores, matched by file name.

    The CSV needs a `score` or a `label` column (keep/reject, good/bad, 1/0; without scores a keep
    scores 1 and a reject 0) and one naming the photo (`path`, `name`, `image` or `file`; only the
    file name is compared). Rows without an uploaded photo and photos without a row are reported in
    `skipped`, as are photos that cannot be opened.
    """
    rows = _read_score_rows(Path(csv_path))
    uploads = {Path(f).name: Path(f) for f in files}
    photos, scores, skipped, keep = [], [], [], []
    for name, score, label in rows:
        if name not in uploads:
            skipped.append(f"{name}: listed in the CSV but not uploaded")
            continue
        try:
            photos.append(open_photo(uploads[name], name=name))
        except PhotoError as err:
            skipped.append(str(err))
            continue
        scores.append(score)
        keep.append(label)
    listed = {name for name, _, _ in rows}
    skipped += [f"{name}: uploaded but has no score in the CSV" for name in uploads if name not in listed]
    return LabelledPhotos(photos, scores, skipped, keep)


def _read_score_rows(path: Path) -> list[tuple[str, float, bool | None]]:
    try:
        reader = csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines())
        header = [h.strip().lower() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path.name} is not a readable CSV file ({err})") from err
    name_column = next((c for c in NAME_COLUMNS if c in header), None)
    if not {"score", "label"} & set(header) or name_column is None:
        raise InputError(
            f"{path.name} needs a header with a 'score' or 'label' column and one of "
            f"{', '.join(NAME_COLUMNS)}; found: {', '.join(header) or 'nothing'}"
        )
    rows = []
    for line, raw in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        try:
            label = parse_label(row.get("label", ""))
        except InputError as err:
            raise InputError(f"{path.name} line {line}: {err}") from None
        rows.append((Path(row[name_column]).name, _score(path, line, row, label), label))
    return rows


def _score(path: Path, line: int, row: dict[str, str], label: bool | None) -> float:
    """A row's score; without a score column, its label as 1 (keep) or 0 (reject)."""
    if "score" not in row:
        if label is None:
            raise InputError(f"{path.name} line {line}: no label (keep/reject, good/bad or 1/0)")
        return float(label)
    try:
        score = float(row["score"])
    except ValueError:
        raise InputError(f"{path.name} line {line}: score {row['score']!r} is not a number") from None
    if not math.isfinite(score):
        raise InputError(f"{path.name} line {line}: score {row['score']!r} is not finite")
    return score
