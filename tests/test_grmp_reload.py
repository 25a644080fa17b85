"""A saved GRMP-IQA model scores exactly as before saving, by every way in.

The test backbones rebuild the very same random weights each time, which once hid a reload bug
(fixed prompt-token embeddings kept from the backbone a model was built on, not the loaded one).
So every model here has weights that a fresh build does not give: its token embedding and other
backbone tensors are perturbed, or it sits on a backbone loaded from a perturbed weights file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from official_reference import tiny_official_state
from safetensors.torch import load_file, save_file

from iqa.app.config import AppConfig
from iqa.app.demo import Handlers
from iqa.app.models import Models
from iqa.app.session import Session
from iqa.cli.main import main
from iqa.clip.backbones import load_backbone
from iqa.methods.grmp.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from iqa.methods.grmp.model import GRMPConfig, GRMPModel
from iqa.methods.grmp.official import import_official
from iqa.methods.grmp.scorer import GRMPScorer

EXACT = 1e-6


def perturb(tensors, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in tensors:
            tensor.add_(0.1 * tensor.detach().abs().mean() * torch.randn(tensor.shape, generator=generator))


def perturbed_backbone(name: str, tmp_path, seed: int):
    """A test backbone loaded from a weights file whose every tensor differs from a fresh build's."""
    state = {k: v.clone() for k, v in load_backbone(name).model.state_dict().items()}
    perturb([v for v in state.values() if v.is_floating_point()], seed=seed)
    weights = tmp_path / f"{name}-perturbed.safetensors"
    save_file(state, str(weights))
    return load_backbone(name, checkpoint=weights)


def paper_on_tag(backbone) -> GRMPModel:
    """A paper model whose whole CLIP (token embedding included) differs from its backbone's."""
    config = GRMPConfig(
        variant="paper", backbone="test-tiny-vit", pretrained=backbone.pretrained, vpt_tokens=4, train_last_blocks=1
    )
    model = GRMPModel(config, backbone)
    perturb([*model.clip.parameters(), *model.prompt_parameters()], seed=1)
    return model


def paper_carrying_its_backbone(tmp_path) -> GRMPModel:
    """An official-layout file made from other CLIP weights than a fresh build, imported (no pretrained tag)."""
    torch.save(tiny_official_state(perturbed_backbone("test-tiny-vit", tmp_path, seed=2)), tmp_path / "official.pt")
    model = import_official(tmp_path / "official.pt")
    perturb(model.trainable_parameters(), seed=2)
    return model


def seed_on_perturbed_weights(tmp_path) -> GRMPModel:
    """A seed model on a backbone loaded from a weights file that a fresh build does not give."""
    backbone = perturbed_backbone("test-tiny-rn", tmp_path, seed=3)
    model = GRMPModel(GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=backbone.pretrained), backbone)
    perturb(model.trainable_parameters(), seed=4)
    return model


def scores(model: GRMPModel, photos) -> list[float]:
    return [r.score for r in GRMPScorer(model).score(photos)]


def worst(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("build", ["paper_on_tag", "paper_carrying_its_backbone", "seed_on_perturbed_weights"])
def test_python_api_and_command_line_reload_exactly(build, vit_backbone, photos, tmp_path, caplog):
    model = {
        "paper_on_tag": lambda: paper_on_tag(vit_backbone),
        "paper_carrying_its_backbone": lambda: paper_carrying_its_backbone(tmp_path),
        "seed_on_perturbed_weights": lambda: seed_on_perturbed_weights(tmp_path),
    }[build]()
    before = scores(model, photos)
    learner = model.prompt_learner
    looked_up = learner.tower.embed(learner.tokenized_prompts).float()
    assert torch.equal(learner.token_prefix, looked_up[:, :1])  # derived from the weights it has now
    fresh = GRMPModel(model.config, load_backbone(model.config.backbone))
    assert worst(scores(fresh, photos), before) > 1e-3  # the weights really differ from a fresh build

    stem = tmp_path / "model"
    save_checkpoint(model, stem)
    assert worst(scores(load_checkpoint(stem), photos), before) <= EXACT

    files = []
    for photo in photos:
        files.append(tmp_path / f"{photo.name}.png")
        photo.image.save(files[-1])
    out = tmp_path / "scores.json"
    assert main(["score", *map(str, files), "--method", "grmp", "--checkpoint", str(stem), "--json", str(out)]) == 0
    by_name = {r["name"]: r["score"] for r in json.loads(out.read_text())["results"]}
    assert worst([by_name[str(f)] for f in files], before) <= EXACT
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]


