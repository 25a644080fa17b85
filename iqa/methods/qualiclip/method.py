"""QualiCLIP as the registry describes it (no torch import: the scorer is built by `build`)."""

from __future__ import annotations

from iqa.methods.registry import Method, Part
from iqa.methods.results import ScoreResult
from iqa.names import PYIQA_WEIGHTS_REPO, QUALICLIP

WEIGHTS_FILE = "QualiCLIP.pth"  # pyiqa's release: the fine-tuned RN50 under clip_model.*, and prompts_features
# The antonym pairs QualiCLIP was trained with (its paper; pyiqa 0.1.16 scores with these).
PAIRS = (
    ("Good photo.", "Bad photo."),
    ("Sharp image.", "Blurry image."),
    ("Sharp edges.", "Blurry edges."),
    ("High-resolution image.", "Low-resolution image."),
    ("Noise-free image.", "Noisy image."),
    ("High-quality image.", "Low-quality image."),
    ("Good picture.", "Bad picture."),
)
TEMPERATURE_DIVISOR = 2.0  # p = softmax(logit_scale · cos / 2) over each pair, as in the reference


def qualiclip_parts(result: ScoreResult) -> list[Part]:
    """p of each of its seven pairs (the score is their mean)."""
    return [Part(f"{result.label}: {pair.positive} / {pair.negative}", pair.p, pair) for pair in result.pairs]


ABOUT = rf"""**QualiCLIP** (Agnolucci, Galteri & Bertini, 2024,
[arXiv 2403.11176](https://arxiv.org/abs/2403.11176)): a CLIP RN50 fine-tuned, without human
ratings, to rank synthetically degraded photos by their similarity to antonym prompts. For each of
its {len(PAIRS)} pairs (*Good photo.* / *Bad photo.*, *Sharp image.* / *Blurry image.*, ...),
$p_i = \dfrac{{e^{{t\,s_{{i+}}/2}}}}{{e^{{t\,s_{{i+}}/2}} + e^{{t\,s_{{i-}}/2}}}}$ with
$s_{{i\pm}} = \cos(f_{{\text{{photo}}}}, f_{{i\pm}})$, $t$ the model's logit scale (100) and a
temperature of 2; the score is the mean of the $p_i$.

- Image features: its own fine-tuned RN50 at the photo's own resolution (positional embedding off),
  a second image pass beside CLIP-IQA's.
- Weights: `{WEIGHTS_FILE}` from the Hub repository `{PYIQA_WEIGHTS_REPO}` (pyiqa's release, with the
  pairs' text features it ships), or a local file (`--qualiclip-weights PATH`).
- Its pairs are the ones it was trained with, so it does not follow the prompt table.
"""

QUALICLIP_METHOD = Method(
    name=QUALICLIP,
    option="qualiclip",
    column="qualiclip",
    colour="#1d3557",
    follows_prompts=False,
    build="iqa.methods.qualiclip.scorer:build",
    arguments=("qualiclip_weights",),
    needs_store=False,
    parts=qualiclip_parts,
    about=ABOUT,
)
