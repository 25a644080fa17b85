"""The app shows an official GRMP-IQA model by default, and says in one line when it cannot."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import re
import urllib.request

import pytest
import torch
from conftest import running_app
from gradio_client import Client, handle_file
from official_reference import tiny_official_state

from iqa.app import gpu
from iqa.app.about_tab import about_text
from iqa.app.config import AppConfig, parse_args
from iqa.app.demo import Handlers, build_demo
from iqa.app.models import NO_GRMP, Models
from iqa.app.session import Session
from iqa.clipiqa import CLIPIQA
from iqa.grmp.model import GRMPScorer
from iqa.grmp.official import DEFAULT_FILE, OfficialCheckpointError, import_official
from iqa.prompts import PRESETS

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
    assert models.default_checkpoint.startswith(str(tmp_path / "cache" / "official" / "tiny_official-"))
    assert models.grmp_note.startswith("GRMP-IQA: the official model tiny_official.pt; on test-tiny-vit")
    files = []
    for photo in photos:
        files.append(str(tmp_path / f"{photo.name}.png"))
        photo.image.save(files[-1])
    session = handlers.add_photos(files, Session()).session
    handlers.score(
        session, handlers.load_preset("seed"), "test-tiny-rn", T_SCALE, models.default_checkpoint, 0.5, "GRMP-IQA"
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

    monkeypatch.setattr("iqa.grmp.official.download_official", offline)
    config = AppConfig(backbone="test-tiny-rn", work_dir=tmp_path / "work", grmp_official=DEFAULT_FILE)
    models = Models(config)
    assert models.startup_checkpoints == {} and models.default_checkpoint == NO_GRMP
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
        assert len(chosen) == 1 and re.search(r"official/tiny_official-[0-9a-f]{12}-v[0-9]+$", chosen[0])
        client = Client(url, verbose=False)
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
    """ZeroGPU scores in a forked worker: what the GRMP-IQA model's own store and its result cache
    gained there comes back and is merged, so the next Score click encodes nothing through its ViT."""
    monkeypatch.setenv("IQA_CACHE_DIR", str(tmp_path / "cache"))
    models = Models(AppConfig(backbone="test-tiny-rn", work_dir=tmp_path / "work", grmp_official=str(official_file)))
    grmp = models.grmp(models.default_checkpoint)
    own = grmp.scorer.store
    store = models.store("test-tiny-rn")
    assert own is not store  # the paper model encodes through its own prompted tower
    clip = CLIPIQA(store, PRESETS["seed"])
    store.image_features(photos[:1])  # the parent's thread pool exists before the fork, as in the app
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_compare_in_worker, args=(photos, clip, grmp, sender))
    worker.start()
    added = pickle.loads(receiver.recv_bytes())
    worker.join(timeout=60)
    assert worker.exitcode == 0
    assert len(added.grmp_features[0]) == len(photos) and len(added.grmp_results) == len(photos)
    assert own.images_encoded == 0 and grmp.keys() == set()  # nothing reached this process but the message
    added.merge_into(store, grmp)
    rows, again = gpu.run_compare(photos, clip, grmp)
    assert own.images_encoded == 0 and store.images_encoded == 1  # every feature and result from the merge
    assert again.grmp_results == {} and again.grmp_features == ({}, {}) and again.clip == ({}, {})
    assert [row.result("GRMP-IQA").label for row in rows] == ["GRMP-IQA (paper)"] * len(photos)


def _compare_in_worker(photos, clip, grmp, sender):
    torch.set_num_threads(1)
    _, added = gpu.run_compare(photos, clip, grmp)
    sender.send_bytes(pickle.dumps(added))


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
        assert "No GRMP-IQA model loaded" in loaded and "checkpoints at start: none" in loaded
    text = about_text()
    assert "By default (no\n`--grmp-official`" in text and "named under **Loaded** below" in text
    assert "downsized to `--max-side` on upload" in text and "4.6e-4" in text
