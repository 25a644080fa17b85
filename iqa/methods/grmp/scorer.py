"""GRMP-IQA's scorer, and the one rule for when a GRMP-IQA model reuses CLIP-IQA's backbone
(`shares_backbone`) and cached image features (`shares_features`)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from iqa.clip.features import FeatureStore, ProgressFn
from iqa.clip.preprocess import preprocessor_for
from iqa.clip.test_backbones import TEST_BACKBONE_WARNING
from iqa.methods.grmp.model import GRMPConfig, GRMPModel
from iqa.methods.results import PairScore, ScoreResult
from iqa.names import GRMP_IQA
from iqa.photos.photo import Photo, PhotoKey

if TYPE_CHECKING:
    from iqa.clip.backbones import Backbone
    from iqa.methods.scoring import ScorerSpec

logger = logging.getLogger(__name__)


def _half_precision(model: GRMPModel):
    """Autocast to the backbone's half precision on a GPU: the paper variant keeps fp32 weights for
    training, but scores as fast as CLIP-IQA does."""
    dtype = model.backbone.dtype
    enabled = model.device.type == "cuda" and dtype != torch.float32
    return torch.autocast(model.device.type, dtype=dtype, enabled=enabled)


class PromptedImageEncoder:
    """A GRMP model's own image tower (visual prompts included), in the shape a `FeatureStore` takes.

    The paper variant's image features depend on the model, not on the shared backbone, but they
    do not change while it scores: cached per photo like CLIP-IQA's, a prompt or threshold change
    never re-encodes a photo. A scorer therefore holds a snapshot: after changing the model's
    weights, make a new scorer. The key is a hash of the image tower's weights (computed when first
    asked for), so it is the same in every process and differs for any other weights.
    """

    def __init__(self, model: GRMPModel):
        self.model = model
        self.is_test = model.backbone.is_test
        self.embed_dim = model.clip.visual.output_dim

    @cached_property
    def key(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        image_tower = (
            [self.model.clip.visual, self.model.vpt] if self.model.vpt is not None else [self.model.clip.visual]
        )
        for module in image_tower:
            for name, tensor in sorted(module.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return f"grmp-{self.model.config.variant}-{self.model.config.preprocess}-{digest.hexdigest()}"

    def encode_image(self, pixels: Tensor) -> Tensor:
        with torch.no_grad(), _half_precision(self.model):
            return self.model.image_features(pixels)


class GRMPScorer:
    """Scores photos with a GRMP model; one `PairScore` per photo for the learned prompt pair.

    Image features come from a `FeatureStore`: the one given where `shares_features`
    allows (seed on CLIP-IQA's backbone and preprocessing), else one of its own (paper: over the
    model's prompted image tower).
    """

    method = GRMP_IQA

    def __init__(self, model: GRMPModel, store: FeatureStore | None = None, batch_size: int = 16):
        self.model = model
        if store is not None and shares_features(model, store):
            logger.info("GRMP-IQA (%s) shares CLIP-IQA's image features", model.config.variant)
        elif model.features_frozen:
            store = FeatureStore(model.backbone, batch_size=batch_size)
        else:
            store = FeatureStore(
                model.backbone, model.preprocessor, batch_size=batch_size, encoder=PromptedImageEncoder(model)
            )
        self.store = store

    @property
    def variant(self) -> str:
        return self.model.config.variant

    @property
    def label(self) -> str:
        return f"{GRMP_IQA} ({self.variant})"

    @property
    def backbone(self) -> Backbone:
        return self.model.backbone

    def settings(self) -> dict[str, object]:
        """What its scores depend on besides the image features: the variant, the learned prompts (a
        hash of the fine-tuned weights: the same checkpoint, not only the same file name) and temperature."""
        digest = hashlib.blake2b(digest_size=16)
        trained = {id(p) for p in self.model.trainable_parameters()}
        for name, parameter in self.model.named_parameters():
            if id(parameter) in trained:
                digest.update(name.encode())
                digest.update(parameter.detach().float().cpu().numpy().tobytes())
        prompts = list(self.model.prompt_learner.display_texts())
        temperature = float(self.model.logit_scale)
        return {"variant": self.variant, "prompts": prompts, "temperature": temperature, "weights": digest.hexdigest()}

    def score(self, photos: Sequence[Photo | PhotoKey], progress: ProgressFn | None = None) -> list[ScoreResult]:
        if not photos:
            return []
        self.model.eval()  # before encoding: the paper variant's visual prompts pass dropout in training mode
        features = self.store.image_features(photos, progress)
        return self.score_features(features, [p.name for p in photos], [self.store.notes(p) for p in photos])

    def score_features(
        self, features: Tensor, names: Sequence[str], notes: Sequence[list[str]] | None = None
    ) -> list[ScoreResult]:
        """Scores from image features of `self.store` that are already computed (the streaming pipeline's path)."""
        if not names:
            return []
        self.model.eval()
        with torch.no_grad():  # float32 cosines: under autocast, 100 * cos would carry fp16 rounding into p
            output = self.model.predict(features)
        positive, negative = self.model.prompt_learner.display_texts()
        temperature = float(self.model.logit_scale)
        warning = [TEST_BACKBONE_WARNING] if self.model.backbone.is_test else []
        results = []
        for i, name in enumerate(names):
            pair = PairScore(
                positive=positive,
                negative=negative,
                s_pos=float(output.s_pos[i]),
                s_neg=float(output.s_neg[i]),
                p=float(output.p[i]),
            )
            results.append(
                ScoreResult(
                    name=name,
                    score=float(output.score[i]),
                    pairs=[pair],
                    method=GRMP_IQA,
                    variant=self.variant,
                    notes=warning + (list(notes[i]) if notes else []),
                    temperature=temperature,
                )
            )
        return results


def grmp_scorer(
    source: str | os.PathLike | GRMPModel,
    store: FeatureStore | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
) -> GRMPScorer:
    """A GRMP-IQA scorer for a checkpoint (or a model in memory), next to CLIP-IQA's `store`.

    A checkpoint is loaded onto `store`'s backbone when `shares_backbone` allows, else onto the
    backbone its configuration names; the scorer then uses `store`'s cached features when
    `shares_features` allows, else a store of its own.
    """
    from iqa.methods.grmp.checkpoint import load_checkpoint, read_config

    if isinstance(source, GRMPModel):
        model = source
    else:
        config = read_config(source)
        shared = store is not None and shares_backbone(config, store.backbone)
        logger.info(
            "GRMP-IQA checkpoint %s: %s",
            source,
            "on CLIP-IQA's backbone" if shared else f"loading its own backbone {config.backbone}",
        )
        backbone = store.backbone if shared and store is not None else None
        model = load_checkpoint(source, backbone=backbone, device=device, dtype=dtype)
    return GRMPScorer(model, store, batch_size=batch_size)


def shares_backbone(config: GRMPConfig, backbone: Backbone) -> bool:
    """Whether a checkpoint of `config` can be loaded onto an already loaded `backbone`.

    Only onto the backbone it was trained on: the same name and pretrained weights. A paper
    checkpoint without a pretrained tag carries its whole backbone and always loads its own.
    """
    trained_on = (config.backbone, config.pretrained)
    return config.pretrained is not None and trained_on == (backbone.name, backbone.pretrained)


def shares_features_of(config: GRMPConfig, store: FeatureStore) -> bool:
    """`shares_features` decided from a checkpoint's config before its model is built on `store`'s
    backbone (`grmp_scorer(path, store)`): what a process that does not build it (the app's, under
    ZeroGPU) needs to know to send cached features instead of pixels."""
    return (
        config.variant == "seed"
        and shares_backbone(config, store.backbone)
        and store.preprocessor.key == preprocessor_for(store.backbone).key
    )


def shares_features(model: GRMPModel, store: FeatureStore) -> bool:
    """Whether `model` may score from `store`'s cached image features.

    Only the seed variant, whose image tower is the frozen backbone, and only on the same backbone
    (name, weights, precision) and the same preprocessing. The paper variant's features depend
    on its own prompted image tower.
    """
    return (
        model.features_frozen
        and store.backbone.key == model.backbone.key
        and store.preprocessor.key == model.preprocessor.key
    )


def build(spec: ScorerSpec, store: FeatureStore | None) -> GRMPScorer:
    """The registry's builder: the spec's `checkpoint` next to the shared `store`, if any (`grmp_scorer`)."""
    checkpoint = spec.options_for(GRMP_IQA)["checkpoint"]  # required: checked by ScorerSpec
    return grmp_scorer(checkpoint, store, spec.device, spec.dtype, spec.batch_size)
