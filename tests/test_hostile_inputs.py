"""The hostile corpus (tests/hostile.py) thrown at every way in: the Python API and the command line."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

from iqa.cli.main import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, main
from iqa.clip.backbones import BadCheckpoint, load_backbone
from iqa.clip.features import FeatureStore
from iqa.clip.preprocess import MAX_ASPECT_RATIO, MAX_INPUT_PIXELS, Preprocessor
from iqa.methods.clipiqa.scorer import CLIPIQA, ScoringError
from iqa.methods.prompts import MAX_WEIGHT, PRESETS, PromptError, PromptPair, load_pairs
from iqa.photos.photo import Photo, PhotoError, find_photo_paths, open_photos
from tests.hostile import (
    GOOD_PHOTOS,
    good_image,
    write_empty_file,
    write_malicious_pickle,
    write_path_corpus,
    write_photo_corpus,
    write_prompt_files,
)


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    return folder, write_photo_corpus(folder)


def test_open_photos_names_every_hostile_file_and_keeps_the_good_ones(corpus):
    folder, cases = corpus
    photos, errors = open_photos(sorted(folder.iterdir()))
    assert sorted(p.path.name for p in photos) == sorted(GOOD_PHOTOS)
    by_name = {e.name: e.reason for e in errors}
    assert len(errors) == len(cases)
    for case in cases:
        assert re.search(case.message, by_name[str(folder / case.name)]), (case.name, by_name[str(folder / case.name)])


def test_find_photo_paths_reports_each_unusable_path(tmp_path):
    cases = write_path_corpus(tmp_path)
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    found, errors = find_photo_paths([str(good), *(str(tmp_path / c.name) for c in cases)])
    assert found == [good]
    assert len(errors) == len(cases)
    for case, error in zip(cases, errors):
        assert re.search(case.message, str(error)), str(error)


@pytest.mark.parametrize("size", [(40000, 1), (1, 40000), (MAX_ASPECT_RATIO * 64 + 1, 64)])
def test_every_preprocessing_path_refuses_absurd_aspect_ratios(size):
    for preprocessor in (Preprocessor(native_resolution=True), Preprocessor(native_resolution=False)):
        with pytest.raises(ValueError, match=rf"{size[0]}x{size[1]} pixels: aspect ratio .* beyond the 20:1"):
            preprocessor(Image.new("RGB", size))


def test_preprocessing_is_bounded_by_pixels_after_resizing():
    thin = Preprocessor(native_resolution=True).target_size((MAX_ASPECT_RATIO * 10, 10))
    assert thin == (MAX_ASPECT_RATIO * 64, 64)  # the minimum side still applies, within the ratio
    generous = Preprocessor(native_resolution=True, max_side=100_000)
    width, height = generous.target_size((12000, 9000))
    assert width * height <= MAX_INPUT_PIXELS and abs(width / height - 12000 / 9000) < 0.01
    # max_side 0 / None: never downsized (the reference library's way); opening bounds the pixels
    assert Preprocessor(native_resolution=True, max_side=None).target_size((12000, 9000)) == (12000, 9000)
    assert "at most 4.2 MP" in generous.notes((12000, 9000))[0]
    assert Preprocessor(native_resolution=True).target_size((640, 480)) == (640, 480)


def test_feature_store_refuses_a_strip_photo_by_name(rn_backbone):
    store = FeatureStore(rn_backbone)
    strip = Photo("strip.png", Image.new("RGB", (4000, 10)))
    with pytest.raises(PhotoError, match=r"strip.png: 4000x10 pixels: aspect ratio 400:1"):
        store.image_features([strip])
    assert store.image_encoder_calls == 0


@pytest.mark.parametrize("index", range(9))
def test_load_pairs_refuses_hostile_prompt_files(tmp_path, index):
    cases = write_prompt_files(tmp_path)
    case = cases[index]
    with pytest.raises(PromptError, match=case.message):
        load_pairs(tmp_path / case.name)


def test_weights_are_finite_and_bounded_in_the_api():
    for weight, reason in (
        (math.nan, "not a finite number"),
        (math.inf, "not a finite number"),
        (1e308, "beyond the limit of 1e\\+06"),
        (-0.5, "below 0"),
        (True, "not a finite number"),
    ):
        with pytest.raises(PromptError, match=reason):
            PromptPair("a sharp photo", "a blurry photo", weight).validate()
    PromptPair("a sharp photo", "a blurry photo", MAX_WEIGHT).validate()
    with pytest.raises(PromptError, match="control character"):
        PromptPair("a sharp\x07 photo", "a blurry photo").validate()


def test_a_nan_score_never_leaves_the_clipiqa_scorer(rn_backbone, photos):
    scorer = CLIPIQA(FeatureStore(rn_backbone), PRESETS["seed"])
    features = torch.full((2, rn_backbone.embed_dim), math.nan)
    with pytest.raises(ScoringError, match="no finite score for a.jpg, b.jpg"):
        scorer.score_features(features, ["a.jpg", "b.jpg"])
    huge = [PromptPair("a sharp photo", "a blurry photo", MAX_WEIGHT)] * 2
    results = CLIPIQA(FeatureStore(rn_backbone), huge).score(photos)
    assert all(0.0 <= r.score <= 1.0 for r in results)


def test_load_backbone_refuses_hostile_checkpoints_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    evil = write_malicious_pickle(tmp_path / "evil.pt", marker)
    with pytest.raises(
        BadCheckpoint, match=r"refused to load .*evil.pt: .*would run code stored in the file \(.+\)"
    ) as err:
        load_backbone("test-tiny-rn", checkpoint=evil)
    assert not marker.exists() and "\n" not in str(err.value) and "weights_only" not in str(err.value)
    empty = write_empty_file(tmp_path / "empty.pt")
    with pytest.raises(BadCheckpoint, match=r"empty.pt is not a readable checkpoint: the file is empty \(0 bytes\)"):
        load_backbone("test-tiny-rn", checkpoint=empty)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(BadCheckpoint, match=r"cut.safetensors is not a readable checkpoint: not a .safetensors file"):
        load_backbone("test-tiny-rn", checkpoint=truncated)


# --- the command line, in-process ------------------------------------------------------------

TEST = ["--backbone", "test-tiny-rn"]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(("error:", "skipped:"))]


def test_score_names_every_unusable_path_and_photo_and_scores_the_rest(corpus, tmp_path, capsys):
    folder, cases = corpus
    paths = write_path_corpus(tmp_path / "paths")
    args = [str(folder), *(str(tmp_path / "paths" / c.name) for c in paths)]
    assert main(["score", *args, *TEST, "--pairs", "seed"]) == EXIT_PARTIAL
    captured = capsys.readouterr()
    skipped = error_lines(captured.err)
    assert len(skipped) == len(cases) + len(paths) and all(line.startswith("skipped: ") for line in skipped)
    for case in [*cases, *paths]:
        assert any(case.name in line and re.search(case.message, line) for line in skipped), case
    table = captured.out.strip().splitlines()
    assert len(table) == 1 + len(GOOD_PHOTOS) and all(any(g in line for line in table) for g in GOOD_PHOTOS)


def test_score_with_nothing_usable_exits_2_with_a_message(tmp_path, capsys):
    paths = write_path_corpus(tmp_path)
    assert main(["score", *(str(tmp_path / c.name) for c in paths), *TEST]) == EXIT_INPUT
    err = capsys.readouterr().err
    expected = f"error: nothing to score: no photo could be opened ({len(paths)} paths or files skipped)"
    assert error_lines(err)[-1] == expected


@pytest.mark.parametrize("index", range(9))
def test_cli_refuses_hostile_prompt_files_in_one_line(corpus, tmp_path, capsys, index):
    case = write_prompt_files(tmp_path / "prompts")[index]
    folder, _ = corpus
    assert (
        main(["score", str(folder / GOOD_PHOTOS[0]), *TEST, "--pairs", str(tmp_path / "prompts" / case.name)])
        == EXIT_INPUT
    )
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and re.search(case.message, lines[0])


def test_cli_refuses_hostile_weights_in_one_line(corpus, tmp_path, capsys):
    folder, _ = corpus
    marker = tmp_path / "pwned"
    evil = write_malicious_pickle(tmp_path / "evil.pt", marker)
    empty = write_empty_file(tmp_path / "empty.pt")
    for path, reason in ((evil, "would run code stored in the file"), (empty, r"the file is empty \(0 bytes\)")):
        assert main(["score", str(folder), *TEST, "--weights", str(path)]) == EXIT_INPUT
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and re.search(rf"^error: .*{path.name}.*{reason}", lines[0]), lines
        assert "weights_only" not in lines[0]
    assert not marker.exists()


def test_import_official_refusals_name_the_file(tmp_path, capsys):
    marker = tmp_path / "pwned"
    cases = {
        write_malicious_pickle(tmp_path / "evil.pt", marker): "would run code stored in the file",
        write_empty_file(tmp_path / "empty.pt"): r"the file is empty \(0 bytes\)",
    }
    layout = tmp_path / "other_layout.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, layout)
    cases[layout] = "not an official GRMP-IQA checkpoint: 1 unknown tensors"
    for path, reason in cases.items():
        assert (
            main(["import-official", str(path), "--out", str(tmp_path / "out"), "--backbone", "test-tiny-vit"])
            == EXIT_INPUT
        )
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and re.search(rf"^error: .*{path.name}.*{reason}", lines[0]), lines
    assert not marker.exists()


def test_train_never_unpickles_an_old_state_file(tmp_path, capsys):
    images = tmp_path / "labelled"
    images.mkdir()
    rows = ["path,score"]
    for i in range(20):
        good_image((48, 48), seed=i % 5).rotate(18 * i).save(images / f"{i}.png")
        rows.append(f"{i}.png,{i / 20}")
    (images / "labels.csv").write_text("\n".join(rows) + "\n")
    state = tmp_path / "state"
    state.mkdir()
    marker = tmp_path / "pwned"
    write_malicious_pickle(state / "train_state.pt", marker, payload_key="run")
    args = [
        "train",
        "--dataset",
        "csv",
        "--root",
        str(images / "labels.csv"),
        "--variant",
        "seed",
        "--backbone",
        "test-tiny-vit",
        "--rounds",
        "1",
        "--shots",
        "6",
        "--val-size",
        "2",
        "--steps",
        "3",
        "--state-dir",
        str(state),
        "--out",
        str(tmp_path / "model"),
    ]
    with pytest.warns(UserWarning, match="could run code"):
        assert main(args) == EXIT_OK
    assert not marker.exists()
    (state / "train_state.safetensors").write_bytes(b"\x00" * 20)
    assert main(args) == EXIT_INPUT
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "train_state.safetensors is not a readable training state" in lines[0]


@pytest.mark.slow
def test_module_entry_point_with_the_corpus(corpus, tmp_path):
    folder, cases = corpus
    run = subprocess.run(
        [sys.executable, "-m", "iqa", "score", str(folder), str(tmp_path / "missing.jpg"), *TEST],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == EXIT_PARTIAL, run.stderr
    assert "Traceback" not in run.stderr
    assert f"skipped: {tmp_path / 'missing.jpg'}: no such file or folder" in run.stderr
    assert all(case.name in run.stderr for case in cases)
    assert all(name in run.stdout for name in GOOD_PHOTOS)


def test_a_share_link_with_a_lone_surrogate_is_a_share_error_not_a_traceback():
    import base64
    import json
    import zlib

    from iqa.app.share import ShareError, decode_share

    pair = {"positive": "\ud800 good", "negative": "bad", "weight": 1, "enabled": True}
    raw = json.dumps({"pairs": [pair]}).encode()  # ASCII JSON: the surrogate travels as an escape
    link = base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")
    with pytest.raises(ShareError, match="lone surrogate"):
        decode_share(link)
