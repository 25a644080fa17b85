"""Non-native preprocessing comes from the loaded model's open_clip configuration.

Pretrained tags carry their own mean, std, interpolation and resize mode (SigLIP: 0.5/0.5 and a
squash; OpenAI and LAION: CLIP statistics and a centre crop). Loading a tag downloads weights
(and SigLIP's tokenizer), which cannot happen here, so open_clip's `create_model` is made to apply
the tag's preprocess configuration to random weights, exactly as it does on a real download;
everything after that is the real loading path. The reference is open_clip's own `preprocess`
for the same configuration.
"""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from skimage import data

import iqa.clip.backbones
from iqa.clip.backbones import load_backbone
from iqa.clip.preprocess import preprocessor_for

pytestmark = pytest.mark.slow
# OpenAI and LAION tags carry the defaults; SigLIP (0.5/0.5, squash) and MobileCLIP (0/1, bilinear, 256 px)
# tell whether a tag's own settings arrive.
MODELS = [
    ("ViT-B-16-quickgelu", "openai"),
    ("ViT-B-32", "laion2b_s34b_b79k"),
    ("ViT-B-16-SigLIP", "webli"),
    ("MobileCLIP-S1", "datacompdr"),
]
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


def tag_preprocess(name: str, tag: str) -> dict:
    pretrained = open_clip.get_pretrained_cfg(name, tag)
    return {k: pretrained[k] for k in PREPROCESS_KEYS if k in pretrained}


@pytest.fixture
def offline_tags(monkeypatch):
    """Tags load as open_clip loads them, minus the download: random weights, the tag's preprocessing."""
    real = open_clip.create_model

    def create_model(name, pretrained=None, **kwargs):
        if pretrained:
            kwargs["force_preprocess_cfg"] = tag_preprocess(name, pretrained)
        return real(name, pretrained=None, **kwargs)

    monkeypatch.setattr(iqa.clip.backbones.open_clip, "create_model", create_model)
    monkeypatch.setattr(iqa.clip.backbones, "_check_weights_reachable", lambda name, tag: None)
    # SigLIP's tokenizer comes from the Hub too; text plays no part in preprocessing
    monkeypatch.setattr(iqa.clip.backbones.open_clip, "get_tokenizer", lambda name: open_clip.SimpleTokenizer())


def photos() -> list[Image.Image]:
    """Real photos at several aspect ratios: 3:2, 2:3, square, 16:9 and a tall 1:3 strip."""
    base = Image.fromarray(data.astronaut())
    sizes = [(600, 400), (400, 600), (333, 333), (1280, 720), (150, 450)]
    return [base.resize(size, Image.BICUBIC) for size in sizes]


@pytest.mark.parametrize(("name", "tag"), MODELS)
def test_tensors_equal_open_clips_own_preprocess(name, tag, offline_tags):
    backbone = load_backbone(name, pretrained=tag, device="cpu")
    ours = preprocessor_for(backbone)
    cfg = tag_preprocess(name, tag)
    _, _, reference = open_clip.create_model_and_transforms(
        name,
        pretrained=None,
        image_mean=cfg["mean"],
        image_std=cfg["std"],
        image_interpolation=cfg["interpolation"],
        image_resize_mode=cfg["resize_mode"],
    )
    for image in photos():
        expected = reference(image)
        got = ours(image)
        assert got.shape == expected.shape == (3, backbone.image_size, backbone.image_size)
        assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    if name == "MobileCLIP-S1":  # the tag's settings really arrived, not CLIP's defaults
        assert (ours.mean, ours.std, ours.interpolation, ours.image_size) == ((0, 0, 0), (1, 1, 1), "bilinear", 256)
    if name.endswith("SigLIP"):
        assert ours.mean == (0.5, 0.5, 0.5) and ours.resize_mode == "squash"
        white = ours(Image.new("RGB", (300, 100), "white"))
        assert np.allclose(white.numpy(), 1.0, atol=1e-5)  # (1 - 0.5) / 0.5, the whole photo squashed in
