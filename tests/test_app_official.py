"""The app shows an official GRMP-IQA model by default, and says in one line when it cannot."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
import torch
from conftest import running_app
from forked import run_forked
from gradio_client import Client, handle_file
from official_reference import tiny_official_state

from iqa.app import calls, gpu
from iqa.app.about_tab import about_text
from iqa.app.calls import Caches
from iqa.app.config import AppConfig, parse_args
from iqa.app.demo import Handlers, build_demo
from iqa.app.method_settings import MethodSettings
from iqa.app.models import NO_CHECKPOINT, Models
from iqa.app.session import Session
from iqa.methods.grmp.official import DEFAULT_FILE, OfficialCheckpointError, import_official
from iqa.methods.grmp.scorer import GRMPScorer
from iqa.methods.prompts import PRESETS

T_SCALE = "checkpoint's logit scale"


@pytest.fixture(scope="module")
def official_file(vit_backbone, tmp_path_factory):
    """An official-layout file at the tiny test ViT's size (its architecture is recognised)."""
    path = tmp_path_factory.mktemp("release") / "tiny_official.pt"
    torch.save(tiny_official_state(vit_backbone), path)
    return path


def test_the_official_model_is_the_default_and_scores_next_to_clip_iqa(official_file, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_CACHE_DIR", str(tmp_path / "cache"))
    config = AppConfig(backbone="test-tiny-rn", work_dir=tmp_path / "work", grmp_official=str(official_file))
    handlers = Handlers(Models(config))
    models = handlers.models
    assert list(models.startup_checkpoints) == ["official: tiny_official"]
    assert re.fullmatch(r"tiny_official-[0-9a-f]{12}-v[0-9]+-[0-9a-f]{12}", models.default_checkpoint)
    assert models.grmp_note.startswith("GRMP-IQA: the official model tiny_official.pt; on test-tiny-vit")
    files = []
    for photo in photos:
        files.append(str(tmp_path / f"{photo.name}.png"))
        photo.image.save(files[-1])
    session = handlers.photos.add_photos(files, Session()).session
    handlers.scoring.score(
        session, handlers.table.load_preset("seed"), "test-tiny-rn", T_SCALE, models.default_checkpoint, 0.5, "GRMP-IQA"
    )
    assert all(row.result("GRMP-IQA").label == "GRMP-IQA (paper)" for row in session.rows)
    # the app's scores are the official model's, imported directly, on the same session photos
    reference = GRMPScorer(import_official(official_file)).score(session.photos)
    assert [r.name for r in reference] == [row.name for row in session.rows]
    for row, expected in zip(session.rows, reference):
        assert row.result("GRMP-IQA").score == pytest.approx(expected.score, abs=1e-6), row.name
    assert len({round(r.score, 6) for r in reference}) == len(reference)  # photos that score apart


def test_without_the_official_file_the_app_starts_and_says_why(tmp_path, monkeypatch):
    def offline(filename, *args, **kwargs):
        raise OfficialCheckpointError(f"could not download {filename} from the Hugging Face Hub (offline)")

    monkeypatch.setattr("iqa.methods.grmp.official.download_official", offline)
    config = AppConfig(backbone="test-tiny-rn", work_dir=tmp_path / "work", grmp_official=DEFAULT_FILE)
    models = Models(config)
    assert models.startup_checkpoints == {} and models.default_checkpoint == NO_CHECKPOINT
    note = models.grmp_note
    assert "\n" not in note and "column is empty" in note and "could not download" in note
    assert "--grmp-official PATH" in note and "Adapt tab" in note


def test_flags_choose_the_official_file(monkeypatch):
    monkeypatch.delenv("IQA_GRMP_OFFICIAL", raising=False)
    assert parse_args([]).grmp_official == DEFAULT_FILE
    assert parse_args(["--test-backbone"]).grmp_official is None  # meaningless scores: no 600 MB model
    assert parse_args(["--grmp-official", "none"]).grmp_official is None
    monkeypatch.setenv("IQA_GRMP_OFFICIAL", "koniq_50_prompt_lda_5.0.pt")
    assert parse_args([]).grmp_official == "koniq_50_prompt_lda_5.0.pt"


@pytest.mark.slow
def test_the_served_page_opens_with_the_official_model_chosen(official_file, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_CACHE_DIR", str(tmp_path / "cache"))
    with running_app(tmp_path, "--grmp-official", str(official_file)) as url:
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "the official model tiny_official.pt" in page
        config = json.loads(urllib.request.urlopen(url + "config", timeout=10).read())
        chosen = [
            c["props"]["value"]
            for c in config["components"]
            if c.get("props", {}).get("label") == "GRMP-IQA checkpoint"
        ]
        # an id (the converted file's name and the start of its hash), never the server's cache path
        assert len(chosen) == 1 and re.fullmatch(r"tiny_official-[0-9a-f]{12}-v[0-9]+-[0-9a-f]{12}", chosen[0])
        cache = str(tmp_path / "cache")
        assert cache not in json.dumps(config)
        client = Client(url, verbose=False)
        assert cache not in json.dumps(client.view_api(print_info=False, return_format="dict"))
        paths = []
        for photo in photos:
            paths.append(tmp_path / f"{photo.name}.png")
            photo.image.save(paths[-1])
        client.predict([handle_file(str(p)) for p in paths], api_name="/add_photos")
        table = client.predict("seed", api_name="/load_preset")[0]
        ranking = client.predict(table, "test-tiny-rn", T_SCALE, chosen[0], 0.5, "GRMP-IQA", api_name="/score")[1]
        assert len(ranking["data"]) == 3 and all(row[3] != "" for row in ranking["data"])


def test_a_zerogpu_worker_returns_the_official_models_features_and_results(
    official_file, photos, tmp_path, monkeypatch
):
    """ZeroGPU scores in a forked worker that gets its job through a queue: what it computed comes back
    and is merged, so the next Score click sends no pixel and encodes nothing through either tower."""
    monkeypatch.setenv("IQA_CACHE_DIR", str(tmp_path / "cache"))
    models = Models(AppConfig(backbone="test-tiny-rn", work_dir=tmp_path / "work", grmp_official=str(official_file)))
    jobs: list = []
    monkeypatch.setattr(calls.gpu, "score", lambda job: jobs.append(job) or iter(run_forked(_score, job)))
    store, ref = models.store("test-tiny-rn"), models.startup_checkpoints["official: tiny_official"]
    store.image_features(photos[:1])  # the parent's thread pool exists before the fork, as in the app
    caches = Caches(2)
    requests = MethodSettings(tuple(PRESETS["seed"]), None, ref).requests(["CLIP-IQA", "GRMP-IQA"])[0]
    first = calls.score_photos(models, caches, store, requests, photos)
    own = models.scorer(ref).store
    assert own is not store and own.images_encoded == 0  # the paper model's tower ran in the worker only
    assert first.encoded == len(photos) - 1 and store.images_encoded == 1
    assert [type(p).__name__ for p in jobs[0].photos] == ["Photo"] * 3  # its own tower needs the pixels
    again = calls.score_photos(models, caches, store, requests, photos)
    assert [type(p).__name__ for p in jobs[1].photos] == ["PhotoKey"] * 3
    assert [call.photos for call in jobs[1].methods if call.name == "GRMP-IQA"] == [()]
    assert again.encoded == 0 and own.images_encoded == 0 and store.images_encoded == 1
    assert [row.results["GRMP-IQA"].variant for row in again.rows] == ["paper"] * len(photos)
    assert [row.results for row in again.rows] == [row.results for row in first.rows]


_SCORE = gpu.score  # the GPU function itself, as the worker finds it (the test replaces the module's name)


def _score(job):
    return _SCORE(job)


@pytest.mark.parametrize("flag", ["official", "none"])
def test_the_about_tab_names_the_model_this_server_loaded(official_file, tmp_path, monkeypatch, flag):
    monkeypatch.setenv("IQA_CACHE_DIR", str(tmp_path / "cache"))
    official = str(official_file) if flag == "official" else None
    config = AppConfig(backbone="test-tiny-rn", work_dir=tmp_path / "work", grmp_official=official, max_side=800)
    models = Models(config)
    demo = build_demo(config, models)
    loaded = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "loaded").value
    assert models.grmp_note in loaded and "downsized to 800 px" in loaded
    if flag == "official":
        assert "the official model tiny_official.pt" in loaded and "clive_50" not in loaded
    else:
        assert (
            "No GRMP-IQA model loaded" in loaded and "**Loaded at start:**" in loaded and "checkpoints: none." in loaded
        )
    text = about_text()
    assert "By default (no\n`--grmp-official`" in text and "named under **Loaded** below" in text
    assert "downsized to `--max-side` on upload" in text and "4.6e-4" in text
