"""Antonym prompt pairs: the data CLIP-IQA scores with."""

from __future__ import annotations

import csv
import json
import math
import numbers
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

from iqa.errors import IQAError

CONTEXT_LENGTH = 77
# Weights are finite numbers in [0, MAX_WEIGHT] whose sum over the enabled pairs is > 0: with at
# most millions of pairs their sum stays far from float overflow (two pairs of 1e308 gave NaN).
MAX_WEIGHT = 1e6
MAX_PROMPT_FILE_BYTES = 10_000_000
_ALLOWED_CONTROLS = "\t\n\r"  # white space, which CLIP's tokenizer folds into one space


class PromptError(IQAError, ValueError):
    """A prompt pair that cannot be scored, with the reason."""


@dataclass(frozen=True)
class PromptPair:
    """A positive (desirable) and a negative (undesirable) description of a photo."""

    positive: str
    negative: str
    weight: float = 1.0
    enabled: bool = True

    @property
    def label(self) -> str:
        return f"{self.positive} / {self.negative}"

    def validate(self, tokenizer=None) -> None:
        """Raise PromptError naming the problem; `tokenizer` enables the 77-token check."""
        for side, text in (("positive", self.positive), ("negative", self.negative)):
            check_text(side, text)
            if not text.strip():
                raise PromptError(f"the {side} prompt is empty")
            if tokenizer is not None:
                n = len(tokenizer.encode(text)) + 2  # start and end tokens
                if n > CONTEXT_LENGTH:
                    raise PromptError(f"the {side} prompt is {n} tokens long; CLIP reads at most {CONTEXT_LENGTH}")
        if _normal(self.positive) == _normal(self.negative):
            raise PromptError("the positive and negative prompts are the same")
        check_weight(self.weight)

    def swapped(self) -> PromptPair:
        return PromptPair(self.negative, self.positive, self.weight, self.enabled)


def check_text(side: str, text: object) -> None:
    """PromptError unless `text` is a string without control characters (tab and newlines allowed)."""
    if not isinstance(text, str):
        raise PromptError(f"the {side} prompt must be text, not {type(text).__name__}")
    for char in text:
        if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS:
            raise PromptError(f"the {side} prompt holds a control character (U+{ord(char):04X})")


def check_weight(weight: object) -> None:
    """PromptError unless `weight` is a finite number in [0, MAX_WEIGHT]."""
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
        raise PromptError(f"the weight {weight!r} is not a finite number")
    weight = float(weight)
    if weight < 0:
        raise PromptError(f"the weight {weight!r} is below 0")
    if weight > MAX_WEIGHT:
        raise PromptError(f"the weight {weight!r} is beyond the limit of {MAX_WEIGHT:g}")


def _normal(text: str) -> str:
    """CLIP's tokenizer lower-cases and folds white space, so these texts encode the same."""
    return " ".join(text.lower().split())


def check_pairs(pairs: list[PromptPair], tokenizer=None) -> list[str | None]:
    """For each pair: None when it can be scored, else the reason it cannot."""
    reasons: list[str | None] = []
    for pair in pairs:
        try:
            pair.validate(tokenizer)
            reasons.append(None)
        except PromptError as err:
            reasons.append(str(err))
    return reasons


def usable_pairs(pairs: list[PromptPair], tokenizer=None) -> list[PromptPair]:
    """The enabled pairs, raising PromptError when one is invalid or none is left."""
    active = [p for p in pairs if p.enabled]
    for index, reason in enumerate(check_pairs(active, tokenizer)):
        if reason:
            raise PromptError(f"prompt pair {index + 1} ({active[index].label!r}): {reason}")
    if not active:
        raise PromptError("no prompt pair is enabled")
    if sum(p.weight for p in active) <= 0:
        raise PromptError("the weights of the enabled prompt pairs add up to zero")
    return active


def _pairs(*texts: tuple[str, str]) -> list[PromptPair]:
    return [PromptPair(pos, neg) for pos, neg in texts]


def _photo_pairs(*words: tuple[str, str]) -> list[PromptPair]:
    return [PromptPair(f"{pos} photo.", f"{neg} photo.") for pos, neg in words]


