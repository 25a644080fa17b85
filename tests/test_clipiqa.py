import math

import pytest
import torch
import torch.nn.functional as F
from forked import run_forked
from PIL import Image

from iqa.clip.features import FeatureStore
from iqa.clip.test_backbones import MEANINGLESS_NOTE
from iqa.methods.clipiqa.scorer import CLIPIQA, combine, pair_probabilities
from iqa.methods.prompts import PRESETS, PromptError, PromptPair
from iqa.photos.photo import Photo


def test_pair_probability_matches_hand_computation_at_t_1():
    image = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[0.6, 0.8]])
    negative = torch.tensor([[0.0, 1.0]])
    s_pos, s_neg, p = pair_probabilities(image, positive, negative, temperature=1.0)
    assert s_pos.item() == pytest.approx(0.6)
    assert s_neg.item() == pytest.approx(0.0)
    assert p.item() == pytest.approx(math.exp(0.6) / (math.exp(0.6) + math.exp(0.0)))


def test_pair_probability_uses_temperature_and_does_not_overflow():
    image = torch.tensor([[1.0, 0.0]])
    positive, negative = torch.tensor([[0.3, 0.0]]), torch.tensor([[0.1, 0.0]])
    _, _, p = pair_probabilities(image, positive, negative, temperature=100.0)
    assert p.item() == pytest.approx(1 / (1 + math.exp(-100 * 0.2)))
    _, _, p = pair_probabilities(image, positive, negative, temperature=1e6)
    assert p.item() == 1.0


def test_weighted_mean_over_pairs():
    p = torch.tensor([[0.2, 0.8, 0.5]])
    assert combine(p, torch.tensor([1.0, 1.0, 1.0])).item() == pytest.approx(0.5)
    assert combine(p, torch.tensor([3.0, 1.0, 0.0])).item() == pytest.approx((0.6 + 0.8) / 4)


def test_scores_match_manual_clip_computation(rn_backbone, photos):
    """The engine's numbers equal a direct computation with the model (pyiqa's formula)."""
    pairs = PRESETS["pyiqa"]
    scorer = CLIPIQA(FeatureStore(rn_backbone), pairs)
    results = scorer.score(photos[:1])
    pixels = scorer.store.preprocessor(photos[0].image)[None]
    image = F.normalize(rn_backbone.encode_image(pixels), dim=-1)
    texts = [t for pair in pairs for t in (pair.positive, pair.negative)]
    text = F.normalize(rn_backbone.encode_text(rn_backbone.tokenize(texts)), dim=-1)
    logits = rn_backbone.logit_scale * image @ text.T
    expected = logits.reshape(1, -1, 2).softmax(dim=-1)[..., 0].mean(dim=1)
    assert results[0].score == pytest.approx(expected.item(), abs=1e-5)
    assert len(results[0].pairs) == 5


@pytest.mark.parametrize("temperature", [1.0, None])
def test_swapping_a_pair_gives_one_minus_p(rn_backbone, photos, temperature):
    store = FeatureStore(rn_backbone)
    pair = PromptPair("a sharp photo", "a blurry photo")
    forward = CLIPIQA(store, [pair], temperature).score(photos)
    backward = CLIPIQA(store, [pair.swapped()], temperature).score(photos)
    for a, b in zip(forward, backward):
        assert a.score == pytest.approx(1 - b.score, abs=1e-6)
        assert a.pairs[0].s_pos == pytest.approx(b.pairs[0].s_neg)


def test_seed_temperature_keeps_scores_near_one_half(rn_backbone, photos):
    results = CLIPIQA(FeatureStore(rn_backbone), PRESETS["seed"], temperature=1.0).score(photos)
    assert all(abs(r.score - 0.5) < 0.5 * 0.5 for r in results)  # |s_pos - s_neg| <= 2 bounds p
    assert all(abs(p.p - 0.5) <= abs(p.s_pos - p.s_neg) / 4 + 1e-6 for r in results for p in r.pairs)


@pytest.mark.parametrize("backbone", ["rn_backbone", "vit_backbone"])
def test_batch_equals_one_by_one(backbone, photos, request):
    backbone = request.getfixturevalue(backbone)
    # same-sized photos share a batch; differently sized ones are grouped
    same_size = [Photo(f"{p.name}-{i}", p.image.resize((96, 64))) for i, p in enumerate(photos)]
    batch_scores = [
        r.score for r in CLIPIQA(FeatureStore(backbone, batch_size=8), PRESETS["paper-look"]).score(same_size + photos)
    ]
    single = [CLIPIQA(FeatureStore(backbone), PRESETS["paper-look"]).score([p])[0].score for p in same_size + photos]
    assert batch_scores == pytest.approx(single, abs=1e-5)


