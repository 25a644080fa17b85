"""Quality words and their antonyms, and the prompt pairs a search tries from them.

Each attribute is a (positive, negative) pair of adjectives with a tag: `technical` (what a camera
or a file does to the pixels) or `aesthetic` (what a viewer makes of the picture). A candidate pair
is an attribute written into a template, both sides alike: "a sharp photo" / "a blurry photo".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from iqa.errors import InputError
from iqa.methods.prompts import PromptPair

TECHNICAL = "technical"
AESTHETIC = "aesthetic"
USER = "user"
TEMPLATES = ("a {} photo", "{} image", "a photo that looks {}")
MAX_VOCABULARY_BYTES = 1_000_000


@dataclass(frozen=True)
class Attribute:
    positive: str
    negative: str
    tag: str


def _tagged(tag: str, words: str) -> list[Attribute]:
    pairs = [item.split("/") for item in words.split(";")]
    return [Attribute(good.strip(), bad.strip(), tag) for good, bad in pairs]


VOCABULARY: tuple[Attribute, ...] = (
    *_tagged(
        TECHNICAL,
        "sharp/blurry; in-focus/out-of-focus; crisp/soft; clean/noisy; noise-free/grainy; well-exposed/overexposed;"
        "well-exposed/underexposed; bright/dark; properly lit/washed-out; detailed/smeared;"
        "high-resolution/low-resolution;"
        "uncompressed/compressed; artifact-free/blocky; smooth/pixelated; steady/shaky; still/motion-blurred;"
        "level/tilted; straight/skewed; undistorted/distorted; natural-colored/color-cast; color-accurate/discolored;"
        "well-balanced/oversaturated; vivid/desaturated; high-contrast/low-contrast; clear/hazy; clear/foggy;"
        "unobstructed/obstructed; glare-free/flared; evenly lit/vignetted; fine-grained/banded;"
        "high-quality/low-quality;"
        "flawless/defective; pristine/degraded; lossless/lossy; well-focused/misfocused",
    ),
    *_tagged(
        AESTHETIC,
        "beautiful/ugly; tidy/cluttered; balanced/unbalanced; well-composed/badly composed; elegant/awkward;"
        "striking/dull; pleasing/unpleasant; interesting/boring; professional/amateurish; polished/sloppy;"
        "harmonious/chaotic; simple/messy; vibrant/drab; warm/cold; inviting/off-putting; calm/busy;"
        "centered/off-center; good/bad; great/terrible; attractive/unattractive; lovely/awful;"
        "charming/bland; dramatic/flat; expressive/lifeless; memorable/forgettable; artistic/snapshot-like;"
        "cinematic/mundane; well-framed/cropped-off",
    ),
)


def fill(template: str, word: str) -> str:
    """The template with the word; "a {}" becomes "an {}" before a vowel."""
    if template.startswith("a {}") and word[:1].lower() in "aeiou":
        template = "an" + template[1:]
    return template.format(word)


def candidate_pairs(
    attributes: Iterable[Attribute] = VOCABULARY, templates: Sequence[str] = TEMPLATES
) -> list[tuple[PromptPair, str]]:
    """Every attribute in every template, once each, with the attribute's tag."""
    seen: dict[tuple[str, str], str] = {}
    for attribute in attributes:
        for template in templates:
            key = (fill(template, attribute.positive), fill(template, attribute.negative))
            seen.setdefault(key, attribute.tag)
    return [(PromptPair(positive, negative), tag) for (positive, negative), tag in seen.items()]


def parse_words(text: str, origin: str = "the word list") -> list[Attribute]:
    """User words, one attribute a line: `good / bad` or `good,bad` (a third field is its tag).

    Blank lines and lines starting with # are skipped; anything else must hold two words.
    """
    attributes = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.replace("/", ",").split(",")]
        if len(parts) not in (2, 3) or not all(parts[:2]):
            raise InputError(f"{origin} line {number}: expected 'good / bad' (or 'good,bad,tag'), got {line!r}")
        attributes.append(Attribute(parts[0], parts[1], parts[2] if len(parts) == 3 and parts[2] else USER))
    return attributes


def read_words(path: str | Path) -> list[Attribute]:
    """A vocabulary file (see `parse_words`)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_VOCABULARY_BYTES:
            raise InputError(f"vocabulary file {path} is larger than {MAX_VOCABULARY_BYTES:,} bytes")
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"vocabulary file {path} cannot be read ({err})") from err
    return parse_words(text, str(path))
