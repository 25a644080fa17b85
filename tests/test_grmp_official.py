"""The official GRMP-IQA release, imported: the official code's scores, its preprocessing, every way in.

A full-size (ViT-B/16) file in the release's layout is made from seeded random weights
(`official_reference.py`), and the probabilities the official code computed for it are the
reference. Each test loads a whole ViT-B/16, so together they take some seconds and a few GB.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from official_reference import EXAMPLES, OFFICIAL_P, PHOTOS, official_state
from PIL import Image

from iqa.cli.main import main
from iqa.methods.grmp.checkpoint import checkpoint_paths, load_checkpoint, read_config, save_checkpoint
from iqa.methods.grmp.model import OfficialPreprocessor
from iqa.methods.grmp.official import converted_official, import_official
from iqa.methods.grmp.scorer import GRMPScorer
from iqa.photos.photo import open_photo, open_photos

pytestmark = pytest.mark.slow
TOLERANCE = 1e-4  # asked for: max |p - official|


@pytest.fixture(scope="module")
def official_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("release") / "clive_50_prompt_lda_5.0.pt"
    torch.save({f"module.{k}": v for k, v in official_state().items()}, path)  # saved from DataParallel
    return path


@pytest.fixture(scope="module")
def bundled():
    photos, errors = open_photos([EXAMPLES / name for name in PHOTOS])
    assert not errors
    return photos


def worst(scores, expected=OFFICIAL_P) -> float:
    return max(abs(a - b) for a, b in zip(scores, expected, strict=True))


def test_the_release_imports_without_base_weights_to_the_official_scores(official_file, bundled, tmp_path):
    model = import_official(official_file)
    assert (model.config.backbone, model.config.pretrained, model.config.preprocess) == (
        "ViT-B-16-quickgelu",
        None,
        "official",
    )
    imported = [r.score for r in GRMPScorer(model).score(bundled)]
    assert worst(imported) <= TOLERANCE
    assert max(OFFICIAL_P) - min(OFFICIAL_P) > 0.2  # the reference spreads out: a wrong model cannot match it

    save_checkpoint(model, tmp_path / "converted")
    reloaded = [r.score for r in GRMPScorer(load_checkpoint(tmp_path / "converted")).score(bundled)]
    assert worst(reloaded) <= TOLERANCE
    assert worst(reloaded, imported) <= 1e-6


def test_import_official_then_score_on_the_command_line(official_file, tmp_path, caplog):
    out = tmp_path / "official"
    assert main(["import-official", str(official_file), "--out", str(out)]) == 0
    assert read_config(out).training["file"].startswith("clive_50_prompt_lda_5.0.pt (sha256 ")
    results = tmp_path / "scores.json"
    photos = [str(EXAMPLES / name) for name in PHOTOS]
    assert main(["score", *photos, "--method", "grmp", "--checkpoint", str(out), "--json", str(results)]) == 0
    by_name = {r["name"]: r["score"] for r in json.loads(results.read_text())["results"]}
    assert worst([by_name[path] for path in photos]) <= TOLERANCE
    # open_clip says this through the root logger when it builds an architecture without weights
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]


def test_conversion_happens_once_and_is_reused(official_file, tmp_path, monkeypatch):
    stem = converted_official(official_file, cache_dir=tmp_path)
    assert stem.parent == tmp_path / "official" and stem.name.startswith("clive_50_prompt_lda_5.0-")
    tensors = checkpoint_paths(stem)[0]
    written = tensors.stat().st_mtime_ns

    def no_second_import(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr("iqa.methods.grmp.official.import_official", no_second_import)
    assert converted_official(official_file, cache_dir=tmp_path) == stem
    assert tensors.stat().st_mtime_ns == written


@pytest.mark.parametrize("name", ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"])
def test_official_preprocessing_is_the_official_transform_pixel_for_pixel(name):
    """512x512, 451x300, 600x400 and 427x640 photos against the official data script and test loop."""
    path = EXAMPLES / name
    ours = OfficialPreprocessor()(open_photo(path).image)

    # The official pipeline, restated: OpenCV decode, BGR->RGB, bicubic squash to 244x244,
    # crop [10:234], /255, then ImageNet mean and std channel by channel in float32.
    rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    squashed = cv2.resize(rgb, (244, 244), interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1)
    theirs = torch.from_numpy(np.ascontiguousarray(squashed[:, 10:234, 10:234])).float() / 255
    for channel, (mean, std) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), strict=True)):
        theirs[channel] = (theirs[channel] - mean) / std
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)

    # Pillow's bicubic (antialiased) is not the same input: the check above can tell them apart.
    pillow = np.asarray(Image.open(path).convert("RGB").resize((244, 244), Image.BICUBIC), dtype=np.float32)
    assert np.abs(pillow - squashed.transpose(1, 2, 0)).max() > 10


def test_an_unreadable_conversion_is_converted_again(official_file, tmp_path):
    stem = converted_official(official_file, cache_dir=tmp_path)
    tensors = checkpoint_paths(stem)[0]
    tensors.write_bytes(b"truncated")
    assert converted_official(official_file, cache_dir=tmp_path) == stem
    assert tensors.stat().st_size > 100_000_000  # a whole ViT-B/16 again
