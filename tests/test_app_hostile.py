"""Hostile input against the app: the handlers called directly, then the served app through gradio_client.

Every case must give its clear message, and the app must go on serving (a good request afterwards
succeeds). Also the session memory budget, idle expiry, the security headers and what is served.
"""

from __future__ import annotations

import dataclasses
import re
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest
from conftest import running_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from hostile_app import CHECKPOINT_CASES, PHOTO_CASES, PROMPT_CASES, ZERO_WEIGHTS_MESSAGE, Case, good_checkpoint
from PIL import Image

from iqa.app.config import AppConfig, parse_args
from iqa.app.demo import Handlers
from iqa.app.models import Models
from iqa.app.session import Session, SessionBudget

ROOT = Path(__file__).resolve().parents[1]
T_SCALE = "checkpoint's logit scale"


def _params(cases: list[Case]):
    return [pytest.param(case, id=case.name) for case in cases]


@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    config = AppConfig(backbone="test-tiny-rn", work_dir=tmp_path_factory.mktemp("work"), max_side=256)
    return Handlers(Models(config))


@pytest.fixture(scope="module")
def good_photos(photos, tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("good")
    for photo in photos:
        photo.image.save(folder / f"{photo.name}.jpg")
    return [str(folder / f"{photo.name}.jpg") for photo in photos]


def _zero_weights(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(weight=0.0)


def _scores(handlers, session) -> pd.DataFrame:
    return handlers.scoring.score(
        session, handlers.table.load_preset("seed"), "test-tiny-rn", T_SCALE, "", 0.5, "CLIP-IQA"
    ).ranking


# --- handlers, called directly -----------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(PHOTO_CASES))
def test_hostile_photos_are_reported_by_name_and_good_ones_still_added(handlers, good_photos, case, tmp_path):
    files = [str(p) for p in case.make(tmp_path)]
    with pytest.warns(UserWarning):
        added = handlers.photos.add_photos([*files, good_photos[0]], Session())
    session, gallery, info = added.session, added.gallery, added.photo_info
    assert re.search(case.message, info), info
    assert len(session.photos) == 1 and len(gallery) == 1
    assert len(_scores(handlers, session)) == 1


@pytest.mark.parametrize("case", _params(CHECKPOINT_CASES))
def test_hostile_checkpoints_are_refused_with_their_reason_and_build_nothing(handlers, good_photos, case, tmp_path):
    session = handlers.photos.add_photos(good_photos, Session()).session
    stores, sentinel = set(handlers.models._stores), Path("/tmp/iqa-hostile-pickle-ran")
    sentinel.unlink(missing_ok=True)
    with pytest.raises(gr.Error, match=case.message) as caught:
        handlers.checkpoints.upload_checkpoint([str(p) for p in case.make(tmp_path)], session)
    assert "\n" not in str(caught.value)
    assert set(handlers.models._stores) == stores and not sentinel.exists()
    assert session.checkpoints == {} and not list((Path(session.folder) / "checkpoints").glob("*/*"))
    tensors, json_path = good_checkpoint(tmp_path / "good")
    choices = handlers.checkpoints.upload_checkpoint([str(json_path), str(tensors)], session).checkpoint
    out = handlers.scoring.score(
        session, handlers.table.load_preset("seed"), "test-tiny-rn", T_SCALE, choices["value"], 0.5, "GRMP-IQA"
    )
    assert out.ranking["GRMP-IQA"].ne("").all()


@pytest.mark.parametrize("case", _params(PROMPT_CASES))
def test_hostile_prompt_files_give_their_message(handlers, case, tmp_path):
    with pytest.raises(gr.Error, match=case.message):
        handlers.table.load_prompts(str(case.make(tmp_path)[0]))
    assert len(handlers.table.load_preset("seed")) == 3


def test_zero_weight_sum_is_a_clear_message_not_a_generic_error(handlers, good_photos):
    session = handlers.photos.add_photos(good_photos, Session()).session
    with pytest.warns(UserWarning, match=ZERO_WEIGHTS_MESSAGE):
        out = handlers.scoring.score(
            session, _zero_weights(handlers.table.load_preset("seed")), "test-tiny-rn", T_SCALE, "", 0.5, "CLIP-IQA"
        )
    assert re.search(ZERO_WEIGHTS_MESSAGE, out.status) and len(out.ranking) == 0
    assert len(_scores(handlers, session)) == 3


def test_unexpected_errors_become_a_message_too(handlers, monkeypatch, good_photos):
    session = handlers.photos.add_photos(good_photos, Session()).session
    monkeypatch.setattr("iqa.app.calls.gpu.score", lambda *a, **k: {}["boom"])
    with pytest.raises(gr.Error, match=r"internal error \(KeyError: 'boom'\); the server log has the details"):
        _scores(handlers, session)


def test_photos_are_downsized_on_upload_and_downloads_keep_the_original(handlers, tmp_path):
    big = tmp_path / "big.png"
    Image.effect_noise((3000, 2000), 40).convert("RGB").save(big)
    session = handlers.photos.add_photos([str(big)], Session()).session
    assert session.photos[0].image.size == (256, 171) and session.nbytes < 256 * 171 * 3 + 5000
    _scores(handlers, session)
    with zipfile.ZipFile(handlers.filtering.zip_kept(session, 0.0, "CLIP-IQA").kept_zip) as archive:
        assert archive.read("big.png") == big.read_bytes()


@pytest.mark.parametrize("max_side, kept, scored", [(0, (1500, 1000), (1500, 1000)), (1200, (1200, 800), (1200, 800))])
def test_max_side_is_what_uploads_keep_and_scoring_uses_and_zero_means_full_size(
    tmp_path, monkeypatch, max_side, kept, scored
):
    monkeypatch.setenv("IQA_MAX_SIDE", str(max_side))
    config = dataclasses.replace(parse_args(["--test-backbone"]), work_dir=tmp_path / "work", backbone="test-tiny-rn")
    assert config.max_side == max_side
    handlers = Handlers(Models(config))
    assert handlers.models.store("test-tiny-rn").preprocessor.max_side == (max_side or None)
    big = tmp_path / "big.png"
    Image.effect_noise((1500, 1000), 40).convert("RGB").save(big)
    session = handlers.photos.add_photos([str(big)], Session()).session
    assert session.photos[0].image.size == kept  # 0 never shrinks a photo to 1x1
    _scores(handlers, session)
    notes = session.rows[0].result("CLIP-IQA").notes
    assert not any("resized" in note for note in notes), notes  # scored at the size kept, not at 1024
    assert handlers.models.store("test-tiny-rn").preprocessor.target_size(kept) == scored


def test_the_memory_budget_drops_the_least_recently_used_sessions_photos(handlers, good_photos, monkeypatch):
    sessions = [handlers.photos.add_photos(good_photos, Session()).session for _ in range(3)]
    each = sessions[0].nbytes
    monkeypatch.setattr(handlers.app, "budget", SessionBudget(int(2.5 * each), ttl=3600))
    for session in sessions:
        handlers.app.budget.use(session)
    handlers.app.budget.use(sessions[1])  # now sessions[0] is the least recently used
    handlers.photos.add_photos(good_photos[:1], Session())  # a new session needs room
    assert sessions[0].photos == [] and len(sessions[1].photos) == len(sessions[2].photos) == 3
    with pytest.warns(UserWarning, match="dropped this session's photos \\(least recently used first\\)"):
        out = _score_output(handlers, sessions[0])
    assert out.status == "No photos to score."
    assert handlers.app.budget.total <= int(2.5 * each)


def _score_output(handlers, session):
    return handlers.scoring.score(
        session, handlers.table.load_preset("seed"), "test-tiny-rn", T_SCALE, "", 0.5, "CLIP-IQA"
    )


def test_one_session_cannot_take_more_than_the_budget(handlers, good_photos, monkeypatch):
    monkeypatch.setattr(handlers.app, "budget", SessionBudget(256 * 256 * 3 + 10, ttl=3600))
    with pytest.warns(UserWarning, match="the server's limit for all sessions"):
        added = handlers.photos.add_photos(good_photos, Session())
    session, info = added.session, added.photo_info
    assert len(session.photos) < len(good_photos) and "the rest were not added" in info


def test_idle_sessions_lose_their_photos_and_ended_ones_their_files(handlers, good_photos, monkeypatch):
    monkeypatch.setattr(handlers.app, "budget", SessionBudget(1 << 30, ttl=0.2))
    idle = handlers.photos.add_photos(good_photos, Session()).session
    time.sleep(0.3)
    handlers.photos.add_photos(good_photos[:1], Session())
    assert idle.photos == [] and "idle for more than 0.2 s" in idle.notice
    ended = handlers.photos.add_photos(good_photos, Session()).session
    folder = Path(ended.folder)
    assert any(folder.rglob("*.jpg"))
    handlers.app.end_session(ended)
    assert not folder.exists() and ended.photos == []


def test_idle_sessions_are_ended_without_any_request(handlers, good_photos, monkeypatch):
    monkeypatch.setattr(handlers.app, "budget", SessionBudget(1 << 30, ttl=0.2))
    session = handlers.photos.add_photos(good_photos, Session()).session
    folder = Path(session.folder)
    deadline = time.monotonic() + 10
    while (session.photos or folder.exists()) and time.monotonic() < deadline:  # the sweeper runs in its thread
        time.sleep(0.1)
    assert session.photos == [] and not folder.exists()


def test_a_checkpoint_path_the_session_was_not_given_is_not_loaded(handlers, good_photos, tmp_path):
    tensors, json_path = good_checkpoint(tmp_path)
    session = handlers.photos.add_photos(good_photos, Session()).session
    with pytest.warns(UserWarning, match="is not one of this session's checkpoints"):
        out = handlers.scoring.score(
            session,
            handlers.table.load_preset("seed"),
            "test-tiny-rn",
            T_SCALE,
            str(json_path.with_suffix("")),
            0.5,
            "GRMP-IQA",
        )
    assert out.ranking["GRMP-IQA"].eq("").all()


def test_allowed_backbones_are_loaded_at_start_and_accepted_for_uploads(tmp_path):
    config = AppConfig(backbone="test-tiny-vit", allow_backbones=["test-tiny-rn"], work_dir=tmp_path)
    handlers = Handlers(Models(config))
    assert handlers.models.upload_backbones == ("test-tiny-vit", "test-tiny-rn")
    tensors, json_path = good_checkpoint(tmp_path)
    choices = handlers.checkpoints.upload_checkpoint([str(json_path), str(tensors)], Session()).checkpoint
    assert choices["choices"][-1][0] == "tiny (uploaded)"
    assert parse_args(["--allow-backbone", "a", "--allow-backbone", "b"]).allow_backbones == ["a", "b"]


# --- the served app, through gradio_client -------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app with a short idle expiry, its temporary files in a folder of its own."""
    folder = tmp_path_factory.mktemp("served")
    (folder / "tmp").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder / "tmp"))
        with running_app(folder, "--session-ttl", "8") as url:
            yield url, folder / "tmp" / "iqa-app"


