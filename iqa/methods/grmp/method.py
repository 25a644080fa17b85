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
)
