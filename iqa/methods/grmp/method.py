"""GRMP-IQA as the registry describes it (no torch import: the scorer is built by `build`)."""

from __future__ import annotations

import math

from iqa.methods.registry import Method, Part
from iqa.methods.results import ScoreResult
from iqa.names import GRMP_IQA


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def grmp_parts(result: ScoreResult) -> list[Part]:
    """What a GRMP-IQA score is made of.

    paper: the score is p of the learned prompt pair. seed: the MLP head adds a correction to
    p's logit, score = sigmoid(t·(s_pos − s_neg) + head(s_pos, s_neg)).
    """
    pair = result.pairs[0]
    parts = [Part(f"{result.label}: learned prompt pair p", pair.p, pair)]
    if result.variant == "seed":
        correction = _logit(result.score) - _logit(pair.p)
        detail = (
            f"the MLP head adds {correction:+.3f} to p's logit:<br>"
            f"score = sigmoid(logit(p) {correction:+.3f}) = {result.score:.3f}"
        )
        parts.append(Part(f"{result.label}: score = p + MLP head", result.score, detail=detail))
    return parts


ABOUT = r"""
Few-shot quality assessment with learned prompts and gradient regularization (Li et al.,
[arXiv 2409.05381](https://arxiv.org/abs/2409.05381); ICCV 2025 as *Few-Shot Image Quality Assessment via
Adaptation of Vision-Language Models*). Learned context vectors form "X X X X high quality." /
"X X X X low quality."; the score is p(high quality) under CLIP's logit scale. Meta-prompt pre-training over
distortion tasks, then fine-tuning on a few labelled photos (soft-label cross-entropy), where the quality
gradient $g_q$ loses its component along the semantic (scene) gradient $g_s$ when the two agree:

$$g = g_q - \lambda \frac{\langle g_q, g_s\rangle}{\lVert g_s\rVert^2}\, g_s
\quad \text{if } \langle g_q, g_s\rangle > 0$$

with λ = 5 in the paper. The **seed** variant (this project's source document) keeps both encoders frozen
and trains the prompt plus a small MLP on the two cosines with MSE + λ·mean((Δcos − Δy)²) over photo pairs;
its image features are the cached CLIP-IQA ones, so it adapts within a minute on a CPU (third tab). Settings that
matter: the checkpoint (and the backbone it was trained on), λ and the number of steps.
"""

GRMP_METHOD = Method(
    name=GRMP_IQA,
    option="grmp",
    column="grmp_iqa",
    colour="#6a4c93",
    follows_prompts=False,
    build="iqa.methods.grmp.scorer:build",
    arguments=("checkpoint",),
    required={"checkpoint": "GRMP-IQA needs a checkpoint (--checkpoint PATH; see `python -m iqa train`)"},
    unscored="choose a GRMP-IQA checkpoint first",
    needs_store=False,
    parts=grmp_parts,
    about=ABOUT,
    on_by_default=True,
)