@pytest.fixture
def client(served, good_photos):
    client = Client(served[0], verbose=False)
    gallery, info = client.predict([handle_file(p) for p in good_photos], api_name="/add_photos")
    assert info.startswith("3 photo(s) ready.")
    return client


def _served_score(client, table=None, checkpoint="", method="CLIP-IQA"):
    table = table if table is not None else client.predict("seed", api_name="/load_preset")[0]
    return client.predict(table, "test-tiny-rn", T_SCALE, checkpoint, 0.5, method, api_name="/score")  # 9 outputs


@pytest.mark.parametrize("case", _params(PHOTO_CASES))
def test_served_hostile_photos(client, case, tmp_path):
    gallery, info = client.predict([handle_file(str(p)) for p in case.make(tmp_path)], api_name="/add_photos")
    assert re.search(case.message, info), info
    assert info.startswith("3 photo(s) ready.")
    assert len(_served_score(client)[1]["data"]) == 3


@pytest.mark.parametrize("case", _params(CHECKPOINT_CASES))
def test_served_hostile_checkpoints(client, case, tmp_path):
    with pytest.raises(AppError, match=case.message):
        client.predict([handle_file(str(p)) for p in case.make(tmp_path)], api_name="/upload_checkpoint")
    tensors, json_path = good_checkpoint(tmp_path / "good")
    chosen = client.predict([handle_file(str(json_path)), handle_file(str(tensors))], api_name="/upload_checkpoint")
    ranking = _served_score(client, checkpoint=chosen, method="GRMP-IQA")[1]  # the id, a plain value
    assert all(row[3] != "" for row in ranking["data"])


