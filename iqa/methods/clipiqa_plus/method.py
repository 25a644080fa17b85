"""CLIP-IQA+ as the registry describes it (no torch import: the scorer is built by `build`)."""

from __future__ import annotations

from iqa.methods.registry import Method, Part
from iqa.methods.results import ScoreResult
from iqa.names import CLIP_IQA_PLUS, PYIQA_WEIGHTS_REPO

PROMPTS_FILE = "CLIP-IQA+_learned_prompts-603f3273.pth"  # pyiqa's release: a bare fp16 (16, 512) tensor


def clipiqa_plus_parts(result: ScoreResult) -> list[Part]:
    """The learned pair: p, with s_pos and s_neg in its hover (the score is this p)."""
    pair = result.pairs[0]
    return [Part(f"{result.label}: learned prompt pair p", pair.p, pair)]


ABOUT = rf"""**CLIP-IQA+** (Wang, Chan & Loy, AAAI 2023, [arXiv 2207.12396](https://arxiv.org/abs/2207.12396)):
CLIP-IQA with one antonym pair whose words were learned on KonIQ-10k (CoOp prompt learning): 16
context vectors $c_1 \dots c_{{16}}$, shared by both prompts, around the class words,
$[c_1 \dots c_8]$ *Good photo.* $[c_9 \dots c_{{16}}]$ and the same with *Bad photo.* The score is
$p = \dfrac{{e^{{t\,s_+}}}}{{e^{{t\,s_+}} + e^{{t\,s_-}}}}$ with $s_\pm = \cos(f_{{\text{{photo}}}}, f_\pm)$
and $t$ the checkpoint's logit scale (100).

- Image features: OpenAI RN50 at the photo's own resolution, the attention pool's positional
  embedding off: the very features CLIP-IQA scores, so it costs one more text pair.
- Weights: the learned context `{PROMPTS_FILE}` from the Hub repository `{PYIQA_WEIGHTS_REPO}`
  (pyiqa's release, pinned by its hash), or a local file (`--clipiqa-plus-prompts PATH`).
- Its pair is learned, so it does not follow the prompt table.
"""

CLIP_IQA_PLUS_METHOD = Method(
    name=CLIP_IQA_PLUS,
    option="clipiqa+",
    column="clip_iqa_plus",
    colour="#e76f51",
    follows_prompts=False,
    build="iqa.methods.clipiqa_plus.scorer:build",
    arguments=("clipiqa_plus_prompts",),
    parts=clipiqa_plus_parts,
    about=ABOUT,
)
