"""Correlation of any scorer's predictions with the subjective scores of a labelled set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from iqa.errors import InputError
from iqa.labels.metrics import krcc, plcc, srcc
from iqa.methods.results import ScoreResult
from iqa.photos.photo import Photo, PhotoError, open_photo


class Scorer(Protocol):
    """CLIP-IQA with any prompt set, a GRMP scorer, or anything that scores photos."""

    def score(self, photos: list[Photo]) -> list[ScoreResult]: ...


def evaluate(
    scorer: Scorer,
    labelled_images: Sequence[Any],
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """SRCC, PLCC (after the 4-parameter logistic fit) and KRCC of `scorer` on a labelled set.

    `labelled_images` are `iqa.labels.datasets.LabelledImage`s (anything with `.path` and `.score`).
    Images that cannot be opened are skipped and reported; they do not stop the evaluation.
    Returns dict(srcc, plcc, krcc, n, skipped, predictions, targets), where `skipped` holds
    one message per image left out and `predictions`/`targets` are aligned lists over the
    `n` images scored.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    predictions: list[float] = []
    targets: list[float] = []
    skipped: list[str] = []
    starts = range(0, len(labelled_images), batch_size)
    for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress):
        photos, scores = [], []
        for item in labelled_images[start : start + batch_size]:
            try:
                photos.append(open_photo(item.path))
            except (PhotoError, OSError) as error:
                skipped.append(str(error))
                continue
            scores.append(float(item.score))
        if not photos:
            continue
        results = scorer.score(photos)
        if len(results) != len(photos):
            raise RuntimeError(f"scorer returned {len(results)} results for {len(photos)} photos")
        predictions.extend(r.score for r in results)
        targets.extend(scores)
    if len(predictions) < 3:
        raise InputError(
            f"only {len(predictions)} of {len(labelled_images)} images could be scored; "
            f"need at least 3 for a correlation (skipped: {skipped[:3]})"
        )
    return {
        "srcc": srcc(predictions, targets),
        "plcc": plcc(predictions, targets),
        "krcc": krcc(predictions, targets),
        "n": len(predictions),
        "skipped": skipped,
        "predictions": predictions,
        "targets": targets,
    }