@pytest.mark.parametrize("case", _params(PROMPT_CASES))
def test_served_hostile_prompt_files(client, case, tmp_path):
    with pytest.raises(AppError, match=case.message):
        client.predict(handle_file(str(case.make(tmp_path)[0])), api_name="/load_prompts")
    assert len(_served_score(client)[1]["data"]) == 3


def test_served_zero_weight_sum_and_unknown_choices(client):
    table = client.predict("seed", api_name="/load_preset")[0]
    for row in table["data"]:
        row[3] = 0
    out = _served_score(client, table)  # no error: the rows and the status say why nothing is scored
    assert out[1]["data"] == [] and any(isinstance(v, str) and re.search(ZERO_WEIGHTS_MESSAGE, v) for v in out)
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(table, "ViT-bigG-14", T_SCALE, "", 0.5, "CLIP-IQA", api_name="/score")
    # a checkpoint is chosen by its id among the session's own: a path is no id, so nothing is loaded
    ranking = _served_score(client, checkpoint="/etc/passwd", method="GRMP-IQA")[1]
    assert len(ranking["data"]) == 3 and all(row[3] == "" for row in ranking["data"])
    assert len(_served_score(client)[1]["data"]) == 3


def test_served_responses_carry_security_headers_and_only_photos_are_served(served):
    url = served[0]
    with urllib.request.urlopen(url, timeout=10) as response:
        headers = response.headers
    assert headers["X-Frame-Options"] == "SAMEORIGIN" and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    photo = urllib.request.urlopen(f"{url}gradio_api/file={ROOT / 'examples' / 'astronaut.jpg'}", timeout=10)
    assert photo.status == 200 and photo.read(3) == b"\xff\xd8\xff"
    assert photo.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("make_examples.py", "labels.csv", "LICENSES.md"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}gradio_api/file={ROOT / 'examples' / name}", timeout=10)
        assert refused.value.code == 403


def test_served_sessions_expire_and_their_folders_are_removed(client, served):
    work_dir = served[1]
    _served_score(client)
    folders = [f for f in work_dir.iterdir() if f.is_dir()]
    assert folders
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(f.exists() for f in folders):
        time.sleep(0.5)
    assert not any(f.exists() for f in folders)
    assert (
        _served_score(client)[-2] == "No photos to score."
    )  # the status, before the GRMP-IQA note  # the session starts afresh


def test_help_states_the_limits_and_the_default_host(capsys, monkeypatch):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in (
        "127.0.0.1",
        "GRADIO_SERVER_NAME",
        "--max-file-size",
        "--max-photos",
        "--max-pixels",
        "--session-memory-mb",
        "--session-ttl",
        "--allow-backbone",
        "(default 30mb)",
        "(default 3600)",
    ):
        assert needle in text
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("IQA_SESSION_TTL", "30")
    config = parse_args([])
    assert config.host == "0.0.0.0" and config.session_ttl == 30
