"""Score records shared by both methods, and their CSV / JSON forms."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field


@dataclass
class PairScore:
    """One antonym pair's breakdown: cosines with each prompt and p(positive)."""

    positive: str
    negative: str
    s_pos: float
    s_neg: float
    p: float
    weight: float = 1.0


@dataclass
class ScoreResult:
    """A photo's quality score in [0, 1] (higher is better) and how it came about."""

    name: str
    score: float
    pairs: list[PairScore]
    method: str  # CLIP_IQA or GRMP_IQA (iqa.names)
    notes: list[str] = field(default_factory=list)
    variant: str | None = None  # GRMP-IQA: "seed" or "paper"
    temperature: float | None = None  # t in p = sigmoid(t * (s_pos - s_neg))
    # Figures behind the score besides the pairs, by name (MA-CLIP: its magnitude cue and fusion
    # weights, means over its views), for its breakdown and the JSON output.
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The method as people read it: "CLIP-IQA", "GRMP-IQA (seed)"."""
        return f"{self.method} ({self.variant})" if self.variant else self.method

    def to_dict(self) -> dict:
        return asdict(self)


def results_to_json(results: list[ScoreResult], **meta) -> str:
    return json.dumps({**meta, "results": [r.to_dict() for r in results]}, indent=2, ensure_ascii=False)


def pair_labels(results: list[ScoreResult]) -> list[str]:
    """Every pair's "positive / negative" label, in first-seen order."""
    labels: list[str] = []
    for result in results:
        for pair in result.pairs:
            label = f"{pair.positive} / {pair.negative}"
            if label not in labels:
                labels.append(label)
    return labels


def pair_columns(labels: list[str]) -> list[str]:
    return [f"{kind}[{label}]" for label in labels for kind in ("p", "s_pos", "s_neg")]


def pair_values(result: ScoreResult | None, labels: list[str]) -> list[str]:
    """p, s_pos and s_neg of each labelled pair ("" where `result` has no such pair)."""
    by_label = {f"{p.positive} / {p.negative}": p for p in (result.pairs if result else [])}
    values: list[str] = []
    for label in labels:
        found = by_label.get(label)
        values += [f"{found.p:.6f}", f"{found.s_pos:.6f}", f"{found.s_neg:.6f}"] if found else ["", "", ""]
    return values


def results_to_csv(results: list[ScoreResult]) -> str:
    """One row per photo: the score, then p / s_pos / s_neg for every pair."""
    labels = pair_labels(results)
    header = ["name", "method", "score", *pair_columns(labels), "notes"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for result in results:
        row = [result.name, result.label, f"{result.score:.6f}", *pair_values(result, labels)]
        row.append("; ".join(result.notes))
        writer.writerow(row)
    return out.getvalue()