def test_app_upload_reloads_exactly(photos, tmp_path):
    config = AppConfig(backbone="test-tiny-rn", work_dir=tmp_path / "work", allow_backbones=["test-tiny-vit"])
    handlers = Handlers(Models(config))
    server = handlers.models.store("test-tiny-rn").backbone
    files = []
    for photo in photos:
        files.append(str(tmp_path / f"{photo.name}.png"))
        photo.image.save(files[-1])
    session = handlers.photos.add_photos(files, Session()).session

    seed = GRMPModel(GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=server.pretrained), server)
    perturb(seed.trainable_parameters(), seed=5)
    paper = paper_carrying_its_backbone(tmp_path)
    for name, model in (("seed", seed), ("paper", paper)):
        tensors, json_path = save_checkpoint(model, tmp_path / name)
        choices = handlers.checkpoints.upload_checkpoint([str(json_path), str(tensors)], session).checkpoint
        handlers.scoring.score(
            session,
            handlers.table.load_preset("seed"),
            "test-tiny-rn",
            "checkpoint's logit scale",
            choices["value"],
            0.5,
            "GRMP-IQA",
        )
        got = {row.name: row.result("GRMP-IQA").score for row in session.rows}
        expected = {r.name: r.score for r in GRMPScorer(model).score(session.photos)}
        assert worst([got[n] for n in expected], list(expected.values())) <= EXACT, name


def test_a_seed_checkpoint_on_random_weights_is_refused(rn_backbone, tmp_path):
    random_init = GRMPModel(GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=None), rn_backbone)
    save_checkpoint(random_init, tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="names no pretrained weights .* cannot be rebuilt"):
        load_checkpoint(tmp_path / "nowhere")


def test_a_weights_file_that_is_gone_or_changed_is_refused(tmp_path):
    model = seed_on_perturbed_weights(tmp_path)
    weights = Path(model.config.pretrained)
    save_checkpoint(model, tmp_path / "on-file")
    assert json.loads((tmp_path / "on-file.json").read_text())["backbone_file"]["path"] == str(weights)
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(CheckpointError, match="has changed since the checkpoint was saved"):
        load_checkpoint(tmp_path / "on-file")
    weights.unlink()
    with pytest.raises(CheckpointError, match="weights file .* named by the checkpoint is missing"):
        load_checkpoint(tmp_path / "on-file")  # never the built-in random test weights instead


def test_a_checkpoint_missing_its_backbone_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    """No pretrained tag and only the prompts: refused from the file header, without building a ViT."""
    model = paper_carrying_its_backbone(tmp_path)
    tensors_path, _ = save_checkpoint(model, tmp_path / "whole")
    state = load_file(str(tensors_path))
    save_file({k: v for k, v in state.items() if not k.startswith("clip.")}, str(tensors_path))

    def no_building(*args, **kwargs):
        raise AssertionError("a backbone was built for a checkpoint that cannot be used")

    monkeypatch.setattr("iqa.methods.grmp.checkpoint.load_backbone", no_building)
    with pytest.raises(CheckpointError, match="must carry its whole test-tiny-vit backbone, but 62 of its tensors"):
        load_checkpoint(tmp_path / "whole")


def test_lossless_tensors_are_stored_in_half_precision(tmp_path):
    model = paper_carrying_its_backbone(tmp_path)  # official weights: fp16-born
    tensors_path, _ = save_checkpoint(model, tmp_path / "compact")
    state = load_file(str(tensors_path))
    assert state["clip.visual.conv1.weight"].dtype == torch.float16
    assert state["prompt_learner.ctx"].dtype == torch.float32  # trained further: not representable in fp16
