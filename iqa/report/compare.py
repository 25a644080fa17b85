"""The same photos scored by several methods (CLIP-IQA and, optionally, GRMP-IQA), side by side.

One `ComparedPhoto` per photo is what the app's ranking table, charts, filter and CSV download
are built from, so they all agree.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from iqa.clip.features import ProgressFn
from iqa.errors import InputError
from iqa.methods import registry
from iqa.methods.results import ScoreResult, pair_columns, pair_labels, pair_values
from iqa.methods.scoring import Scorer
from iqa.photos.photo import Photo
from iqa.report.filtering import split_by_threshold


@dataclass
class ComparedPhoto:
    """A photo's results, keyed by method (`iqa.methods.registry`), in the order they were scored."""

    name: str
    results: dict[str, ScoreResult]

    def result(self, method: str) -> ScoreResult:
        """The result of `method`; InputError when it was not scored."""
        if method in self.results:
            return self.results[method]
        hint = registry.method(method).unscored
        if hint:
            raise InputError(f"no {method} scores: {hint}")
        raise InputError(f"no {method!r} scores; scored: {', '.join(self.results)}")

    @property
    def notes(self) -> list[str]:
        notes: list[str] = []
        for result in self.results.values():
            notes += [n for n in result.notes if n not in notes]
        return notes


def compare(
    photos: Sequence[Photo], scorers: Sequence[Scorer], progress: ProgressFn | None = None
) -> list[ComparedPhoto]:
    """Score every photo with every scorer, in the order of `photos`; `progress` follows the first one's encoding.

    `ranked`, `split` and `rows_to_csv` decide by the first registered method unless told otherwise.
    """
    per_method = {
        s.method: s.score(photos, progress if i == 0 else None) if photos else [] for i, s in enumerate(scorers)
    }
    return [ComparedPhoto(p.name, {m: results[i] for m, results in per_method.items()}) for i, p in enumerate(photos)]


def ranked(rows: Sequence[ComparedPhoto], method: str | None = None) -> list[ComparedPhoto]:
    """Best first by `method`'s score (default: the first registered method's)."""
    method = method or registry.names()[0]
    return sorted(rows, key=lambda row: row.result(method).score, reverse=True)


def split(
    rows: Sequence[ComparedPhoto], threshold: float, method: str | None = None
) -> tuple[list[ComparedPhoto], list[ComparedPhoto]]:
    """(kept, rejected) rows, best first, by `method`'s score (default: the first registered
    method's) against `threshold`."""
    method = method or registry.names()[0]
    by_result = {id(row.result(method)): row for row in rows}
    kept, rejected = split_by_threshold([row.result(method) for row in rows], threshold)
    return [by_result[id(r)] for r in kept], [by_result[id(r)] for r in rejected]


def rows_to_csv(
    rows: Sequence[ComparedPhoto],
    threshold: float,
    method: str | None = None,
    settings: Mapping[str, object] | None = None,
) -> str:
    """One line per photo, best first: every method's score, the keep/reject decision by `method`,
    each method's per-pair p / s_pos / s_neg, and `settings` (backbone, weights, temperature, ...)
    repeated on every line so that each line says how it was scored."""
    method = method or registry.names()[0]
    kept, rejected = split(rows, threshold, method)
    out = io.StringIO()
    writer = csv.writer(out)
    methods = list(dict.fromkeys([*registry.names(), *(m for row in rows for m in row.results)]))
    labels = {m: pair_labels([row.results[m] for row in rows if m in row.results]) for m in methods}
    settings = dict(settings or {})
    writer.writerow(
        [
            *["rank", "name", *(_column(m) for m in methods), "decision", "method", "threshold"],
            *(f"{_column(m)} {column}" for m in methods for column in pair_columns(labels[m])),
            *settings,
            "notes",
        ]
    )
    for rank, row in enumerate(kept + rejected, 1):
        scores = [f"{row.results[m].score:.6f}" if m in row.results else "" for m in methods]
        decision = "keep" if rank <= len(kept) else "reject"
        pairs = [value for m in methods for value in pair_values(row.results.get(m), labels[m])]
        writer.writerow(
            [rank, row.name, *scores, decision, method, threshold, *pairs, *settings.values(), "; ".join(row.notes)]
        )
    return out.getvalue()


def _column(method: str) -> str:
    """The method's column name ("CLIP-IQA" -> "clip_iqa")."""
    return registry.method(method).column


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
