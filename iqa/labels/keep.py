"""Keep/reject labels: how they are written in a labels file, and how a synthetic set gets them.

A label says whether a photo belongs in the collection (keep, True) or should be filtered out
(reject, False). Bad photos are the positive class of the "reject" decision in
`iqa.lab.calibration`.
"""

from __future__ import annotations

from collections.abc import Sequence

from iqa.errors import InputError

KEEP_WORDS = ("keep", "good", "1")
REJECT_WORDS = ("reject", "bad", "0")
# A synthetic copy distorted at this strength or more (1 = mildest of 5) is one a filter should reject.
REJECT_FROM_LEVEL = 3


def parse_label(text: str) -> bool | None:
    """True for keep, False for reject, None for an empty cell; anything else is refused."""
    word = text.strip().lower()
    if not word:
        return None
    if word in KEEP_WORDS:
        return True
    if word in REJECT_WORDS:
        return False
    raise InputError(f"label {text!r} is neither keep ({'/'.join(KEEP_WORDS)}) nor reject ({'/'.join(REJECT_WORDS)})")


def keep_from_level(level: int) -> bool:
    """A synthetic photo's label from its distortion strength (0 = the original)."""
    return level < REJECT_FROM_LEVEL


def format_label(keep: bool | None) -> str:
    return "" if keep is None else ("keep" if keep else "reject")


def require_labels(keep: Sequence[bool | None], what: str = "the labelled set") -> list[bool]:
    """Every photo's label, or a message saying how many photos have none and how to add them."""
    missing = sum(label is None for label in keep)
    if missing:
        raise InputError(
            f"{what}: {missing} of {len(keep)} photos have no keep/reject label "
            "(add a 'label' column with keep/reject, good/bad or 1/0, or put the photos in good/ and bad/ folders)"
        )
    return [bool(label) for label in keep]