PRESETS: dict[str, list[PromptPair]] = {
    # The source document's three pairs.
    "seed": _pairs(
        ("a beautiful photo", "an ugly photo"),
        ("a professional photo", "an amateur photo"),
        ("a sharp photo", "a blurry photo"),
    ),
    # pyiqa's `clipiqa` metric (the reference library).
    "pyiqa": _pairs(
        ("Good image", "bad image"),
        ("Sharp image", "blurry image"),
        ("sharp edges", "blurry edges"),
        ("High resolution image", "low resolution image"),
        ("Noise-free image", "noisy image"),
    ),
    # The paper's "look" attributes; Noisy/Clean keeps the paper's order (undesirable side first).
    "paper-look": _photo_pairs(
        ("Good", "Bad"),
        ("Bright", "Dark"),
        ("Sharp", "Blurry"),
        ("Noisy", "Clean"),
        ("Colorful", "Dull"),
        ("High contrast", "Low contrast"),
    ),
    # The paper's "feel" attributes.
    "paper-feel": _photo_pairs(
        ("Aesthetic", "Not aesthetic"),
        ("Happy", "Sad"),
        ("Natural", "Synthetic"),
        ("New", "Old"),
        ("Scary", "Peaceful"),
        ("Complex", "Simple"),
    ),
}
DEFAULT_PRESET = "pyiqa"
# The paper's look / feel prompts describe separate attributes (Noisy/Clean, Happy/Sad, ...): each
# is read on its own, never averaged into one quality score.
ATTRIBUTE_PRESETS = ("paper-look", "paper-feel")


def is_attribute_set(pairs: list[PromptPair]) -> bool:
    """Whether every enabled pair is one of the attribute presets' (so no quality score is meant)."""
    attributes = {(p.positive, p.negative) for name in ATTRIBUTE_PRESETS for p in PRESETS[name]}
    active = [(p.positive, p.negative) for p in pairs if p.enabled]
    return bool(active) and all(pair in attributes for pair in active)


def preset(name: str) -> list[PromptPair]:
    if name not in PRESETS:
        raise PromptError(f"unknown prompt preset {name!r}; choose one of {', '.join(PRESETS)}")
    return list(PRESETS[name])


def pairs_from_records(records: list[dict]) -> list[PromptPair]:
    """Pairs from dicts with keys positive, negative and optional weight, enabled.

    Prompts must be strings without control characters and weights finite numbers in
    [0, MAX_WEIGHT]: anything else is a PromptError naming the entry, never converted.
    """
    pairs = []
    for i, rec in enumerate(records, 1):
        try:
            pairs.append(pair_from_record(rec))
        except PromptError as err:
            raise PromptError(f"entry {i}: {err}") from None
    return pairs


def pair_from_record(rec: object) -> PromptPair:
    """One pair from a dict (see `pairs_from_records`); PromptError naming the problem.

    `enabled` is read by `parse_flag`, the one idea of "on" for files and the app's table alike.
    """
    if not isinstance(rec, dict) or "positive" not in rec or "negative" not in rec:
        raise PromptError("needs 'positive' and 'negative' fields")
    check_text("positive", rec["positive"])
    check_text("negative", rec["negative"])
    weight = _float(rec.get("weight", 1.0))
    check_weight(weight)
    return PromptPair(rec["positive"], rec["negative"], weight, parse_flag(rec.get("enabled", True)))


def _float(value) -> float:
    if isinstance(value, bool):
        raise PromptError(f"the weight {value!r} is not a number")
    try:
        return float(value if value not in ("", None) else 1.0)
    except (TypeError, ValueError):
        raise PromptError(f"the weight {value!r} is not a number") from None


def parse_flag(value: object) -> bool:
    """On unless it says off: "0", "false", "no", "off" and "" (any case) are off, so "Y" is on."""
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def load_pairs(path: str | Path) -> list[PromptPair]:
    """Read a prompt set from JSON (a list, or {"pairs": [...]}) or CSV (positive,negative[,weight,enabled])."""
    path = Path(path)
    if not path.is_file():
        if path.suffix == "" and str(path) in PRESETS:
            return preset(str(path))
        raise PromptError(f"prompt file {path} does not exist (or give a preset: {', '.join(PRESETS)})")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise PromptError(f"{path.name} is larger than {MAX_PROMPT_FILE_BYTES // 1_000_000} MB; not a prompt set")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PromptError(f"{path.name} is not a text file; a prompt set is JSON or CSV") from None
    try:
        return pairs_from_records(_records(path, text))
    except PromptError as err:
        raise PromptError(f"{path.name}: {err}") from None


def _records(path: Path, text: str) -> list:
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise PromptError(f"not valid JSON: {' '.join(str(err).split()) or 'nested too deeply'}") from None
    records = data.get("pairs") if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise PromptError("should hold a list of prompt pairs")
    return records


def save_pairs(pairs: list[PromptPair], path: str | Path) -> Path:
    """Write a prompt set as JSON ({"pairs": [...]}) or CSV, by the file's suffix."""
    path = Path(path)
    records = [asdict(p) for p in pairs]
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["positive", "negative", "weight", "enabled"])
            writer.writeheader()
            writer.writerows(records)
    else:
        path.write_text(json.dumps({"pairs": records}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
