"""The same photos scored by CLIP-IQA and, optionally, a GRMP-IQA scorer, side by side.

One `ComparedPhoto` per photo is what the app's ranking table, charts, filter and CSV download
are built from, so they all agree.
"""
from __future__ import annotations

import csv
import io
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, Sequence

from .clipiqa import CLIPIQA
from .features import ProgressFn
from .filtering import split_by_threshold
from .photos import Photo
from .results import ScoreResult

CLIP_IQA = "CLIP-IQA"
GRMP_IQA = "GRMP-IQA"
METHODS = (CLIP_IQA, GRMP_IQA)


class Scorer(Protocol):
    def score(self, photos: Sequence[Photo]) -> list[ScoreResult]: ...


@dataclass
class ComparedPhoto:
    """A photo's CLIP-IQA result and, when a GRMP scorer was given, its GRMP-IQA result."""

    name: str
    clip: ScoreResult
    grmp: ScoreResult | None = None

    def result(self, method: str) -> ScoreResult:
        """The result of `method` ("CLIP-IQA" or "GRMP-IQA"); ValueError when it was not scored."""
        if method == CLIP_IQA:
            return self.clip
        if method == GRMP_IQA and self.grmp is not None:
            return self.grmp
        if method == GRMP_IQA:
            raise ValueError("no GRMP-IQA scores: choose a GRMP-IQA checkpoint first")
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")

    @property
    def notes(self) -> list[str]:
        notes = list(self.clip.notes)
        if self.grmp is not None:
            notes += [n for n in self.grmp.notes if n not in notes]
        return notes


class CachedScorer:
    """A scorer's results remembered per photo content (least recently used dropped first).

    For scorers whose result does not depend on the prompt table (GRMP-IQA): editing prompts
    then re-runs only CLIP-IQA. The wrapped scorer stays reachable as `scorer`.
    """

    def __init__(self, scorer: Scorer, max_items: int = 20_000):
        self.scorer = scorer
        self._results: OrderedDict[str, ScoreResult] = OrderedDict()
        self._max_items = max_items
        self._lock = threading.Lock()

    @property
    def method(self) -> str:
        return self.scorer.method

    def score(self, photos: Sequence[Photo]) -> list[ScoreResult]:
        keys = [p.digest for p in photos]
        with self._lock:
            missing = {k: p for k, p in zip(keys, photos) if k not in self._results}
            for key, result in zip(missing, self.scorer.score(list(missing.values())) if missing else []):
                self._results[key] = result
            for key in keys:
                self._results.move_to_end(key)
            while len(self._results) > self._max_items:
                self._results.popitem(last=False)
            return [replace(self._results[k], name=p.name) for k, p in zip(keys, photos)]


def compare(photos: Sequence[Photo], clip: CLIPIQA, grmp: Scorer | None = None,
            progress: ProgressFn | None = None) -> list[ComparedPhoto]:
    """Score every photo with both methods, in the order of `photos`; `progress` follows image encoding."""
    clip_results = clip.score(photos, progress)
    grmp_results = grmp.score(photos) if grmp is not None and photos else [None] * len(photos)
    return [ComparedPhoto(p.name, c, g) for p, c, g in zip(photos, clip_results, grmp_results)]


def ranked(rows: Sequence[ComparedPhoto], method: str = CLIP_IQA) -> list[ComparedPhoto]:
    """Best first by `method`'s score."""
    return sorted(rows, key=lambda row: row.result(method).score, reverse=True)


def split(rows: Sequence[ComparedPhoto], threshold: float,
          method: str = CLIP_IQA) -> tuple[list[ComparedPhoto], list[ComparedPhoto]]:
    """(kept, rejected) rows, best first, by `method`'s score against `threshold`."""
    by_result = {id(row.result(method)): row for row in rows}
    kept, rejected = split_by_threshold([row.result(method) for row in rows], threshold)
    return [by_result[id(r)] for r in kept], [by_result[id(r)] for r in rejected]


def rows_to_csv(rows: Sequence[ComparedPhoto], threshold: float, method: str = CLIP_IQA) -> str:
    """One line per photo, best first: both scores and the keep/reject decision by `method`."""
    kept, rejected = split(rows, threshold, method)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["rank", "name", "clip_iqa", "grmp_iqa", "decision", "method", "threshold", "notes"])
    for rank, row in enumerate(kept + rejected, 1):
        grmp = f"{row.grmp.score:.6f}" if row.grmp is not None else ""
        decision = "keep" if rank <= len(kept) else "reject"
        writer.writerow([rank, row.name, f"{row.clip.score:.6f}", grmp, decision, method, threshold,
                         "; ".join(row.notes)])
    return out.getvalue()


def zip_photos(photos: Sequence[Photo], path: str | Path) -> Path:
    """Write the photos into a zip: each file's own bytes when it has a file, else a PNG of its pixels.

    Names are made unique so that two photos called the same both survive.
    """
    path = Path(path)
    used: set[str] = set()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for photo in photos:
            if photo.path is not None and Path(photo.path).is_file():
                name, data = Path(photo.name).name, Path(photo.path).read_bytes()
            else:
                buffer = io.BytesIO()
                photo.image.save(buffer, format="PNG")
                name, data = Path(photo.name).stem + ".png", buffer.getvalue()
            name = unique_name(name, used)
            used.add(name)
            archive.writestr(name, data)
    return path


def unique_name(name: str, used: set[str]) -> str:
    """`name`, or `stem-1.ext`, `stem-2.ext`, ... if it is already in `used`."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, n = name, 0
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}{suffix}"
    return candidate
