"""GRMP checkpoints: our safetensors + JSON format, and the import of official GRMP-IQA files."""

from __future__ import annotations

import json
import os

import pytest
import torch
from official_reference import tiny_official_state
from safetensors.torch import load_file

from iqa.clip.backbones import CheckpointMismatch
from iqa.methods.grmp.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from iqa.methods.grmp.model import GRMPConfig, GRMPModel
from iqa.methods.grmp.official import OfficialCheckpointError, download_official, import_official


def perturb(params, seed: int = 0) -> None:
    """Stand-in for training: move every given parameter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in params:
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def trained_paper(backbone) -> GRMPModel:
    config = GRMPConfig(
        variant="paper",
        backbone="test-tiny-vit",
        pretrained=backbone.pretrained,
        vpt_tokens=4,
        train_last_blocks=1,
        training={"dataset": "toy", "srcc": 0.25},
    )
    model = GRMPModel(config, backbone)
    perturb(model.trainable_parameters() + model.prompt_parameters())
    return model


# Our format -------------------------------------------------------------------------------------


def test_paper_round_trip_keeps_scores(vit_backbone, pixels, tmp_path):
    model = trained_paper(vit_backbone)
    tensors_path, json_path = save_checkpoint(model, tmp_path / "koniq")
    assert (tensors_path.name, json_path.name) == ("koniq.safetensors", "koniq.json")
    meta = json.loads(json_path.read_text())
    assert meta["config"]["backbone"] == "test-tiny-vit" and meta["config"]["training"]["srcc"] == 0.25
    assert meta["prompts"] == ["[4 learned tokens] high quality", "[4 learned tokens] low quality"]
    saved = set(load_file(str(tensors_path)))
    assert "clip.visual.transformer.resblocks.1.attn.in_proj_weight" in saved  # fine-tuned block
    assert "clip.visual.conv1.weight" not in saved  # frozen: comes from the backbone
    assert {"prompt_learner.ctx", "vpt.deep_prompt_embeddings"} <= saved

    loaded = load_checkpoint(json_path)  # loads test-tiny-vit by the name in the JSON
    assert loaded.config == model.config and not loaded.training
    assert torch.allclose(loaded(pixels).score, model(pixels).score, atol=1e-6)
    fresh = GRMPModel(model.config, vit_backbone)
    assert not torch.allclose(fresh(pixels).score, model(pixels).score, atol=1e-4)  # the check can fail


def test_seed_round_trip_into_a_folder(rn_backbone, pixels, tmp_path):
    model = GRMPModel(
        GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=rn_backbone.pretrained), rn_backbone
    )
    perturb(model.trainable_parameters())
    tensors_path, _ = save_checkpoint(model, tmp_path)
    assert tensors_path == tmp_path / "grmp-seed.safetensors"
    assert set(load_file(str(tensors_path))) == set(model.state_dict())
    loaded = load_checkpoint(tensors_path, backbone=rn_backbone)
    assert torch.allclose(loaded(pixels).score, model(pixels).score, atol=1e-6)


def test_loading_onto_another_backbone_is_refused(vit_backbone, rn_backbone, tmp_path):
    save_checkpoint(trained_paper(vit_backbone), tmp_path / "vit")
    with pytest.raises(CheckpointMismatch, match="trained on backbone 'test-tiny-vit'.*load 'test-tiny-vit'"):
        load_checkpoint(tmp_path / "vit", backbone=rn_backbone)


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "notes.json").write_text("this is not json")
    with pytest.raises(CheckpointError, match="notes.json is not a GRMP checkpoint config: not valid JSON"):
        load_checkpoint(tmp_path / "notes.json")
    (tmp_path / "other.json").write_text(json.dumps({"config": {}}))
    with pytest.raises(CheckpointError, match="no 'iqa-grmp' format marker"):
        load_checkpoint(tmp_path / "other")
    (tmp_path / "empty.json").write_text(json.dumps({"format": "iqa-grmp", "config": {}}))
    with pytest.raises(CheckpointError, match="empty.json holds an invalid GRMP config"):
        load_checkpoint(tmp_path / "empty")
    config = GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained="random-test-weights")
    (tmp_path / "broken.json").write_text(json.dumps({"format": "iqa-grmp", "config": config.to_dict()}))
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="broken.safetensors is not a readable safetensors file"):
        load_checkpoint(tmp_path / "broken.safetensors")


# Official GRMP-IQA checkpoints ------------------------------------------------------------------


def direct_model(backbone, state: dict[str, torch.Tensor]) -> GRMPModel:
    """The same weights put in by hand: a paper model whose VPT and context are the official ones."""
    config = GRMPConfig(
        variant="paper",
        backbone=backbone.name,
        pretrained=None,
        vpt_tokens=4,
        train_last_blocks=2,
        preprocess="official",
    )
    model = GRMPModel(config, backbone)
    with torch.no_grad():
        model.clip.load_state_dict({k: v.float() for k, v in backbone.model.state_dict().items()})
        for name in (
            "prompt_embeddings",
            "deep_prompt_embeddings",
            "prompt_proj.weight",
            "prompt_proj.bias",
            "prompt_norm.weight",
            "prompt_norm.bias",
        ):
            model.vpt.get_parameter(name).copy_(state[f"image_encoder.{name}"].float())
        model.prompt_learner.ctx.copy_(state["prompt_learner2.ctx"].float())
        for param in model.clip.parameters():  # the official weights went through fp16
            param.copy_(param.half().float())
    return model


def test_official_layout_imports_to_the_same_scores(vit_backbone, pixels, tmp_path):
    state = tiny_official_state(vit_backbone)
    # the official ViT-B/16 file has 8 + 12*12 visual, 6 VPT, 5 + 12*12 text, 3 prompt tensors and
    # logit_scale = 311; the same layout at two blocks per tower:
    assert len(state) == (8 + 12 * 2) + 6 + (5 + 12 * 2) + 3 + 1
    path = tmp_path / "clive_50_prompt_lda_5.0.pt"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # as saved from DataParallel

    imported = import_official(path, backbone=vit_backbone)
    expected = direct_model(vit_backbone, state)
    assert imported.config.preprocess == "official" and imported.config.pretrained is None
    assert all(p.dtype == torch.float32 for p in imported.parameters())
    assert torch.allclose(imported(pixels).score, expected(pixels).score, atol=1e-5)
    assert torch.allclose(imported(pixels).s_pos, expected(pixels).s_pos, atol=1e-5)

    # it carries its whole backbone, so a saved copy needs no pretrained weights to come back
    save_checkpoint(imported, tmp_path / "imported")
    assert "clip.visual.conv1.weight" in load_file(str(tmp_path / "imported.safetensors"))
    again = load_checkpoint(tmp_path / "imported")
    assert torch.allclose(again(pixels).score, imported(pixels).score, atol=1e-6)


def test_official_import_refuses_another_backbone(vit_backbone, rn_backbone, tmp_path):
    torch.save(tiny_official_state(vit_backbone), tmp_path / "official.pt")
    with pytest.raises(CheckpointMismatch, match="does not fit backbone 'test-tiny-rn'"):
        import_official(tmp_path / "official.pt", backbone=rn_backbone)


def test_official_import_checks_the_prompt_texts(vit_backbone, tmp_path):
    state = tiny_official_state(vit_backbone, class_texts=("good photo", "bad photo"))
    torch.save(state, tmp_path / "other_texts.pt")
    with pytest.raises(OfficialCheckpointError, match="fixed prompt tokens .* differ"):
        import_official(tmp_path / "other_texts.pt", backbone=vit_backbone)


def test_official_import_refuses_foreign_files(vit_backbone, tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(OfficialCheckpointError, match="1 unknown tensors"):
        import_official(tmp_path / "plain.pt", backbone=vit_backbone)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(OfficialCheckpointError, match="text.pt is not a readable PyTorch checkpoint"):
        import_official(tmp_path / "text.pt", backbone=vit_backbone)


class _TouchFile:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch '{self.target}'",)


def test_pickles_that_run_code_are_refused_unrun(vit_backbone, tmp_path):
    marker = tmp_path / "pwned"
    state = tiny_official_state(vit_backbone)
    state["prompt_learner2.ctx"] = _TouchFile(str(marker))
    torch.save(state, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(OfficialCheckpointError, match="refused to load evil.pt.*run code"):
        import_official(tmp_path / "evil.pt", backbone=vit_backbone)
    assert not marker.exists()


def test_download_failure_explains_the_offline_route(monkeypatch, tmp_path):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(OfficialCheckpointError, match="could not download clive_50_prompt_lda_5.0.pt.*import_official"):
        download_official(cache_dir=str(tmp_path))


def test_the_released_vit_b16_layout_maps_one_to_one_onto_open_clip():
    """Key names only (a meta-device model holds no weights): 311 official tensors, nothing left over."""
    import open_clip

    from iqa.methods.grmp.official import map_official_state

    with torch.device("meta"):
        clip = open_clip.model.CLIP(**open_clip.get_model_config("ViT-B-16-quickgelu"))
    names = list(clip.state_dict())
    official = {
        (
            "logit_scale"
            if k == "logit_scale"
            else f"image_encoder.{k[len('visual.') :]}"
            if k.startswith("visual.")
            else f"text_encoder.{k}"
        ): None
        for k in names
    }
    official.update(
        dict.fromkeys(
            [
                "image_encoder.prompt_embeddings",
                "image_encoder.deep_prompt_embeddings",
                "image_encoder.prompt_proj.weight",
                "image_encoder.prompt_proj.bias",
                "image_encoder.prompt_norm.weight",
                "image_encoder.prompt_norm.bias",
                "prompt_learner2.ctx",
                "prompt_learner2.token_prefix",
                "prompt_learner2.token_suffix",
            ]
        )
    )
    assert len(official) == 311
    mapped, prompt_tokens = map_official_state(official)
    assert {k for k in mapped if k.startswith("clip.")} == {f"clip.{k}" for k in names}
    assert set(mapped) - {f"clip.{k}" for k in names} == {
        "prompt_learner.ctx",
        "vpt.prompt_embeddings",
        "vpt.deep_prompt_embeddings",
        "vpt.prompt_proj.weight",
        "vpt.prompt_proj.bias",
        "vpt.prompt_norm.weight",
        "vpt.prompt_norm.bias",
    }
    assert set(prompt_tokens) == {"token_prefix", "token_suffix"}
