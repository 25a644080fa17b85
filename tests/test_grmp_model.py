"""GRMP-IQA model side: prompt learner, deep VPT, the two variants, scoring."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from iqa.clip.features import FeatureStore
from iqa.clip.prompt_learner import PromptLearner, encode_hard_prompts
from iqa.clip.test_backbones import TEST_BACKBONE_WARNING
from iqa.clip.text_tower import TextTower
from iqa.methods.grmp.model import (
    PRESETS,
    SCENE_PROMPTS,
    GRMPConfig,
    GRMPModel,
    OfficialPreprocessor,
    zero_shot_scene_logits,
)
from iqa.methods.grmp.scorer import GRMPScorer
from iqa.methods.grmp.vpt import VisualPromptTuning


def paper_config(**overrides) -> GRMPConfig:
    settings = dict(
        variant="paper", backbone="test-tiny-vit", pretrained="random-test-weights", vpt_tokens=6, train_last_blocks=1
    )
    return GRMPConfig(**{**settings, **overrides})


def seed_config(**overrides) -> GRMPConfig:
    return GRMPConfig(**{"variant": "seed", "backbone": "test-tiny-rn", "pretrained": None, **overrides})


# Prompt learner ---------------------------------------------------------------------------------


@pytest.mark.parametrize("class_specific", [False, True])
def test_prompt_initialised_from_words_equals_the_hard_prompt(vit_backbone, class_specific):
    learner = PromptLearner(
        TextTower(vit_backbone.model), vit_backbone.tokenize, ctx_init="a photo of a", class_specific=class_specific
    )
    hard = vit_backbone.encode_text(vit_backbone.tokenize(["a photo of a high quality.", "a photo of a low quality."]))
    assert learner.prompt_texts == ("a photo of a high quality.", "a photo of a low quality.")
    assert torch.allclose(learner(), hard, atol=1e-5)
    assert not torch.allclose(hard[0], hard[1], atol=1e-3)  # the comparison can fail


def test_hard_prompt_helper_equals_encode_text(rn_backbone):
    texts = list(SCENE_PROMPTS[:3])
    expected = F.normalize(rn_backbone.encode_text(rn_backbone.tokenize(texts)), dim=-1)
    assert torch.allclose(
        encode_hard_prompts(TextTower(rn_backbone.model), rn_backbone.tokenize, texts), expected, atol=1e-6
    )


def test_random_context_is_seeded_small_and_trainable(vit_backbone):
    tower = TextTower(vit_backbone.model)
    a = PromptLearner(tower, vit_backbone.tokenize, seed=3)
    b = PromptLearner(tower, vit_backbone.tokenize, seed=3)
    c = PromptLearner(tower, vit_backbone.tokenize, seed=4)
    assert a.ctx.shape == (4, 32) and torch.equal(a.ctx, b.ctx) and not torch.equal(a.ctx, c.ctx)
    assert 0.012 < a.ctx.std().item() < 0.028
    assert a.prompt_texts == ("X X X X high quality.", "X X X X low quality.")
    assert a.display_texts() == ("[4 learned tokens] high quality", "[4 learned tokens] low quality")
    a().sum().backward()
    assert a.ctx.grad is not None and a.ctx.grad.abs().sum() > 0
    assert list(a.state_dict()) == ["ctx"]  # prefix / suffix are rebuilt from the texts, not saved


def test_context_init_must_have_n_ctx_tokens(vit_backbone):
    with pytest.raises(ValueError, match="'a photo of' is 3 tokens long but n_ctx is 4"):
        PromptLearner(TextTower(vit_backbone.model), vit_backbone.tokenize, ctx_init="a photo of")


# Deep visual prompt tuning ----------------------------------------------------------------------


def block_inputs(vpt: VisualPromptTuning, pixels: torch.Tensor) -> list[torch.Tensor]:
    seen = []
    hooks = [
        block.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
        for block in vpt.visual.transformer.resblocks
    ]
    try:
        vpt(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_vpt_inserts_fresh_prompts_before_every_block(vit_backbone, pixels):
    visual = copy.deepcopy(vit_backbone.model.visual)
    vpt = VisualPromptTuning(visual, num_tokens=5).eval()
    out = vpt(pixels)
    assert out.shape == (3, 32)
    inputs = block_inputs(vpt, pixels)
    assert [x.shape[1] for x in inputs] == [1 + 5 + 196] * 2
    with torch.no_grad():
        assert torch.allclose(inputs[0][:, 1:6], vpt.prompt_proj(vpt.prompt_embeddings[0]).expand(3, -1, -1))
        # block 1 gets the projected deep prompts, not block 0's outputs at those positions
        assert torch.allclose(inputs[1][:, 1:6], vpt.prompt_proj(vpt.deep_prompt_embeddings[0]).expand(3, -1, -1))
        vpt.deep_prompt_embeddings[0].add_(0.5)
    assert not torch.allclose(vpt(pixels), out)


def test_vpt_dropout_only_in_training(vit_backbone, pixels):
    vpt = VisualPromptTuning(vit_backbone.model.visual, num_tokens=5).eval()
    assert torch.equal(vpt(pixels), vpt(pixels))
    vpt.train()
    torch.manual_seed(0)
    assert not torch.allclose(vpt(pixels), vpt(pixels))


def test_vpt_initialisation_follows_the_official_code(vit_backbone):
    vpt = VisualPromptTuning(vit_backbone.model.visual, num_tokens=100, seed=1)
    bound = (6.0 / (3 * 16 * 16 + 32)) ** 0.5
    assert vpt.prompt_embeddings.shape == (1, 100, 32) and vpt.deep_prompt_embeddings.shape == (1, 100, 32)
    assert vpt.deep_prompt_embeddings.abs().max() <= bound and vpt.prompt_embeddings.abs().max() > 0.9 * bound
    assert vpt.prompt_proj.weight.std().item() == pytest.approx((2 / 32) ** 0.5, rel=0.15)
    assert vpt.prompt_norm.eps == 1e-6 and vpt.prompt_dropout.p == 0.1


def test_vpt_refuses_a_resnet(rn_backbone):
    with pytest.raises(TypeError, match="needs an open_clip VisionTransformer.*ModifiedResNet"):
        GRMPModel(paper_config(backbone="test-tiny-rn"), rn_backbone)


def test_paper_without_visual_prompts_is_the_plain_tower(vit_backbone, pixels):
    model = GRMPModel(paper_config(vpt_tokens=0), vit_backbone)
    expected = F.normalize(vit_backbone.encode_image(pixels), dim=-1)
    assert model.vpt is None
    assert torch.allclose(model.image_features(pixels), expected, atol=1e-5)
    assert torch.allclose(
        model.scene_logits(model.image_features(pixels)), zero_shot_scene_logits(vit_backbone, expected), atol=1e-4
    )


# Variants ---------------------------------------------------------------------------------------


def names_of(model: GRMPModel, params: list) -> set[str]:
    ids = {id(p) for p in params}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_paper_trains_prompts_last_blocks_and_final_norms(vit_backbone):
    model = GRMPModel(paper_config(), vit_backbone)
    trainable = names_of(model, model.trainable_parameters())
    assert "prompt_learner.ctx" in trainable
    assert {
        n.split(".")[0:4] == ["clip", "transformer", "resblocks", "1"]
        for n in trainable
        if n.startswith("clip.transformer.")
    } == {True}
    assert any(n.startswith("clip.visual.transformer.resblocks.1.") for n in trainable)
    assert not any(".resblocks.0." in n for n in trainable)
    assert {"clip.ln_final.weight", "clip.visual.ln_post.bias"} <= trainable
    assert not any(n.startswith("vpt.") for n in trainable)  # official fine-tuning keeps the VPT
    prompts = names_of(model, model.prompt_parameters())
    assert prompts == {
        "prompt_learner.ctx",
        "vpt.prompt_embeddings",
        "vpt.deep_prompt_embeddings",
        "vpt.prompt_proj.weight",
        "vpt.prompt_proj.bias",
        "vpt.prompt_norm.weight",
        "vpt.prompt_norm.bias",
    }
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable | prompts
    with_vpt = GRMPModel(paper_config(finetune_vpt=True), vit_backbone)
    assert names_of(with_vpt, with_vpt.trainable_parameters()) == trainable | prompts


def test_seed_keeps_both_encoders_frozen(rn_backbone, pixels):
    model = GRMPModel(seed_config(), rn_backbone)
    assert names_of(model, model.trainable_parameters()) == {
        "prompt_learner.ctx",
        "head.mlp.0.weight",
        "head.mlp.0.bias",
        "head.mlp.2.weight",
        "head.mlp.2.bias",
    }
    assert list(model.state_dict()) == [
        "prompt_learner.ctx",
        "head.mlp.0.weight",
        "head.mlp.0.bias",
        "head.mlp.2.weight",
        "head.mlp.2.bias",
    ]
    assert not any(p.requires_grad for p in rn_backbone.model.parameters())
    assert model.features_frozen and model.clip is rn_backbone.model
    features = model.image_features(pixels)
    assert not features.requires_grad
    out = model.predict(features)
    out.score.sum().backward()
    assert model.prompt_learner.ctx.grad.abs().sum() > 0


def test_paper_score_is_softmax_of_scaled_cosines(vit_backbone, pixels):
    model = GRMPModel(paper_config(), vit_backbone)
    out = model(pixels)
    assert torch.allclose(out.p, torch.sigmoid(100 * (out.s_pos - out.s_neg)), atol=1e-5)
    assert torch.equal(out.score, out.p)
    text = model.text_features()
    assert torch.allclose(out.s_pos, model.image_features(pixels) @ text[0], atol=1e-6)


def test_seed_head_starts_at_p_and_can_change(rn_backbone, pixels):
    model = GRMPModel(seed_config(), rn_backbone)
    out = model(pixels)
    assert torch.allclose(out.score, out.p, atol=1e-6)
    with torch.no_grad():
        model.head.mlp[2].bias.fill_(1.0)
    assert (model(pixels).score > out.score).all()


def test_paper_fine_tuning_never_touches_the_shared_backbone(vit_backbone, pixels):
    before = vit_backbone.encode_image(pixels)
    model = GRMPModel(paper_config(), vit_backbone)
    with torch.no_grad():
        for param in model.trainable_parameters():
            param.add_(1.0)
    assert torch.equal(vit_backbone.encode_image(pixels), before)
    twin = copy.deepcopy(model)
    assert twin.backbone is vit_backbone and twin.clip is not model.clip
    assert twin.prompt_learner.tower.transformer is twin.clip.transformer
    assert twin.vpt.visual is twin.clip.visual


def test_scene_prompts_are_the_official_ones(vit_backbone, pixels):
    assert SCENE_PROMPTS[0] == "a photo of a animal" and SCENE_PROMPTS[7] == "a photo of a still_life"
    model = GRMPModel(paper_config(), vit_backbone)
    features = model.image_features(pixels)
    logits = model.scene_logits(features)
    scenes = F.normalize(vit_backbone.encode_text(vit_backbone.tokenize(list(SCENE_PROMPTS))), dim=-1)
    assert logits.shape == (3, 9)
    assert torch.allclose(logits, 100 * features @ scenes.t(), atol=1e-4)
    logits.sum().backward()  # the student's text tower gets the semantic gradient
    assert model.clip.ln_final.weight.grad is not None


def test_config_validation_and_presets():
    assert PRESETS["paper"].backbone == "ViT-B-16-quickgelu" and PRESETS["paper"].pretrained == "openai"
    assert PRESETS["seed"].backbone == "RN50-quickgelu" and PRESETS["seed"].variant == "seed"
    config = paper_config(training={"dataset": "koniq", "srcc": 0.5})
    assert GRMPConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown GRMP variant 'big'"):
        paper_config(variant="big")
    with pytest.raises(ValueError, match="seed variant uses its backbone's own preprocessing"):
        seed_config(preprocess="official")
    with pytest.raises(ValueError, match="unknown GRMP config fields: colour"):
        GRMPConfig.from_dict({**config.to_dict(), "colour": 1})


# Scoring ----------------------------------------------------------------------------------------


def test_seed_scorer_reuses_the_feature_store(rn_backbone, photos):
    model = GRMPModel(seed_config(), rn_backbone)
    store = FeatureStore(rn_backbone)
    features = store.image_features(photos)
    calls = store.image_encoder_calls
    results = GRMPScorer(model, store).score(photos)
    assert store.image_encoder_calls == calls
    expected = model.predict(features).score
    assert [r.name for r in results] == [p.name for p in photos]
    assert [r.score for r in results] == pytest.approx(expected.tolist(), abs=1e-6)
    pair = results[0].pairs[0]
    assert (pair.positive, pair.negative) == ("[4 learned tokens] high quality", "[4 learned tokens] low quality")
    assert results[0].label == "GRMP-IQA (seed)" and TEST_BACKBONE_WARNING in results[0].notes


def test_paper_scorer_uses_the_model_preprocessing(vit_backbone, photos):
    model = GRMPModel(paper_config(), vit_backbone)
    results = GRMPScorer(model, batch_size=2).score(photos)
    pixels = torch.stack([model.preprocessor(p.image) for p in photos])
    assert [r.score for r in results] == pytest.approx(model(pixels).score.tolist(), abs=1e-5)
    assert all(0 <= r.score <= 1 and r.score == r.pairs[0].p for r in results)
    official = GRMPModel(paper_config(preprocess="official"), vit_backbone)
    assert isinstance(official.preprocessor, OfficialPreprocessor)
    assert official.preprocessor(photos[0].image).shape == (3, 224, 224)
    assert GRMPScorer(official).score([photos[0]])[0].score != pytest.approx(results[0].score, abs=1e-6)
