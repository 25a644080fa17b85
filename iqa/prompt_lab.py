"""Prompt lab: how well does each antonym pair, and the mean of the chosen pairs, track labels?

Every photo is encoded once through the `FeatureStore`; each pair then costs two text encodings
and a matrix product, so trying new pairs on the same labelled set is nearly free.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .clipiqa import combine, pair_features, pair_probabilities
from .datasets import LabelledImage, load_csv
from .errors import InputError
from .features import FeatureStore
from .metrics import plcc, srcc
from .photos import Photo, PhotoError, open_photo
from .prompts import PromptPair, check_pairs

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
    photos: list[Photo]
    scores: list[float]
    skipped: list[str] = field(default_factory=list)

    def images(self) -> list[LabelledImage]:
        """The set as the trainers take it: a path and a score per photo (photos read from files)."""
        return [
            LabelledImage(photo.path, score) for photo, score in zip(self.photos, self.scores) if photo.path is not None
        ]


def rank_pairs(
    store: FeatureStore, pairs: Sequence[PromptPair], labelled: LabelledPhotos, temperature: float | None = None
) -> LabReport:
    """SRCC and PLCC of every valid pair (enabled or not) and of the enabled pairs' weighted mean."""
    if len(labelled.photos) < 3:
        raise InputError(f"the labelled set has {len(labelled.photos)} usable photos; at least 3 are needed")
    t = store.backbone.logit_scale if temperature is None else float(temperature)
    reasons = check_pairs(list(pairs), store.backbone.tokenizer)
    valid = [p for p, r in zip(pairs, reasons) if r is None]
    invalid = [f"{p.label}: {r}" for p, r in zip(pairs, reasons) if r is not None]
    if not valid:
        raise InputError("no valid prompt pair to rank" + (f" ({invalid[0]})" if invalid else ""))
    images = store.image_features(labelled.photos)
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
    return LabReport(ranks, chosen_srcc, chosen_plcc, len(labelled.photos), t, invalid)


def _agreement(predictions: torch.Tensor, scores: Sequence[float]) -> tuple[float, float]:
    """SRCC, and PLCC after the 4-parameter logistic fit when there are more points than parameters."""
    values = predictions.double().numpy()
    return srcc(values, scores), plcc(values, scores)


def load_labelled_folder(csv_path: str | Path) -> LabelledPhotos:
    """A labelled set on disk: a CSV with `path,score` (paths relative to the CSV), as examples/ has."""
    photos, scores, skipped = [], [], []
    for item in load_csv(csv_path):
        try:
            photos.append(open_photo(item.path, name=Path(item.path).name))
            scores.append(float(item.score))
        except PhotoError as err:
            skipped.append(str(err))
    return LabelledPhotos(photos, scores, skipped)


def load_labelled_uploads(csv_path: str | Path, files: Sequence[str | Path]) -> LabelledPhotos:
    """Uploaded photos with a CSV of scores, matched by file name.

    The CSV needs a `score` column and one naming the photo (`path`, `name`, `image` or `file`;
    only the file name is compared). Rows without an uploaded photo and photos without a row are
    reported in `skipped`, as are photos that cannot be opened.
    """
    rows = _read_score_rows(Path(csv_path))
    uploads = {Path(f).name: Path(f) for f in files}
    photos, scores, skipped = [], [], []
    for name, score in rows:
        if name not in uploads:
            skipped.append(f"{name}: listed in the CSV but not uploaded")
            continue
        try:
            photos.append(open_photo(uploads[name], name=name))
            scores.append(score)
        except PhotoError as err:
            skipped.append(str(err))
    listed = {name for name, _ in rows}
    skipped += [f"{name}: uploaded but has no score in the CSV" for name in uploads if name not in listed]
    return LabelledPhotos(photos, scores, skipped)


def _read_score_rows(path: Path) -> list[tuple[str, float]]:
    try:
        reader = csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines())
        header = [h.strip().lower() for h in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path.name} is not a readable CSV file ({err})") from err
    name_column = next((c for c in NAME_COLUMNS if c in header), None)
    if "score" not in header or name_column is None:
        raise InputError(
            f"{path.name} needs a header with a 'score' column and one of "
            f"{', '.join(NAME_COLUMNS)}; found: {', '.join(header) or 'nothing'}"
        )
    rows = []
    for line, raw in enumerate(reader, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        try:
            score = float(row["score"])
        except ValueError:
            raise InputError(f"{path.name} line {line}: score {row['score']!r} is not a number") from None
        if not math.isfinite(score):
            raise InputError(f"{path.name} line {line}: score {row['score']!r} is not finite")
        rows.append((Path(row[name_column]).name, score))
    return rows