def test_rn_path_encodes_at_native_resolution(rn_backbone):
    store = FeatureStore(rn_backbone)
    assert store.preprocessor.native_resolution
    assert store.preprocessor(Image.new("RGB", (320, 192))).shape == (3, 192, 320)
    assert store.preprocessor(Image.new("RGB", (4000, 3000))).shape == (3, 768, 1024)
    # the ResNet's 7x7 positional embedding would not fit 10x6 feature maps: the native path needs none
    features = rn_backbone.encode_image(torch.randn(1, 3, 192, 320))
    assert features.shape == (1, rn_backbone.embed_dim) and torch.isfinite(features).all()


def test_native_path_equals_positional_free_attention_pool(rn_backbone):
    """Attention on the mean token alone gives the same output as full self-attention's first token."""
    visual = rn_backbone.model.visual
    x = torch.randn(2, 3, 96, 128)
    feats = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(x)))))
    tokens = feats.flatten(2).permute(2, 0, 1)
    tokens = torch.cat([tokens.mean(0, keepdim=True), tokens])
    pool = visual.attnpool
    full, _ = F.multi_head_attention_forward(  # pyiqa's form: every token queries, token 0 is kept
        tokens,
        tokens,
        tokens,
        tokens.shape[-1],
        pool.num_heads,
        None,
        torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        None,
        None,
        False,
        0.0,
        pool.c_proj.weight,
        pool.c_proj.bias,
        training=False,
        need_weights=False,
        use_separate_proj_weight=True,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
    )
    assert torch.allclose(rn_backbone.encode_image(x), full[0], atol=1e-5)


def test_large_photo_is_downsized_and_says_so(rn_backbone):
    big = Photo("big.jpg", Image.new("RGB", (4000, 3000), (120, 90, 60)))
    result = CLIPIQA(FeatureStore(rn_backbone, max_side=512), PRESETS["seed"]).score([big])[0]
    assert result.notes == [MEANINGLESS_NOTE, "resized from 4000x3000 to 512x384 (max_side=512)"]


def test_vit_uses_standard_resize(vit_backbone):
    store = FeatureStore(vit_backbone)
    assert not store.preprocessor.native_resolution
    assert store.preprocessor(Image.new("RGB", (640, 100))).shape == (3, 224, 224)


def test_editing_one_pair_reencodes_only_that_pair(rn_backbone, photos):
    store = FeatureStore(rn_backbone)
    pairs = list(PRESETS["pyiqa"])
    CLIPIQA(store, pairs).score(photos)
    assert store.images_encoded == len(photos)
    texts_before, image_calls_before = store.texts_encoded, store.image_encoder_calls
    text_calls_before = store.text_encoder_calls
    pairs[1] = PromptPair("a crisp photo", "a smeared photo")
    CLIPIQA(store, pairs).score(photos)
    assert store.image_encoder_calls == image_calls_before
    assert store.texts_encoded - texts_before == 2
    assert store.text_encoder_calls - text_calls_before == 1  # both texts in one batch


def test_same_image_content_hits_the_cache(rn_backbone, photos):
    store = FeatureStore(rn_backbone)
    store.image_features(photos)
    copies = [Photo("copy-" + p.name, p.image.copy()) for p in photos]
    store.image_features(copies)
    assert store.images_encoded == len(photos)


def test_invalid_pairs_are_refused_with_reason(rn_backbone):
    store = FeatureStore(rn_backbone)
    with pytest.raises(PromptError, match="empty"):
        CLIPIQA(store, [PromptPair("", "bad photo")])
    with pytest.raises(PromptError, match="same"):
        CLIPIQA(store, [PromptPair("A photo", "a  photo")])
    with pytest.raises(PromptError, match="77"):
        CLIPIQA(store, [PromptPair("good " * 80, "bad photo")])
    with pytest.raises(PromptError, match="no prompt pair"):
        CLIPIQA(store, [PromptPair("good", "bad", enabled=False)])
    with pytest.raises(ValueError, match="temperature"):
        CLIPIQA(store, PRESETS["seed"], temperature=0)


def test_features_computed_in_another_process_can_be_merged(rn_backbone, photos):
    """ZeroGPU runs GPU work in a forked worker: its new cache entries come back and are merged."""

    store = _STORES["rn"] = FeatureStore(rn_backbone)  # the worker inherits it by fork; the job names it
    store.image_features(photos[:1])  # the parent's thread pool exists before the fork, as in the app
    added = run_forked(_score_and_report, "rn", store.keys(), photos)
    assert len(added[0]) == len(photos) - 1 and len(added[1]) == 2 * len(PRESETS["seed"])
    assert store.images_encoded == 1  # the worker's encoding did not reach this process...
    store.merge(added)
    CLIPIQA(store, PRESETS["seed"]).score(photos)
    assert store.images_encoded == 1 and store.text_encoder_calls == 0  # ...but its features did


_STORES: dict[str, FeatureStore] = {}


def _score_and_report(name, mark, photos):
    store = _STORES[name]
    CLIPIQA(store, PRESETS["seed"]).score(photos)
    return store.added_since(mark)
