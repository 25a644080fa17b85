"""The running app, driven through gradio_client: one server, started offline on the test backbone."""

import csv as csv_module
import json
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import running_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from iqa.app.share import decode_share
from iqa.methods import registry

pytestmark = pytest.mark.slow  # one app process for the module
ROOT = Path(__file__).resolve().parents[1]
T_SCALE = "checkpoint's logit scale"


@pytest.fixture(scope="module")
def client(server, photo_files):
    client = Client(server, verbose=False)
    gallery, info = client.predict([handle_file(str(p)) for p in photo_files], api_name="/add_photos")
    assert len(gallery) == 3 and info.startswith("3 photo(s) ready.")
    return client


def _score(client, table, checkpoint="", method="CLIP-IQA", threshold=0.5):
    """The score endpoint's outputs by name."""
    out = _plain(client.predict(table, "test-tiny-rn", T_SCALE, checkpoint, threshold, method, api_name="/score"))
    names = [
        "prompts",
        "ranking",
        "photo_pick",
        "breakdown",
        "compare_pick",
        "side_by_side",
        "scatter",
        "csv",
        "status",
        "grmp_note",
    ]
    return dict(zip(names, out, strict=True))


def _plain(output):
    """`output` once checked to hold no Gradio update dict at any depth: API clients get plain values."""
    text = json.dumps(output, default=str)
    assert '"__type__"' not in text, text[:300]
    return output


def test_startup_is_offline_and_the_page_warns_about_the_test_backbone(server):
    page = urllib.request.urlopen(server, timeout=10).read().decode()
    assert "Test backbone in use" in page


def test_full_scoring_round_trip_then_rescore_from_cache(client):
    table = client.predict("seed", api_name="/load_preset")[0]
    assert [row[1] for row in table["data"]] == ["a beautiful photo", "a professional photo", "a sharp photo"]
    out = _score(client, table)
    ranking, status = out["ranking"], out["status"]
    assert [row[-1] for row in out["prompts"]["data"]] == ["ok", "ok", "ok"]
    assert len(ranking["data"]) == 3 and ranking["headers"][2] == "CLIP-IQA"
    assert "test-tiny-rn" in status and "cpu" in status
    assert out["breakdown"]["type"] == "plotly" and out["scatter"] is None  # no GRMP-IQA: no empty scatter
    columns = ",".join(m.column for m in registry.methods())  # clip_iqa, grmp_iqa, and the others
    assert Path(out["csv"]).read_text().startswith(f"rank,name,{columns},decision")
    table["data"][0][1] = "a stunning photo"
    rescored = _score(client, table)
    reranked, status = rescored["ranking"], rescored["status"]
    assert "0 image(s) encoded" in status
    assert [r[2] for r in reranked["data"]] != [r[2] for r in ranking["data"]]


def test_prompt_rows_are_added_moved_and_deleted(client):
    table = client.predict("seed", api_name="/load_preset")[0]
    table = client.predict(table, api_name="/add_row")
    assert len(table["data"]) == 4
    table, row = client.predict(table, 3, api_name="/row_up")  # outputs named in RowOutput
    assert row == 2 and table["data"][1][1] == "a sharp photo"
    table = client.predict(table, 1, api_name="/delete_row")
    assert [r[1] for r in table["data"]] == ["a sharp photo", "a professional photo", ""]
    checked = _score(client, table)["prompts"]
    assert checked["data"][2][-1] == "invalid: the positive prompt is empty"


def test_bad_input_is_reported_and_the_server_keeps_serving(client, server, tmp_path):
    bad = tmp_path / "prompts.json"
    bad.write_text('[{"positive": "only one side"}]')
    with pytest.raises(AppError, match="needs 'positive' and 'negative'"):
        client.predict(handle_file(str(bad)), api_name="/load_prompts")
    other = Client(server, verbose=False)  # another user, with no photos yet
    assert other.predict(api_name="/clear_photos")[1] == "No photos yet."
    assert len(_score(client, client.predict("pyiqa", api_name="/load_preset")[0])["ranking"]["data"]) == 3


def test_the_api_is_one_plain_endpoint_per_action_and_the_page_events_are_not_in_it(client):
    """API clients get plain values and files: the CSV a path, not `{'__type__': 'update', ...}`."""
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/score", "/filter", "/zip_kept", "/add_photos", "/upload_checkpoint", "/adapt", "/share"} <= endpoints
    assert not endpoints & {"/rescore", "/filter_method", "/quality_map_pair"}  # the page's own events
    out = _score(client, client.predict("seed", api_name="/load_preset")[0])
    assert isinstance(out["csv"], str) and Path(out["csv"]).read_text().startswith("rank,name,clip_iqa")
    assert out["photo_pick"] == out["ranking"]["data"][0][-1]  # the photo shown: the best one
    assert isinstance(out["breakdown"], dict) and out["breakdown"]["type"] == "plotly"
    link = _plain(client.predict(*_share_args(out["prompts"]), api_name="/share"))
    assert link.startswith("?share=")


