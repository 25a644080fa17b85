import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from iqa.clip.backbones import BackboneUnavailable, BadCheckpoint, CheckpointMismatch, load_backbone
from iqa.clip.devices import parse_dtype, pick_device
from iqa.clip.test_backbones import TEST_BACKBONES, build_test_model


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_test_backbones_are_deterministic_real_clip_models(name):
    a, b = build_test_model(name), build_test_model(name)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key
    backbone = load_backbone(name)
    assert backbone.is_test and backbone.logit_scale == pytest.approx(100.0, rel=1e-5)
    tokens = backbone.tokenize(["a sharp photo"])
    assert tokens.shape == (1, 77)
    assert backbone.encode_text(tokens).shape == (1, backbone.embed_dim)


def test_batch_norm_statistics_are_random_not_default():
    model = build_test_model("test-tiny-rn")
    assert not torch.allclose(model.visual.bn1.running_var, torch.ones_like(model.visual.bn1.running_var))
    assert model.visual.layer1[0].bn3.weight.abs().min() > 0  # open_clip zero-initialises these


def test_offline_failure_is_immediate_and_names_both_ways_out(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(BackboneUnavailable) as err:
        load_backbone("RN50-quickgelu", "openai")
    message = str(err.value)
    assert "RN50-quickgelu" in message and "HF_HUB_OFFLINE" in message
    assert "--weights" in message and "test-tiny-rn" in message


def test_unknown_model_and_tag_are_named():
    with pytest.raises(BackboneUnavailable, match="unknown backbone 'RN51'"):
        load_backbone("RN51")
    with pytest.raises(BackboneUnavailable, match="no pretrained weights tagged 'nope'.*openai"):
        load_backbone("RN50-quickgelu", "nope")


def test_local_checkpoint_file_and_folder(tmp_path):
    state = build_test_model("test-tiny-vit").state_dict()
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(tmp_path / "open_clip_model.safetensors"))
    torch.save(state, tmp_path / "weights.pt")
    from_folder = load_backbone("test-tiny-vit", checkpoint=tmp_path)
    from_file = load_backbone("test-tiny-vit", checkpoint=tmp_path / "weights.pt")
    for backbone in (from_folder, from_file):
        assert torch.equal(backbone.model.visual.proj, state["visual.proj"])


def test_checkpoint_from_another_backbone_is_refused(tmp_path):
    path = tmp_path / "rn.safetensors"
    save_file(build_test_model("test-tiny-rn").state_dict(), str(path))
    with pytest.raises(CheckpointMismatch, match="does not fit backbone 'test-tiny-vit'.*another backbone"):
        load_backbone("test-tiny-vit", checkpoint=path)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = marker
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({"visual.proj": exploit}, f)
    with pytest.raises(BadCheckpoint, match="refused to load .*evil.pt: .*would run code") as err:
        load_backbone("test-tiny-rn", checkpoint=path)
    assert not marker.exists()
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)


def test_missing_checkpoint_and_non_checkpoint(tmp_path):
    with pytest.raises(BackboneUnavailable, match="does not exist"):
        load_backbone("test-tiny-rn", checkpoint=tmp_path / "nope.pt")
    junk = tmp_path / "notes.pt"
    junk.write_text("hello")
    with pytest.raises(BadCheckpoint, match=r"notes.pt is not a readable checkpoint: not a PyTorch"):
        load_backbone("test-tiny-rn", checkpoint=junk)


def test_device_and_dtype_choice():
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert pick_device(None).type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA"):
            pick_device("cuda")
    assert parse_dtype(None, torch.device("cpu")) == torch.float32
    assert parse_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        parse_dtype("fp16", torch.device("cpu"))


@pytest.mark.parametrize("name", sorted(TEST_BACKBONES))
def test_text_encoding_without_padding_equals_open_clip(name):
    """Cutting the positions after the end token changes nothing under the causal mask."""
    backbone = load_backbone(name)
    tokens = backbone.tokenize(["a sharp photo", "Noise-free image of a very long and detailed scene, at night"])
    assert backbone.text_tower.needed_length(tokens) < 77
    full = backbone.model.encode_text(tokens)
    assert torch.allclose(backbone.encode_text(tokens), full, atol=1e-5)


def test_the_log_says_where_local_weights_came_from(rn_backbone, photos, tmp_path, caplog):
    from safetensors.torch import save_file

    from iqa.cli.main import main

    weights = tmp_path / "tiny-rn.safetensors"
    save_file({k: v.contiguous() for k, v in rn_backbone.model.state_dict().items()}, str(weights))
    photo = tmp_path / "one.png"
    photos[0].image.save(photo)
    caplog.set_level("INFO")
    assert main(["-v", "score", str(photo), "--backbone", "test-tiny-rn", "--weights", str(weights)]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"weights from {weights}" in m for m in messages)
    assert not any("initialized randomly" in m for m in messages)


def test_the_text_tower_follows_its_model_to_another_device_or_dtype():
    """`Module.to()` replaces buffers: the attention mask read for encoding is the model's current one."""
    backbone = load_backbone("test-tiny-vit")
    tokens = backbone.tokenize(["a sharp photo", "a blurry photo of a cat"])
    expected = backbone.encode_text(tokens)
    backbone.model.to(torch.float64)
    tower = backbone.text_tower
    assert tower is not None and tower.attn_mask is backbone.model.attn_mask
    assert tower.attn_mask.dtype == torch.float64 and tower.positional_embedding.dtype == torch.float64
    torch.testing.assert_close(backbone.encode_text(tokens).float(), expected, atol=1e-5, rtol=1e-5)
