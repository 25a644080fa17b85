"""The app's handlers, called directly, on the tiny test backbone."""

import base64
import csv as csv_module
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import types
import zipfile
import zlib
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest
from PIL import Image
from skimage import data as skimage_data

from iqa.app.config import AppConfig, parse_args
from iqa.app.demo import Handlers, build_demo
from iqa.app.lab_tab import BUNDLED_SET, UPLOADED_SET
from iqa.app.models import CheckpointRef, Models
from iqa.app.outputs import FilterOutput, ScoreOutput, as_outputs, as_values
from iqa.app.session import Session
from iqa.app.share import encode_share
from iqa.app.table import PROMPT_COLUMNS, parse_table
from iqa.clip.test_backbones import TEST_BACKBONE_WARNING
from iqa.methods import registry
from iqa.methods.grmp.checkpoint import CheckpointError, save_checkpoint
from iqa.methods.grmp.model import GRMPConfig, GRMPModel
from iqa.methods.prompts import load_pairs

ROOT = Path(__file__).resolve().parents[1]
T_SCALE = "checkpoint's logit scale"


@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    config = AppConfig(
        backbone="test-tiny-rn", work_dir=tmp_path_factory.mktemp("work"), max_photos=6, max_pixels=200_000
    )
    return Handlers(Models(config))


@pytest.fixture
def session(handlers, photo_files):
    return handlers.photos.add_photos(photo_files, Session()).session


def score(handlers, session, table, checkpoint="", temperature=T_SCALE, threshold=0.5, method="CLIP-IQA"):
    return handlers.scoring.score(session, table, "test-tiny-rn", temperature, checkpoint, threshold, method)


def test_bad_uploads_are_reported_and_the_rest_are_added(handlers, photo_files, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (600, 400)).save(huge)
    with pytest.warns(UserWarning) as caught:
        added = handlers.photos.add_photos(
            [photo_files[0], str(text), str(corrupt), str(huge), photo_files[1]], Session()
        )
    session, gallery, info = added.session, added.gallery, added.photo_info
    assert [p.name for p in session.photos] == ["astronaut.jpg", "chelsea.jpg"]
    assert len(gallery) == 2 and info.startswith("2 photo(s) ready.")
    assert "notes.txt: not an image file (looks like a text file)" in info
    assert "broken.jpg: image is corrupt" in info
    assert "huge.png: 600x400 pixels is more than the 0.2 MP limit" in info
    assert len(caught) == 3