def test_score_takes_the_chosen_methods_and_the_link_carries_them(client):
    table = client.predict("seed", api_name="/load_preset")[0]
    both = _score(client, table)
    assert both["ranking"]["headers"][2:4] == ["CLIP-IQA", "GRMP-IQA"]  # on by default
    args = (table, "test-tiny-rn", T_SCALE, "", 0.5, "CLIP-IQA", None, None)
    only = _plain(client.predict(*args, ["CLIP-IQA"], api_name="/score"))
    assert only[1]["headers"][2:4] == ["CLIP-IQA", "decision"]  # GRMP-IQA unchecked: its column gone
    link = _plain(client.predict(*_share_args(table), ["GRMP-IQA"], api_name="/share"))
    assert decode_share(link.removeprefix("?share="))["methods"] == ["GRMP-IQA"]


def _share_args(table):
    return table, "test-tiny-rn", T_SCALE, "", 0.5, "CLIP-IQA"


def test_filter_and_downloads(client):
    _score(client, client.predict("seed", api_name="/load_preset")[0])
    kept, rejected, histogram, list_path, summary, kept_zip = _plain(
        client.predict(0.0, "CLIP-IQA", api_name="/filter")
    )
    assert len(kept) == 3 and rejected == [] and summary.startswith("3 kept, 0 rejected")
    assert histogram["type"] == "plotly" and kept_zip is None
    assert [row["decision"] for row in csv_module.DictReader(Path(list_path).open())] == ["keep"] * 3
    with zipfile.ZipFile(_plain(client.predict(0.0, "CLIP-IQA", api_name="/zip_kept"))) as archive:
        assert sorted(archive.namelist()) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]


def test_prompt_lab_and_adaptation_on_uploaded_labels(client, photo_files, tmp_path):
    csv = tmp_path / "scores.csv"
    csv.write_text("name,score\nastronaut.jpg,3\nchelsea.jpg,1\ncoffee.jpg,2\n")
    files = [handle_file(str(p)) for p in photo_files]
    table = client.predict("seed", api_name="/load_preset")[0]
    lab, chart, summary = client.predict(
        "uploaded photos + CSV", handle_file(str(csv)), files, table, "test-tiny-rn", T_SCALE, api_name="/prompt_lab"
    )
    assert len(lab["data"]) == 3 and "on 3 photos" in summary
    chart, status, checkpoint, download = _plain(  # AdaptOutput without the session
        client.predict(
            "uploaded photos + CSV", handle_file(str(csv)), files, 1.0, 10, "test-tiny-rn", api_name="/adapt"
        )
    )
    assert status.startswith("Done: 3 labelled photos") and len(download) == 2 and Path(download[0]).is_file()
    assert checkpoint.startswith("seed-adapted-1-")  # the new checkpoint's id, as /score takes it
    ranking = _score(client, table, checkpoint=checkpoint, method="GRMP-IQA")["ranking"]
    assert all(row[3] != "" for row in ranking["data"])


def test_quality_map_of_the_chosen_photo_and_a_clear_message_when_too_small(client):
    table = client.predict("seed", api_name="/load_preset")[0]
    _score(client, table)
    overall = "overall (weighted mean of the pairs)"
    pairs, figure, status = _plain(
        client.predict(table, "test-tiny-rn", T_SCALE, "astronaut.jpg", overall, api_name="/quality_map")
    )
    assert figure["type"] == "plotly" and status.startswith("Quality map of astronaut.jpg")
    assert pairs == overall and "Quality map of astronaut.jpg" in figure["plot"]
    sharp = "a sharp photo / a blurry photo"
    pairs, figure, status = client.predict(
        table, "test-tiny-rn", T_SCALE, "astronaut.jpg", sharp, api_name="/quality_map"
    )
    assert pairs == sharp and "p(a sharp photo)" in status
    _, figure, status = client.predict(table, "test-tiny-rn", T_SCALE, "chelsea.jpg", overall, api_name="/quality_map")
    assert figure is None and "No quality map" in status and "128 px" in status  # 160x106 px


def test_the_server_log_names_the_weights_device_and_precision(tmp_path):
    """A Space's operator reads only this log: the library's INFO lines are in it, one line each."""
    with running_app(tmp_path):
        pass
    log = (tmp_path / "app.log").read_text()
    assert "INFO iqa.clip.backbones: loaded backbone test-tiny-rn:" in log, log
    assert "INFO iqa.app.models: backbone test-tiny-rn ready: test-tiny-rn (random test weights) on cpu, fp32" in log


def test_the_lab_calibrates_searches_and_fits_weights_through_the_api(client):
    table = client.predict("pyiqa", api_name="/load_preset")[0]
    lab = ("bundled synthetic set (examples/)", None, [], table, "test-tiny-rn", T_SCALE)
    summary, threshold, roc, pr, false_keeps, false_rejects = client.predict(
        *lab, "best F1", 0.9, api_name="/calibrate"
    )
    assert "(64 photos: 40 reject, 24 keep)" in summary and f"Threshold {threshold:g}" in summary
    assert roc is not None and pr is not None
    assert client.predict(threshold, api_name="/use_threshold") == (threshold, "CLIP-IQA")
    ranking, search = client.predict(*lab, "sunny / rainy", 2, 3, api_name="/search_pairs")
    assert "from 192 candidates" in search and "64 photos (24 keep, 40 reject), 3 folds" in search
    assert ranking["headers"] == ["rank", "figure", "tag", "positive", "negative", "selected"]
    used = client.predict(ranking, api_name="/use_search")[0]
    assert 1 <= len(used["data"]) <= 2
    weighted, _preset, _saved, fitted = client.predict(*lab, 3, api_name="/fit_weights")
    assert max(row[3] for row in weighted["data"]) == 1.0 and "fitted weights:" in fitted
