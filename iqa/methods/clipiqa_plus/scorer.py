"""CLIP-IQA+: CLIP-IQA's image features scored against one CoOp-learned prompt pair.

pyiqa 0.1.16's `clipiqa+`: the prompts "X X ... X Good photo.." and "X X ... X Bad photo.." (16
X's; the prompt learner's appended full stop makes the BPE read ".." as one token) have their X's
replaced by the 16 learned context vectors, with the class words moved between the two halves of
the context (`PromptLearner(class_position="middle")`). The pair's two text features do not
depend on the photos: they are computed once, when the scorer is built, so scoring costs a
matrix product on the image features CLIP-IQA already has.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from iqa.clip.backbones import Backbone
from iqa.clip.features import FeatureStore, ProgressFn
from iqa.clip.prompt_learner import PromptLearner
from iqa.methods.clipiqa.scorer import check_clip_preprocessing, check_finite, pair_probabilities
from iqa.methods.clipiqa_plus.context import N_CTX, TEST_CONTEXT_SEED, LearnedContext, learned_context, text_width
from iqa.methods.results import PairScore, ScoreResult
from iqa.methods.scoring import score_from_store
from iqa.names import CLIP_IQA_PLUS
from iqa.photos.photo import Photo, PhotoKey

if TYPE_CHECKING:
    from iqa.methods.scoring import ScorerSpec

# The class words of the release; the prompt learner appends a full stop (the release's "Good photo..").
CLASS_TEXTS = ("Good photo.", "Bad photo.")


def learned_pair(backbone: Backbone, context: LearnedContext) -> tuple[torch.Tensor, tuple[str, str]]:
    """The learned pair's L2-normalised text features [2, D] on the CPU, and its display texts."""
    text_width(backbone)  # refuses a tower that takes no soft prompts
    assert backbone.text_tower is not None
    learner = PromptLearner(
        backbone.text_tower,
        backbone.tokenizer,
        CLASS_TEXTS,
        n_ctx=N_CTX,
        seed=TEST_CONTEXT_SEED,
        class_position="middle",
    )
    with torch.no_grad():
        if context.ctx is not None:
            learner.ctx.copy_(context.ctx)
        features = F.normalize(learner().float(), dim=-1).cpu()
    positive, negative = learner.display_texts()
    return features, (positive, negative)


class CLIPIQAPlus:
    """Scores photos with the learned pair on a shared, cached FeatureStore (CLIP-IQA's)."""

    method = label = CLIP_IQA_PLUS

    def __init__(self, store: FeatureStore, context: LearnedContext):
        check_clip_preprocessing(store, CLIP_IQA_PLUS)
        self.store = store
        self.context = context
        self.temperature = store.backbone.logit_scale
        features, self.texts = learned_pair(store.backbone, context)
        self.positive, self.negative = features[:1], features[1:]

    @property
    def backbone(self) -> Backbone:
        return self.store.backbone

    def settings(self) -> dict[str, object]:
        """What its scores depend on besides the image features: the learned context and the temperature."""
        return {"prompts": self.context.source, "prompts_sha256": self.context.digest, "temperature": self.temperature}

    def score(self, photos: Sequence[Photo | PhotoKey], progress: ProgressFn | None = None) -> list[ScoreResult]:
        return score_from_store(self, photos, progress)

    def score_features(
        self, images: torch.Tensor, names: Sequence[str], notes: Sequence[list[str]] | None = None
    ) -> list[ScoreResult]:
        """Scores from image features of `store` that are already computed."""
        s_pos, s_neg, p = pair_probabilities(images, self.positive, self.negative, self.temperature)
        scores = p[:, 0]
        check_finite(scores, names, CLIP_IQA_PLUS)
        notes = notes or [[] for _ in names]
        positive, negative = self.texts
        return [
            ScoreResult(
                name=name,
                score=float(scores[i]),
                pairs=[PairScore(positive, negative, float(s_pos[i, 0]), float(s_neg[i, 0]), float(p[i, 0]))],
                method=CLIP_IQA_PLUS,
                notes=list(notes[i]),
                temperature=self.temperature,
            )
            for i, name in enumerate(names)
        ]


def build(spec: ScorerSpec, store: FeatureStore | None) -> CLIPIQAPlus:
    """The registry's builder: CLIP-IQA+ on the shared `store`, with the context file the spec's
    `clipiqa_plus_prompts` names (default: the release from the Hub; a random one on a test backbone)."""
    assert store is not None  # CLIP-IQA+ shares CLIP-IQA's store (Method.needs_store)
    path = spec.options_for(CLIP_IQA_PLUS).get("clipiqa_plus_prompts")
    return CLIPIQAPlus(store, learned_context(store.backbone, os.fspath(path) if path is not None else None))