def test_same_names_stay_apart_files_are_added_once_and_the_count_is_limited(handlers, photo_files, tmp_path):
    variants = []  # other photos under the same names
    for k in range(2):
        folder = tmp_path / str(k)
        folder.mkdir()
        for file in photo_files:
            Image.open(file).point(lambda v, k=k: v // (k + 2)).save(folder / Path(file).name)
            variants.append(str(folder / Path(file).name))
    session = handlers.photos.add_photos(photo_files, Session()).session
    session = handlers.photos.add_photos(
        photo_files + variants[:2], session
    ).session  # an upload re-sends earlier files
    assert [p.name for p in session.photos] == [
        "astronaut.jpg",
        "chelsea.jpg",
        "coffee.jpg",
        "astronaut-1.jpg",
        "chelsea-1.jpg",
    ]
    with pytest.warns(UserWarning, match="only 6 photos"):
        session = handlers.photos.add_photos(variants, session).session
    assert len(session.photos) == 6
    cleared = handlers.photos.clear_photos(session)
    assert cleared.gallery == [] and session.photos == [] and session.sources == set()
    assert cleared.photo_info == "No photos yet."


def test_the_same_photo_added_twice_is_kept_once(handlers, photo_files, tmp_path):
    again = tmp_path / "again.jpg"
    shutil.copy(photo_files[0], again)
    session = handlers.photos.add_photos(photo_files[:1], Session()).session
    with pytest.warns(UserWarning, match="again.jpg: the same photo as astronaut.jpg, kept once"):
        added = handlers.photos.add_photos([str(again), photo_files[1]], session)
    assert [p.name for p in added.session.photos] == ["astronaut.jpg", "chelsea.jpg"]
    assert "kept once" in added.photo_info


def test_score_ranks_photos_and_reports_time_and_device(handlers, session):
    out = score(handlers, session, handlers.table.load_preset("pyiqa"))
    table, ranking, pick, breakdown, status = out.prompts, out.ranking, out.photo_pick, out.breakdown, out.status
    csv_path = out.results_csv
    assert len(ranking) == 3 and list(ranking["#"]) == [1, 2, 3]
    scores = list(ranking["CLIP-IQA"])
    assert scores == sorted(scores, reverse=True)
    assert set(ranking["decision"]) <= {"keep", "reject"}
    assert all(cell.startswith('<img src="data:image/jpeg;base64,') for cell in ranking["photo"])
    assert pick["value"] == ranking["name"][0]
    assert len(breakdown.data[0].y) == 5
    assert " s on test-tiny-rn" in status and "cpu" in status and "3 image(s) encoded" in status
    assert list(table["status"]) == ["ok"] * 5
    lines = Path(csv_path).read_text().splitlines()
    assert len(lines) == 4 and lines[1].split(",")[1] == ranking["name"][0]


def test_editing_prompts_rescores_from_cached_features(handlers, session):
    store = handlers.models.store("test-tiny-rn")
    table = handlers.table.load_preset("seed")
    first = score(handlers, session, table)
    encoded = store.images_encoded
    table.loc[0, "positive"] = "a crisp photo"
    second = score(handlers, session, table)
    assert store.images_encoded == encoded
    assert "0 image(s) encoded" in second.status
    assert list(first.ranking["CLIP-IQA"]) != list(second.ranking["CLIP-IQA"])


def test_invalid_rows_are_marked_with_the_reason_and_the_rest_scored(handlers, session):
    table = handlers.table.load_preset("seed")
    table.loc[1, "negative"] = "A Professional  photo"
    table = handlers.table.add_row(table).astype({"weight": object})  # the browser may send any text
    table.loc[3, ["positive", "negative", "weight"]] = ["sharp", "blurry", "heavy"]
    table.loc[0, "on"] = False
    out = score(handlers, session, table)
    table, ranking, breakdown = out.prompts, out.ranking, out.breakdown
    assert list(table["status"]) == [
        "off",
        "invalid: the positive and negative prompts are the same",
        "ok",
        "invalid: the weight 'heavy' is not a number",
    ]
    assert len(ranking) == 3
    assert list(breakdown.data[0].y) == ["a sharp photo / a<br>blurry photo"]


def test_empty_table_or_no_photos_warns_and_keeps_serving(handlers, session):
    empty = pd.DataFrame(columns=PROMPT_COLUMNS)
    with pytest.warns(UserWarning, match="No usable prompt pair"):
        out = score(handlers, session, empty)
    assert out.status == "No usable prompt pair: the prompt table is empty." and len(out.ranking) == 0
    out = score(handlers, Session(), handlers.table.load_preset("seed"))  # no warning: a setting may come first
    assert out.status == "No photos to score." and out.breakdown is None and out.results_csv is None


def test_all_weights_zero_marks_the_rows_and_clears_every_result(handlers, session):
    """No positive weight is no usable pair: each row says why, and the ranking, CSV and Filter tab are cleared."""
    table = handlers.table.load_preset("seed")
    assert score(handlers, session, table).results_csv is not None
    zero = table.assign(weight=0.0)
    zero.loc[1, "on"] = False
    with pytest.warns(UserWarning, match="every enabled row has weight 0"):
        out = score(handlers, session, zero)
    assert list(out.prompts["status"]) == [
        "invalid: the enabled weights add up to 0",
        "off",
        "invalid: the enabled weights add up to 0",
    ]
    assert out.status == "No usable prompt pair: every enabled row has weight 0 (give one a weight above 0)."
    assert len(out.ranking) == 0 and out.results_csv is None and out.breakdown is None and session.rows == []
    assert handlers.filtering.filter(session, 0.5, "CLIP-IQA").filter_summary.startswith(
        "No scores to filter: nothing could"
    )
    zero.loc[2, "weight"] = 0.5  # one positive weight is enough
    assert len(score(handlers, session, zero).ranking) == 3


def test_seed_temperature_keeps_scores_near_one_half(handlers, session):
    ranking = score(
        handlers, session, handlers.table.load_preset("seed"), temperature="t = 1 (the seed's formula)"
    ).ranking
    assert all(abs(float(s) - 0.5) < 0.05 for s in ranking["CLIP-IQA"])


def test_row_editing_add_delete_and_reorder(handlers):
    table = handlers.table.load_preset("seed")
    table = handlers.table.add_row(table)
    assert len(table) == 4 and table.loc[3, "positive"] == ""
    moved = handlers.table.row_up(table, 2)
    assert moved.row_number == 1
    assert list(moved.prompts["positive"][:2]) == ["a professional photo", "a beautiful photo"]
    moved = handlers.table.row_down(moved.prompts, 4)
    assert moved.row_number == 4
    shorter = handlers.table.delete_row(moved.prompts, 1)
    assert list(shorter["positive"]) == ["a beautiful photo", "a sharp photo", ""]
    with pytest.raises(gr.Error, match="between 1 and 3"):
        handlers.table.delete_row(shorter, 7)


def test_prompt_sets_save_and_load_and_bad_files_are_refused(handlers, tmp_path):
    table = handlers.table.load_preset("paper-look")
    table.loc[2, "weight"] = 2.5
    saved = handlers.table.save_prompts(table, Session())
    assert saved["visible"] is True
    path = saved["value"]
    loaded = handlers.table.load_prompts(path)
    assert loaded.drop(columns="status").equals(table.drop(columns="status"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(gr.Error, match="not valid JSON"):
        handlers.table.load_prompts(str(bad))


def _seed_checkpoint(handlers, folder: Path, seed: int = 0) -> tuple[Path, Path]:
    backbone = handlers.models.store("test-tiny-rn").backbone
    config = GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=backbone.pretrained, seed=seed)
    return save_checkpoint(GRMPModel(config, backbone), folder / "tiny-seed")


def test_grmp_checkpoint_upload_scores_next_to_clip_iqa(handlers, session, tmp_path):
    tensors, config = _seed_checkpoint(handlers, tmp_path)
    choices = handlers.checkpoints.upload_checkpoint([str(config), str(tensors)], session).checkpoint
    label, value = choices["choices"][-1]
    assert label == "tiny-seed (uploaded)" and choices["value"] == value
    store = handlers.models.store("test-tiny-rn")
    score(handlers, session, handlers.table.load_preset("seed"))
    encoded = store.images_encoded
    out = score(handlers, session, handlers.table.load_preset("seed"), checkpoint=value, method="GRMP-IQA")
    ranking, breakdown, scatter = out.ranking, out.breakdown, out.scatter
    assert all(len(s) == 5 for s in ranking["GRMP-IQA"])  # "0.010": three decimals, always
    assert list(ranking["GRMP-IQA"]) == sorted(ranking["GRMP-IQA"], reverse=True)
    grmp = session.rows[0].results["GRMP-IQA"]
    parts = dict(zip(breakdown.data[0].y[-2:], breakdown.data[0].x[-2:]))
    assert parts == {  # what the seed variant's score is made of: the learned pair's p, then the MLP head
        "GRMP-IQA (seed):<br>learned prompt pair p": pytest.approx(grmp.pairs[0].p),
        "GRMP-IQA (seed): score<br>= p + MLP head": pytest.approx(grmp.score),
    }
    assert len(scatter.data[1].x) == 3
    assert store.images_encoded == encoded  # the seed variant reuses CLIP-IQA's image features
    assert "GRMP-IQA (seed)" in out.status
    assert out.grmp_note == ""  # "no GRMP-IQA model loaded" is no longer true
    assert "No GRMP-IQA model loaded" in score(handlers, session, handlers.table.load_preset("seed")).grmp_note
    about = handlers.checkpoints.loaded(session)  # the About tab: what was loaded at start, then the session's own
    assert "This session's own GRMP-IQA checkpoints** (first tab, Settings): tiny-seed (uploaded)." in about
    assert "No GRMP-IQA model loaded" not in about and "GRMP-IQA checkpoints: none." in about
    assert "No GRMP-IQA model loaded" in handlers.checkpoints.loaded(Session())


def test_bad_checkpoints_give_a_clear_message(handlers, session, tmp_path, monkeypatch):
    junk_json, junk_tensors = tmp_path / "junk.json", tmp_path / "junk.safetensors"
    junk_json.write_text('{"hello": 1}')
    junk_tensors.write_bytes(b"\x00" * 16)
    with pytest.raises(gr.Error, match="not a GRMP checkpoint config"):
        handlers.checkpoints.upload_checkpoint([str(junk_json), str(junk_tensors)], session)
    with pytest.raises(gr.Error, match="two files"):
        handlers.checkpoints.upload_checkpoint([str(junk_json)], session)
    # tensors that do not fit the configuration they came with
    tensors, config = _seed_checkpoint(handlers, tmp_path / "edited")
    meta = json.loads(config.read_text())
    meta["config"]["n_ctx"] = 8
    config.write_text(json.dumps(meta))
    with pytest.raises(
        gr.Error,
        match=r"tiny-seed.json: tiny-seed.safetensors: tensor 'prompt_learner.ctx' has "
        r"shape \[4, 32\], which does not fit the config in tiny-seed.json \(n_ctx=8",
    ):
        handlers.checkpoints.upload_checkpoint([str(config), str(tensors)], session)
    # a checkpoint for a backbone the server did not start with: refused, nothing is loaded
    tensors, config = _seed_checkpoint(handlers, tmp_path)
    meta = json.loads(config.read_text())
    meta["config"].update(backbone="ViT-B-16-quickgelu", pretrained="openai")
    config.write_text(json.dumps(meta))
    loaded = set(handlers.models._stores)
    with pytest.raises(
        gr.Error,
        match="needs backbone 'ViT-B-16-quickgelu'; uploaded checkpoints may only use "
        "the backbones this server was started with: test-tiny-rn",
    ):
        handlers.checkpoints.upload_checkpoint([str(config), str(tensors)], session)
    assert set(handlers.models._stores) == loaded
    # a path the session was never given (the API accepts any text) is not loaded either
    with pytest.warns(UserWarning, match="GRMP-IQA checkpoint not used: .* is not one of this session's"):
        out = score(handlers, session, handlers.table.load_preset("seed"), checkpoint=str(tmp_path / "tiny-seed"))
    assert len(out.ranking) == 3 and set(out.ranking["GRMP-IQA"]) == {""}  # CLIP-IQA still scored


def test_unavailable_backbone_falls_back_with_a_warning(handlers, session, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(UserWarning, match="cannot load weights.*Scoring with test-tiny-rn instead"):
        out = handlers.scoring.score(
            session, handlers.table.load_preset("seed"), "ViT-B-16-quickgelu", T_SCALE, "", 0.5, "CLIP-IQA"
        )
    assert len(out.ranking) == 3


def test_filter_splits_at_the_threshold_and_zips_the_kept_photos(handlers, session):
    ranking = score(handlers, session, handlers.table.load_preset("seed")).ranking
    middle = float(ranking["CLIP-IQA"][1])
    filtered = handlers.filtering.filter(session, middle, "CLIP-IQA")
    kept, rejected, list_path, summary = (
        filtered.kept["value"],
        filtered.rejected,
        filtered.filter_list,
        filtered.filter_summary,
    )
    assert len(kept) == 2 and len(rejected) == 1
    assert summary.startswith("2 kept, 1 rejected")
    assert filtered.kept_zip is None  # a zip of an earlier split is never offered
    assert filtered.kept["label"] == "Kept" and filtered.make_zip
    assert list(filtered.histogram.layout.shapes)[0].x0 == middle
    with zipfile.ZipFile(handlers.filtering.zip_kept(session, middle, "CLIP-IQA").kept_zip) as archive:
        assert sorted(archive.namelist()) == sorted(ranking["name"][:2])
    decisions = [row["decision"] for row in csv_module.DictReader(Path(list_path).open())]
    assert decisions == ["keep", "keep", "reject"]
    with pytest.warns(UserWarning, match="filtering by CLIP-IQA"):
        assert handlers.filtering.filter(session, middle, "GRMP-IQA").filter_summary == summary
    table = handlers.scoring.rerank(session, 1.01, "CLIP-IQA").ranking
    assert set(table["decision"]) == {"reject"}
    with pytest.raises(gr.Error, match="score photos"):
        handlers.filtering.zip_kept(Session(), 0.5, "CLIP-IQA")


def test_nothing_kept_offers_no_zip_and_says_so(handlers, session):
    ranking = score(handlers, session, handlers.table.load_preset("seed")).ranking
    above = float(max(ranking["CLIP-IQA"])) + 0.001
    filtered = handlers.filtering.filter(session, above, "CLIP-IQA")
    assert filtered.kept["value"] == [] and filtered.kept["label"] == "Kept: no photo at or above the threshold"
    assert not filtered.make_zip and filtered.outputs()[-1] == gr.update(visible=False)
    with pytest.raises(gr.Error, match="nothing to zip"):
        handlers.filtering.zip_kept(session, above, "CLIP-IQA")


def test_prompt_lab_on_uploaded_photos_with_scores(handlers, photo_files, tmp_path):
    csv = tmp_path / "scores.csv"
    csv.write_text("name,score\nastronaut.jpg,3\nchelsea.jpg,2\ncoffee.jpg,1\nghost.jpg,5\n")
    lab = handlers.lab.run_lab(
        UPLOADED_SET, str(csv), photo_files, handlers.table.load_preset("seed"), "test-tiny-rn", T_SCALE
    )
    table, chart, summary = lab.lab_table, lab.lab_chart, lab.lab_summary
    assert len(table) == 3 and list(table["SRCC"]) == sorted(table["SRCC"], reverse=True)
    assert "SRCC of the combined score of the enabled pairs" in summary and "on 3 photos" in summary
    mean = sum(table["SRCC"]) / 3  # every seed pair is on: the pairs' own SRCCs, averaged, beside it
    assert f"The enabled pairs' own SRCCs average {mean:.3f}" in summary
    assert "ghost.jpg: listed in the CSV but not uploaded" in summary
    assert len(chart.data[0].y) == 3
    with pytest.raises(gr.Error, match="upload the photos and a CSV"):
        handlers.lab.run_lab(
            UPLOADED_SET, None, photo_files, handlers.table.load_preset("seed"), "test-tiny-rn", T_SCALE
        )


def test_every_tab_shows_the_test_backbone_banner(handlers):
    demo = build_demo(handlers.config, handlers.models)
    config = demo.get_config_file()
    tabs = [c for c in config["components"] if c["type"] == "tabitem"]
    banners = [
        c
        for c in config["components"]
        if c["type"] == "markdown" and TEST_BACKBONE_WARNING in str(c["props"].get("value"))
    ]
    assert len(tabs) == 5 and len(banners) == len(tabs)


def test_flags_and_environment_configure_the_app(monkeypatch):
    monkeypatch.setenv("IQA_PORT", "7999")
    monkeypatch.setenv("IQA_TEST_BACKBONE", "1")
    config = parse_args([])
    assert config.port == 7999 and config.backbone == "test-tiny-rn" and config.is_test
    config = parse_args(["--port", "8001", "--backbone", "test-tiny-vit", "--host", "0.0.0.0"])
    assert (config.port, config.backbone, config.host) == (8001, "test-tiny-vit", "0.0.0.0")
    monkeypatch.delenv("IQA_TEST_BACKBONE")
    assert parse_args(["--pretrained", "none"]).pretrained is None
    assert parse_args([]).backbone == "RN50-quickgelu"


@pytest.mark.slow
def test_without_weights_offline_the_app_says_so_and_does_not_start(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("IQA_TEST_BACKBONE", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--backbone", "RN50-quickgelu", "--port", str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "cannot load weights for backbone 'RN50-quickgelu'" in done.stderr
    assert "HF_HUB_OFFLINE is set" in done.stderr and "--backbone test-tiny-rn" in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_adapt_streams_the_chart_and_offers_the_new_checkpoint(handlers, session, photo_files, tmp_path, photos):
    files = list(photo_files)
    for photo in photos:  # darker copies with lower scores: six labelled photos
        path = tmp_path / f"dark-{photo.name}.jpg"
        photo.image.point(lambda v: v // 3).save(path)
        files.append(str(path))
    csv = tmp_path / "scores.csv"
    csv.write_text("name,score\n" + "".join(f"{Path(f).name},{1 if 'dark' in f else 4}\n" for f in files))
    updates = list(handlers.adapting.adapt(UPLOADED_SET, str(csv), files, 1.0, 20, "test-tiny-rn", session))
    last = updates[-1]
    chart, status, choices, download = last.adapt_chart, last.adapt_status, last.checkpoint, last.adapt_download
    assert len(chart.data[0].x) == 20 and list(chart.data[0].x) == list(range(1, 21))
    assert status.startswith("Done: 6 labelled photos") and "is now selectable on the first tab" in status
    label, stem = choices["choices"][-1]
    assert label.startswith("seed-adapted-1 (adapted") and choices["value"] == stem
    assert sorted(Path(f).suffix for f in download) == [".json", ".safetensors"]
    saved = next(Path(f).read_text() for f in download if f.endswith(".json"))
    assert str(tmp_path) not in saved and "/" not in str(json.loads(saved)["config"]["training"]["train_images"])
    ranking = score(handlers, session, handlers.table.load_preset("seed"), checkpoint=stem, method="GRMP-IQA").ranking
    assert ranking["GRMP-IQA"].ne("").all()


def test_stop_ends_a_running_adaptation_at_its_next_step_and_says_nothing_was_saved(handlers, session):
    handlers.adapting.stop_adapting(session)  # pressed before: the Adapt button clears it as it queues its run
    handlers.adapting.start_adapting(session)
    updates = handlers.adapting.adapt(BUNDLED_SET, None, None, 1.0, 2000, "test-tiny-rn", session)
    first = next(updates)  # drawn at the first step: the adaptation runs
    assert first.adapt_status.startswith("Step ")
    handlers.adapting.stop_adapting(session)
    last = list(updates)[-1]
    assert re.match(r"Stopped at step \d+ of 2000: no checkpoint was saved", last.adapt_status), last.adapt_status
    assert last.adapt_download is None and not session.checkpoints
    handlers.adapting.start_adapting(session)
    again = list(handlers.adapting.adapt(BUNDLED_SET, None, None, 1.0, 10, "test-tiny-rn", session))[
        -1
    ]  # Stop is not kept
    assert again.adapt_status.startswith("Done: ")


def test_another_backbone_loads_once_and_scores(handlers, session):
    out = handlers.scoring.score(
        session, handlers.table.load_preset("seed"), "test-tiny-vit", T_SCALE, "", 0.5, "CLIP-IQA"
    )
    assert "on test-tiny-vit" in out.status and len(out.ranking) == 3
    assert handlers.models.store("test-tiny-vit") is handlers.models.store("test-tiny-vit")
    assert handlers.models.backbone_choices == ["test-tiny-rn", "test-tiny-vit"]


def test_grmp_models_in_memory_are_bounded_and_reload_from_their_files(handlers, tmp_path, monkeypatch):
    monkeypatch.setattr(handlers.config, "max_grmp_models", 2)
    refs = []
    for k in range(3):
        _seed_checkpoint(handlers, tmp_path / str(k), seed=k)
        refs.append(CheckpointRef.of(tmp_path / str(k) / "tiny-seed"))
    first = handlers.models.scorer(refs[0])
    assert handlers.models.scorer(refs[0]) is first
    handlers.models.scorer(refs[1])
    handlers.models.scorer(refs[2])
    again = handlers.models.scorer(refs[0])
    assert again is not first and again.label == "GRMP-IQA (seed)"


def test_a_checkpoint_changed_after_it_was_chosen_is_refused(handlers, tmp_path):
    _seed_checkpoint(handlers, tmp_path, seed=1)
    ref = CheckpointRef.of(tmp_path / "tiny-seed")
    _seed_checkpoint(handlers, tmp_path, seed=2)
    with pytest.raises(CheckpointError, match="changed since it was chosen"):
        handlers.models.scorer(ref)


def test_clicking_a_ranking_row_shows_its_breakdown(handlers, session):
    ranking = score(handlers, session, handlers.table.load_preset("seed")).ranking
    name = ranking["name"][2]
    event = gr.SelectData(None, {"index": [2, 0], "value": 3, "row_value": list(ranking.iloc[2]), "selected": True})
    picked = handlers.scoring.pick_ranked(session, None, event)
    assert picked.photo_pick["value"] == name and picked.breakdown.layout.title.text.startswith(f"{name}<br>CLIP-IQA")


def test_the_table_reads_on_as_a_prompt_file_does(handlers, tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text("positive,negative,weight,enabled\nsharp,blurry,1,Y\nclean,noisy,1,no\n")
    from_file = [p.enabled for p in load_pairs(csv)]
    table = handlers.table.load_preset("seed").head(2).assign(on=["Y", "no"])
    from_table = [p.enabled for p in parse_table(table)[0]]
    assert from_file == from_table == [True, False]


def test_every_typed_output_names_a_component_of_the_page(handlers):
    demo = build_demo(handlers.config, handlers.models)
    ids = {block._id for block in demo.blocks.values()}
    for dependency in demo.config["dependencies"]:
        assert set(dependency["outputs"]) <= ids
    scored = {d["api_name"]: d for d in demo.config["dependencies"] if d.get("api_name")}
    assert len(scored["score"]["outputs"]) == len(dataclasses.fields(ScoreOutput))


def test_the_chosen_photos_stay_chosen_when_a_table_edit_rescores(handlers, session):
    first = score(handlers, session, handlers.table.load_preset("seed"))
    names = first.photo_pick["choices"]
    picked, other = names[-1], names[0]
    table = handlers.table.delete_row(handlers.table.load_preset("seed"), 1)
    out = handlers.scoring.score(session, table, "test-tiny-rn", T_SCALE, "", 0.5, "CLIP-IQA", picked, other)
    assert out.photo_pick["value"] == picked and out.compare_pick["value"] == other
    assert out.breakdown.layout.title.text.startswith(picked)
    assert len(out.breakdown.data[0].y) == 2 and "with 2 pair(s)" in out.status  # the deleted pair is gone
    assert [trace.name for trace in out.side_by_side.data] == [picked, other]
    gone = handlers.scoring.score(session, table, "test-tiny-rn", T_SCALE, "", 0.5, "CLIP-IQA", "deleted.jpg", None)
    assert gone.photo_pick["value"] == gone.ranking["name"][0]  # a photo no longer there: the best one


def test_attribute_presets_are_shown_one_value_per_attribute(handlers, session):
    out = score(handlers, session, handlers.table.load_preset("paper-look"))
    assert list(out.ranking.columns) == [
        "#",
        "photo",
        "Good/Bad",
        "Bright/Dark",
        "Sharp/Blurry",
        "Noisy/Clean",
        "Colorful/Dull",
        "High contrast/Low contrast",
        "GRMP-IQA",  # the chosen methods only (CLIP-IQA and GRMP-IQA by default)
        "decision",
        "name",
    ]
    row = session.rows[0]
    assert list(out.ranking.iloc[0, 2:8]) == [f"{p.p:.3f}" for p in row.results["CLIP-IQA"].pairs]
    assert set(out.ranking["decision"]) == {"—"}  # no quality score to decide by
    assert "not averaged" in out.breakdown.layout.title.text and "attribute prompts" in out.status
    filtered = handlers.filtering.filter(session, 0.5, "CLIP-IQA")
    assert filtered.kept == filtered.rejected == [] and "never averaged" in filtered.filter_summary


def test_the_csv_holds_each_pair_and_the_settings_and_no_server_paths(handlers, session):
    out = score(handlers, session, handlers.table.load_preset("seed"))
    header, *lines = list(csv_module.reader(Path(out.results_csv).read_text().splitlines()))
    columns = [m.column for m in registry.methods()]  # clip_iqa, grmp_iqa, and every other method's
    assert header[: 5 + len(columns)] == ["rank", "name", *columns, "decision", "method", "threshold"]
    assert (
        "clip_iqa p[a sharp photo / a blurry photo]" in header
        and "clip_iqa s_neg[a sharp photo / a blurry photo]" in header
    )
    row = dict(zip(header, lines[0]))
    assert (
        row["backbone"] == "test-tiny-rn"
        and row["clip_iqa_temperature"] == f"{session.rows[0].results['CLIP-IQA'].temperature:g}"
    )
    assert "a beautiful photo / an ugly photo (weight 1)" in row["prompt_pairs"]
    assert str(handlers.config.work_dir) not in Path(out.results_csv).read_text()


def test_a_preset_never_silently_discards_edits_and_a_loaded_file_is_named(handlers, tmp_path):
    session = Session()
    table = handlers.table.load_preset("seed")
    table.loc[0, "positive"] = "a stunning photo"
    named = handlers.table.table_changed(table, session)
    assert named.preset == "custom" and named.saved_prompts is None
    chosen = handlers.table.choose_preset("pyiqa", session)  # says (gr.Info) that the edits are kept
    assert chosen.preset == "pyiqa" and len(chosen.prompts) == 5
    back = handlers.table.choose_preset("custom", session)
    assert back.prompts.loc[0, "positive"] == "a stunning photo"
    saved = handlers.table.save_prompts(handlers.table.load_preset("paper-feel"), session)["value"]
    assert handlers.table.table_changed(handlers.table.load_prompts(saved), session).preset == "paper-feel"


def test_the_share_link_says_why_there_is_none(handlers):
    empty = pd.DataFrame(columns=PROMPT_COLUMNS)
    assert handlers.share.share_link(empty, "test-tiny-rn", T_SCALE, "", 0.5, "CLIP-IQA") == (
        "No link: the prompt table has no readable pair."
    )


def test_share_link_restores_the_table_and_settings(handlers):
    table = handlers.table.load_preset("seed")
    table.loc[1, "on"] = False
    table.loc[2, "weight"] = 2.5
    query = handlers.share.share_query(table, "test-tiny-vit", "t = 1 (the seed's formula)", "", 0.4321, "GRMP-IQA")
    assert query.startswith("?share=")
    restored = handlers.share.restore_shared(_request(share=query.removeprefix("?share=")))
    assert restored.prompts.drop(columns="status").equals(table.drop(columns="status"))
    assert (restored.backbone, restored.temperature, restored.threshold, restored.method) == (
        "test-tiny-vit",
        "t = 1 (the seed's formula)",
        0.4321,
        "GRMP-IQA",
    )
    assert restored.preset == "custom"


@pytest.mark.parametrize(
    "link, message",
    [
        ("not-a-link", "not a link this app made"),
        ("A" * 20_000, "characters long"),
        (encode_share({"pairs": [{"positive": "a\x00", "negative": "b"}]}), "control character"),
        (encode_share({"pairs": []}), "needs 1 to 200 prompt pairs"),
        (encode_share({"pairs": [{"positive": "a", "negative": "b"}], "threshold": "high"}), "threshold"),
        (base64.urlsafe_b64encode(zlib.compress(b"[" * 300_000)).decode(), "more than"),
    ],
)
def test_a_bad_share_link_is_one_warning_and_changes_nothing(handlers, link, message):
    with pytest.warns(UserWarning, match=message):
        restored = handlers.share.restore_shared(_request(share=link))
    assert all(value == {"__type__": "update"} for value in restored.outputs())


def _request(**params):
    return types.SimpleNamespace(query_params=params)


def test_use_these_pairs_sends_the_best_pairs_to_the_table(handlers):
    lab = handlers.lab.run_lab(BUNDLED_SET, None, None, handlers.table.load_preset("pyiqa"), "test-tiny-rn", T_SCALE)
    sent = handlers.lab.use_lab_pairs(lab.lab_table, Session())
    best = lab.lab_table.sort_values("SRCC", ascending=False)
    assert list(sent.prompts["positive"]) == list(best["positive"])
    expected_on = [i < 3 and srcc > 0 for i, srcc in enumerate(best["SRCC"])]
    assert list(sent.prompts["on"]) == expected_on and sent.preset == "custom"


def test_an_adaptation_that_stops_early_says_so(handlers, session, monkeypatch):
    def stops_early(store, images, steps, lam, on_step):
        model = GRMPModel(
            GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=store.backbone.pretrained), store.backbone
        )
        model.config.training = {"best_step": 5, "val_srcc": 0.5, "val_plcc": 0.4}
        for step in range(1, 8):
            on_step(step, 1 / step, None)
        return model, []

    monkeypatch.setattr("iqa.app.gpu.adapt_seed", stops_early)
    last = list(handlers.adapting.adapt(BUNDLED_SET, None, None, 1.0, 40, "test-tiny-rn", session))[-1]
    assert "stopped early after 7 of 40 steps" in last.checkpoint["choices"][-1][0]
    assert "Stopped early at step 7 of 40" in last.adapt_status


OVERALL = "overall (weighted mean of the pairs)"


def test_quality_map_follows_the_chosen_photo_and_a_prompt_edit_redraws_from_cached_windows(handlers, tmp_path):
    files = []
    for name in ("astronaut", "chelsea"):
        image = Image.fromarray(getattr(skimage_data, name)())
        image.thumbnail((400, 400))
        files.append(str(tmp_path / f"{name}.jpg"))
        image.save(files[-1])
    session = handlers.photos.add_photos(files, Session()).session
    table = handlers.table.load_preset("seed")
    score(handlers, session, table)
    closed = handlers.scoring.refresh_map(session, table, "test-tiny-rn", T_SCALE, "astronaut.jpg", OVERALL)
    assert closed.quality_map is None and closed.map_status == ""  # never computed with a re-score unasked

    drawn = handlers.scoring.draw_map(session, table, "test-tiny-rn", T_SCALE, "astronaut.jpg", OVERALL)
    figure = drawn.quality_map
    assert figure.layout.title.text.startswith("Quality map of astronaut.jpg") and "astronaut.jpg" in drawn.map_status
    assert [trace.type for trace in figure.data] == ["image", "heatmap"]
    assert drawn.map_pair["choices"] == [OVERALL, *(f"{p} / {n}" for p, n in table[["positive", "negative"]].values)]
    assert figure.layout.paper_bgcolor == "rgba(0,0,0,0)"  # transparent: the page's theme shows through

    store = handlers.models.store("test-tiny-rn")
    encoded, texts = store.images_encoded, store.texts_encoded
    edited = table.copy()
    edited.loc[0, "positive"] = "a crisp, well exposed photo"
    score(handlers, session, edited)
    redrawn = handlers.scoring.refresh_map(session, edited, "test-tiny-rn", T_SCALE, "astronaut.jpg", OVERALL)
    assert store.images_encoded == encoded and store.texts_encoded == texts + 1  # windows from the cache
    assert list(redrawn.quality_map.data[1].z.flat) != list(figure.data[1].z.flat)  # the new pair's values

    one_pair = f"{edited.loc[2, 'positive']} / {edited.loc[2, 'negative']}"
    by_pair = handlers.scoring.refresh_map(session, edited, "test-tiny-rn", T_SCALE, "astronaut.jpg", one_pair)
    assert by_pair.map_pair["value"] == one_pair and "p(a sharp photo)" in by_pair.map_status
    gone = handlers.scoring.refresh_map(
        session, edited.drop(index=2), "test-tiny-rn", T_SCALE, "astronaut.jpg", one_pair
    )
    assert gone.map_pair["value"] == OVERALL  # the deleted pair is no longer offered or drawn

    other = handlers.scoring.refresh_map(session, edited, "test-tiny-rn", T_SCALE, "chelsea.jpg", OVERALL)
    assert other.quality_map.layout.title.text.startswith("Quality map of chelsea.jpg")
    assert tuple(other.quality_map.layout.yaxis.range) == (266, 0) != tuple(figure.layout.yaxis.range)  # 400x266
    assert other.quality_map.data[0].source != figure.data[0].source  # the other photo under the map

    vit = handlers.scoring.refresh_map(session, edited, "test-tiny-vit", T_SCALE, "chelsea.jpg", OVERALL)
    assert "test-tiny-vit" in vit.map_status and "windows of 224 px" in vit.map_status  # the new backbone's map

    handlers.photos.clear_photos(session)
    assert (
        handlers.scoring.refresh_map(session, edited, "test-tiny-rn", T_SCALE, "chelsea.jpg", OVERALL).quality_map
        is None
    )


def test_a_photo_too_small_for_a_quality_map_gets_a_clear_message(handlers, session):
    table = handlers.table.load_preset("seed")
    score(handlers, session, table)
    small = next(p for p in session.photos if min(p.image.size) < 128)
    out = handlers.scoring.draw_map(session, table, "test-tiny-rn", T_SCALE, small.name, OVERALL)
    assert out.quality_map is None and "No quality map" in out.map_status and "128 px window" in out.map_status


def test_startup_checkpoints_stay_in_memory_whatever_is_uploaded(handlers, tmp_path):
    _seed_checkpoint(handlers, tmp_path / "startup")
    startup = str(tmp_path / "startup" / "tiny-seed")
    config = dataclasses.replace(handlers.config, grmp_checkpoints=[startup], max_grmp_models=1)
    models = Models(config)
    pinned = models.scorer(models.startup_checkpoints["tiny-seed"])
    uploads = []
    for k in range(1, 4):
        _seed_checkpoint(handlers, tmp_path / str(k), seed=k)
        uploads.append(CheckpointRef.of(tmp_path / str(k) / "tiny-seed"))
        models.scorer(uploads[-1])
    assert models.scorer(models.startup_checkpoints["tiny-seed"]) is pinned  # never evicted: not loaded again
    latest = models.scorer(uploads[-1])
    assert models.scorer(uploads[-1]) is latest  # the latest upload is kept...
    models.scorer(uploads[0])
    assert models.scorer(uploads[-1]) is not latest  # ...as the one besides the start-up one (max_grmp_models=1)
    assert models.scorer(models.startup_checkpoints["tiny-seed"]) is pinned


def test_messages_are_text_not_html(handlers, photo_files):
    """Gradio renders a notice as HTML: "<name>" is escaped, so the page shows it."""
    with pytest.raises(gr.Error) as refused:
        handlers.checkpoints.upload_checkpoint(photo_files[:1], Session())
    assert refused.value.message.endswith("&lt;name&gt;.json and &lt;name&gt;.safetensors")
    with pytest.raises(gr.Error) as missing:  # wrapped twice (choose_preset calls load_preset): escaped once
        handlers.table.choose_preset("<b>x</b> & y", Session())
    assert "'&lt;b&gt;x&lt;/b&gt; &amp; y'" in missing.value.message


def test_a_file_taken_out_of_the_upload_box_unscores_its_photo(handlers, photo_files):
    session = handlers.photos.add_photos(photo_files, Session()).session
    score(handlers, session, handlers.table.load_preset("seed"))
    removed = handlers.photos.remove_upload(session, gr.DeletedFileData(None, {"path": photo_files[0]}))
    assert [p.name for p in session.photos] == ["chelsea.jpg", "coffee.jpg"]
    assert [name for _, name in removed.gallery] == ["chelsea.jpg", "coffee.jpg"]
    assert "astronaut.jpg" not in session.thumbnails and photo_files[0] not in session.sources
    assert (
        list(score(handlers, session, handlers.table.load_preset("seed")).ranking["name"]).count("astronaut.jpg") == 0
    )
    assert (
        handlers.photos.add_photos(photo_files[1:], session).photo_info == "2 photo(s) ready."
    )  # never re-added unasked
    cleared = handlers.photos.clear_photos(session)
    assert cleared.files is None and cleared.outputs()[3] is None  # the upload box is emptied too
    assert handlers.photos.remove_upload(session, gr.DeletedFileData(None, {"path": photo_files[1]})).photo_info == (
        "No photos yet."
    )


def test_each_notice_once_and_a_clear_word_on_an_empty_table(handlers, capsys):
    session = Session(custom_table=handlers.table.load_preset("seed"))
    handlers.table.choose_preset("pyiqa", session)
    handlers.table.choose_preset("seed", session)
    assert capsys.readouterr().out.count("Your edited table is kept") == 1  # gr.Info prints outside Gradio
    empty = pd.DataFrame(columns=PROMPT_COLUMNS)
    with pytest.raises(gr.Error, match="the prompt table has no rows: add one first"):
        handlers.table.delete_row(empty, 1)


def test_a_page_event_gets_visibility_updates_and_an_api_client_plain_values():
    out = FilterOutput([], [], None, "list.csv", "1 kept", make_zip=True)
    page, api = as_outputs(lambda: out)(), as_values(lambda: out)()
    assert page[-1] == gr.update(visible=True) and page[2] == gr.update(value=None, visible=False)
    assert api == [[], [], None, "list.csv", "1 kept", None]  # no update dict, no page-only field


def test_the_lab_leaves_out_a_row_the_score_tab_marks_invalid(handlers, session):
    table = handlers.table.load_preset("seed")
    table.loc[len(table)] = [True, "sharp " * 80, "blurry", 1.0, ""]  # over the tokenizer's 77 tokens
    report = handlers.lab.run_lab(BUNDLED_SET, None, None, table, "test-tiny-rn", T_SCALE)
    assert len(report.lab_table) == 3  # ranked: the three readable pairs; the long row is left out
    calibrated = handlers.calibration.calibrate_filter(
        BUNDLED_SET, None, None, table, "test-tiny-rn", T_SCALE, "best F1", 0.9
    )
    assert "ROC AUC" in calibrated.cal_summary and "sharp sharp" not in calibrated.cal_summary


def test_a_method_that_cannot_be_scored_says_why_and_asks_for_no_gpu_call(handlers, session, monkeypatch):
    monkeypatch.setattr("iqa.app.calls.gpu.score", lambda job: pytest.fail("a GPU call for nothing"))
    out = handlers.scoring.score(
        session, handlers.table.load_preset("seed"), "test-tiny-rn", T_SCALE, "", 0.5, "GRMP-IQA", methods=["GRMP-IQA"]
    )
    assert "GRMP-IQA: choose a GRMP-IQA checkpoint first." in out.status
    assert list(out.ranking.columns[2:4]) == ["GRMP-IQA", "decision"] and set(out.ranking["GRMP-IQA"]) == {""}
    assert out.results_csv is None and out.scatter is None
    assert "no chosen method could score" in handlers.filtering.filter(session, 0.5, "GRMP-IQA").filter_summary


def test_every_registered_method_is_scored_by_the_app_and_maclip_follows_a_prompt_edit(
    photo_files, tmp_path, monkeypatch
):
    """The five methods chosen at once, every GPU job and reply pickled as ZeroGPU sends them: a
    score from each; a prompt edit re-scores MA-CLIP from its cached view features."""
    from multiprocessing.reduction import ForkingPickler

    from iqa.app import calls, gpu
    from iqa.clip.views import ViewStore

    def crossed(value):
        return ForkingPickler.loads(ForkingPickler.dumps(value))

    real = gpu.score
    monkeypatch.setattr(calls.gpu, "score", lambda job: (crossed(item) for item in real(crossed(job))))
    app = Handlers(Models(AppConfig(backbone="test-tiny-rn", work_dir=tmp_path)))
    chosen = [name for name in registry.names() if name != "GRMP-IQA"]  # GRMP-IQA needs a checkpoint
    assert {"CLIP-IQA", "CLIP-IQA+", "MA-CLIP", "QualiCLIP"} <= set(chosen)
    session = app.photos.add_photos(photo_files, Session()).session
    table = app.table.load_preset("pyiqa")
    first = app.scoring.score(session, table, "test-tiny-rn", T_SCALE, "", 0.5, "MA-CLIP", methods=chosen)
    assert list(first.ranking.columns[2 : 2 + len(chosen)]) == chosen
    assert all(0 <= float(cell) <= 1 for name in chosen for cell in first.ranking[name])
    views = ViewStore.over(app.scoring.app.models.store("test-tiny-rn"))
    encoded = views.image_encoder_calls
    assert encoded > 0
    edited = table.copy()
    edited.iloc[0, 1:3] = ["a crisp photo", "a smeared photo"]
    again = app.scoring.score(session, edited, "test-tiny-rn", T_SCALE, "", 0.5, "MA-CLIP", methods=chosen)
    assert views.image_encoder_calls == encoded  # the views' features came from the cache
    before = session.rows[0].results
    assert before["MA-CLIP"].pairs[0].positive == "a crisp photo"
    plus = [dict(zip(out.ranking["name"], out.ranking["CLIP-IQA+"])) for out in (first, again)]
    assert plus[0] == plus[1]  # its pair is learned: a prompt edit leaves it as it was


def test_the_rankings_widths_follow_its_columns():
    """Each chosen method's column fits its name; the fixed columns keep their widths; a long pair
    name is capped so a phone still shows the first scores."""
    from iqa.app.outputs import ranking_layout, ranking_update

    columns = ["#", "photo", "CLIP-IQA", "CLIP-IQA+", "QualiCLIP", "High contrast/Low contrast", "decision", "name"]
    datatype, widths = ranking_layout(columns)
    assert datatype == ["number", "html", "str", "str", "str", "str", "str", "str"]
    assert widths == ["32px", "52px", "80px", "90px", "90px", "110px", "76px", "300px"]
    update = ranking_update(pd.DataFrame(columns=columns))
    assert update["column_widths"] == widths and list(update["value"].columns) == columns
