"""The Prompt lab's calibration, pair search and learned weights, through the app's handlers."""

from __future__ import annotations

import threading

import gradio as gr
import pytest

from iqa.app import gpu
from iqa.app.config import AppConfig
from iqa.app.demo import Handlers
from iqa.app.lab_calibration import TARGETS
from iqa.app.lab_tab import BUNDLED_SET, UPLOADED_SET
from iqa.app.models import Models
from iqa.app.session import Session
from iqa.lab.calibration import calibrate, choose_point, point_at
from iqa.methods.prompts import PRESETS
from iqa.names import CLIP_IQA

T_SCALE = "checkpoint's logit scale"
PRECISION, RECALL, F1 = list(TARGETS)


@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    return Handlers(Models(AppConfig(backbone="test-tiny-rn", work_dir=tmp_path_factory.mktemp("work"))))


@pytest.fixture(scope="module")
def table(handlers):
    return handlers.table.load_preset("pyiqa")


def test_calibration_on_the_bundled_set_gives_the_bar_a_threshold_and_shows_the_mistakes(handlers, table):
    out = handlers.calibration.calibrate_filter(BUNDLED_SET, None, None, table, "test-tiny-rn", T_SCALE, RECALL, 0.6)
    assert "(64 photos: 40 reject, 24 keep)" in out.cal_summary
    assert round(out.cal_threshold, 3) == out.cal_threshold
    rejects = int(out.cal_summary.split("rejects ")[1].split(" of 40")[0])
    # recall 0.6 of 40 bad photos, unless the test backbone's close scores need a fourth decimal (then said)
    assert rejects >= 24 or "needs more than the bar's three decimals: threshold" in out.cal_summary
    assert f"**Threshold {out.cal_threshold:g}**" in out.cal_summary
    kept_bad = 40 - rejects
    assert len(out.cal_false_keeps or []) == min(kept_bad, 24)
    captions = [caption for _, caption in out.cal_false_keeps or []]
    scores = [float(c.rsplit(" · ", 1)[1]) for c in captions]
    assert scores == sorted(scores, reverse=True) and all(s >= out.cal_threshold for s in scores)
    assert all(float(c.rsplit(" · ", 1)[1]) <= out.cal_threshold for _, c in out.cal_false_rejects or [])
    assert out.cal_roc.data[1].name.startswith(f"{CLIP_IQA} (AUC") and len(out.cal_roc.data) == 1 + 1 + 5 + 1
    bar = handlers.calibration.use_threshold(out.cal_threshold)
    assert (bar.threshold, bar.method) == (out.cal_threshold, CLIP_IQA)


def test_the_threshold_counts_are_those_of_the_scores_the_app_gives(handlers, table, tmp_path):
    out = handlers.calibration.calibrate_filter(BUNDLED_SET, None, None, table, "test-tiny-rn", T_SCALE, F1, 0.9)
    labelled = handlers.lab.labelled_set(BUNDLED_SET, None, None)
    from iqa.app import calls
    from iqa.app.score_tab import TEMPERATURES

    store = handlers.models.store("test-tiny-rn")
    reply = calls.calibrate_labelled(handlers.models, store, PRESETS["pyiqa"], TEMPERATURES[T_SCALE], labelled)
    curves = calibrate(CLIP_IQA, reply.scores.numpy(), labelled.keep).curves
    bar = point_at(curves, round(choose_point(curves, "f1").threshold, 3))
    assert f"rejects {bar.rejected_bad} of 40 bad photos, loses {bar.rejected_good} of 24 good ones" in out.cal_summary


def test_calibration_refusals_are_messages(handlers, table, photo_files, tmp_path):
    scores_only = tmp_path / "scores.csv"
    scores_only.write_text("name,score\n" + "".join(f"{p.rsplit('/', 1)[1]},{i}\n" for i, p in enumerate(photo_files)))
    with pytest.raises(gr.Error, match="3 of 3 photos have no keep/reject label"):
        handlers.calibration.calibrate_filter(
            UPLOADED_SET, str(scores_only), photo_files, table, "test-tiny-rn", T_SCALE, F1, 0.9
        )
    with pytest.raises(gr.Error, match="calibrate the filter first"):
        handlers.calibration.use_threshold(None)


def test_uploads_may_carry_labels_alone(handlers, table, photo_files, tmp_path):
    labels = tmp_path / "labels.csv"
    rows = zip(photo_files, ["keep", "reject", "good"])
    labels.write_text("file,label\n" + "".join(f"{p.rsplit('/', 1)[1]},{label}\n" for p, label in rows))
    labelled = handlers.lab.labelled_set(UPLOADED_SET, str(labels), photo_files)
    assert (labelled.scores, labelled.keep) == ([1.0, 0.0, 1.0], [True, False, True])
    out = handlers.calibration.calibrate_filter(
        UPLOADED_SET, str(labels), photo_files, table, "test-tiny-rn", T_SCALE, F1, 0.9
    )
    assert "(3 photos: 1 reject, 2 keep)" in out.cal_summary


def test_pair_search_streams_progress_then_the_ranking_and_fills_the_table(handlers, table):
    steps = list(
        handlers.search.search_pairs(BUNDLED_SET, None, None, table, "test-tiny-rn", T_SCALE, "sunny / rainy", 3, 4)
    )
    progress, done = steps[:-1], steps[-1]
    assert progress and all(s.search_table is None and s.search_summary.startswith("Searching:") for s in progress)
    ranking = done.search_table
    assert list(ranking.columns) == ["rank", "figure", "tag", "positive", "negative", "selected"]
    assert "from 192 candidates" in done.search_summary  # (63 built-in + 1 typed attributes) x 3 templates
    selected = ranking[ranking["selected"] != ""].sort_values("selected")
    assert 1 <= len(selected) <= 3
    assert "64 photos (24 keep, 40 reject), 4 folds" in done.search_summary
    for line in ("selected pairs", "the prompt table:", "pyiqa preset:"):
        assert line in done.search_summary
    used = handlers.search.use_search_pairs(ranking, Session())
    assert list(used.prompts["positive"]) == list(selected["positive"]) and used.prompts["on"].all()


def test_a_stopped_search_ends_its_work(handlers, table, monkeypatch):
    """Stop closes the handler's generator (Gradio's cancel); the search's thread ends at its next report."""
    import iqa.lab.search

    monkeypatch.setattr(iqa.lab.search, "TEXT_CHUNK", 1)  # a report per candidate: 189 of them
    reported = []
    real = gpu.search_pairs

    def spying(*args, progress, **kwargs):
        def counted(done, total):
            reported.append(done)
            progress(done, total)

        return real(*args, progress=counted, **kwargs)

    monkeypatch.setattr(gpu, "search_pairs", spying)
    steps = handlers.search.search_pairs(BUNDLED_SET, None, None, table, "test-tiny-rn", T_SCALE, "", 3, 4)
    assert next(steps).search_summary.startswith("Searching:")
    steps.close()  # returns once the search's thread has ended
    assert 1 <= len(reported) < 189
    assert not any(t.name.startswith("iqa-gpu") for t in threading.enumerate())


def test_fitted_weights_go_into_the_table_with_their_report(handlers, table):
    session = Session()
    out = handlers.search.fit_weights(BUNDLED_SET, None, None, table, "test-tiny-rn", T_SCALE, 4, session)
    weights = list(out.prompts["weight"])
    assert max(weights) == 1.0 and min(weights) >= 0 and len(weights) == 5
    assert "fitted weights:" in out.fit_summary and "the table's own weights:" in out.fit_summary
    assert session.custom_table is not None
