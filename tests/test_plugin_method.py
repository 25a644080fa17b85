"""A method added from outside the package: registered in a few lines, it shows up in `score`,
`--out`, `eval`, the Ray rows, the CSV and the breakdown chart without any other file knowing it."""

import csv
from pathlib import Path

import numpy as np
import pytest
from toy_method import NAME

from iqa.cli.main import EXIT_OK, main
from iqa.methods import registry
from iqa.methods.registry import Method, register, unregister
from iqa.methods.scoring import ScorerSpec, build_scorers
from iqa.report import charts
from iqa.report.compare import compare, rows_to_csv

TEST = ["--backbone", "test-tiny-rn"]
T_SCALE = "checkpoint's logit scale"


@pytest.fixture(autouse=True)
def toy():
    method = register(Method(NAME, "toy", "toy_score", "#123456", False, build="toy_method:build"))
    yield method
    unregister(NAME)


def test_score_and_out_rank_by_the_toy(album, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert main(["score", str(album), *TEST, "--method", "clipiqa,toy", "--out", str(out)]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[0].split()[:3] == ["rank", "CLIP-IQA", "TOY"]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 and all(0 <= float(row["score[TOY]"]) <= 1 for row in rows)


def test_eval_scores_the_toy(album, tmp_path, capsys):
    (album / "labels.csv").write_text("path,score\nastronaut.jpg,1\nchelsea.jpg,2\ncoffee.jpg,3\n")
    assert main(["eval", "--dataset", "csv", "--root", str(album), *TEST, "--method", "toy"]) == EXIT_OK
    assert "TOY on csv (3 images): SRCC" in capsys.readouterr().out


def test_ray_rows_csv_and_breakdown_carry_the_toy(album, photos, toy):
    from iqa.engine.ray_decode import DecodeBatch
    from iqa.engine.ray_engine import NODE_COLUMN, ScoreBatch

    spec = ScorerSpec(methods=("CLIP-IQA", NAME), backbone="test-tiny-rn")
    scorers = build_scorers(spec)
    rows = compare(photos, list(scorers.values()))
    assert "toy_score" in rows_to_csv(rows, 0.5, NAME).splitlines()[0]
    bars = charts.pair_breakdown(list(rows[0].results.values())).data[0]
    assert "toy light / toy dark" in bars.y and "#123456" in bars.marker.color
    unregister(NAME)  # an actor's process has never heard of it: the job brings the descriptor along
    files = sorted(album.iterdir())
    decoded = DecodeBatch(1024, True)({"bytes": [f.read_bytes() for f in files], "path": [str(f) for f in files]})
    batch = {**decoded.to_pydict(), NODE_COLUMN: ["here"] * len(files)}
    table = ScoreBatch(spec, [toy])({key: np.array(values, dtype=object) for key, values in batch.items()})
    assert all(0 <= score <= 1 for score in table.column("toy_score").to_pylist())


def test_the_app_chooses_scores_and_shows_the_toy_through_its_handlers(photo_files, tmp_path, monkeypatch):
    """The toy chosen in the Score tab's chooser: scored on the GPU path (every job and reply pickled,
    as ZeroGPU sends them), remembered, and in the ranking, breakdown, scatter, filter, CSV and share link."""
    import types
    from multiprocessing.reduction import ForkingPickler

    from iqa.app import calls, gpu
    from iqa.app.config import AppConfig
    from iqa.app.demo import Handlers
    from iqa.app.models import Models
    from iqa.app.session import Session

    def crossed(value):
        return ForkingPickler.loads(ForkingPickler.dumps(value))

    sent: list = []
    real = gpu.score

    def pickled(job):
        sent.append(crossed(job))
        return (crossed(item) for item in real(sent[-1]))

    monkeypatch.setattr(calls.gpu, "score", pickled)
    handlers = Handlers(Models(AppConfig(backbone="test-tiny-rn", work_dir=tmp_path)))
    session = handlers.photos.add_photos(photo_files, Session()).session
    table = handlers.table.load_preset("seed")
    both = ["CLIP-IQA", NAME]
    out = handlers.scoring.score(session, table, "test-tiny-rn", T_SCALE, "", 0.5, NAME, methods=both)
    assert list(out.ranking.columns[2:4]) == both and "GRMP-IQA" not in out.ranking.columns
    assert all(0 <= float(cell) <= 1 for cell in out.ranking[NAME])
    header, first = Path(out.results_csv).read_text().splitlines()[:2]
    assert "toy_score" in header and first.split(",")[header.split(",").index("toy_score")] != ""
    assert "toy light / toy dark" in out.breakdown.data[0].y
    assert all("toy light / toy dark" in side.y for side in out.side_by_side.data)  # both photos, mirrored
    assert out.scatter.layout.xaxis.title.text.startswith("CLIP-IQA")  # by default the first two chosen
    photo = out.photo_pick["value"]
    turned = handlers.scoring.choose_axes(session, NAME, "CLIP-IQA", photo).scatter
    assert turned.layout.xaxis.title.text.startswith(NAME) and turned.layout.yaxis.title.text.startswith("CLIP-IQA")
    assert f"the {NAME} score >=" in handlers.filtering.filter(session, 0.5, NAME).filter_summary
    edited = table.copy()
    edited.loc[0, "positive"] = "a crisp photo"
    handlers.scoring.score(session, edited, "test-tiny-rn", T_SCALE, "", 0.5, NAME, methods=both)
    toy_calls = [call for call in sent[-1].methods if call.name == NAME]
    assert toy_calls[0].photos == ()  # a prompt edit: the toy's results were remembered
    only_clip = handlers.scoring.score(session, table, "test-tiny-rn", T_SCALE, "", 0.5, NAME, methods=["CLIP-IQA"])
    assert NAME not in only_clip.ranking.columns and only_clip.scatter is None  # unchecked: its column goes
    query = handlers.share.share_query(table, "test-tiny-rn", T_SCALE, "", 0.5, NAME, [NAME, "CLIP-IQA"])
    restored = handlers.share.restore_shared(
        types.SimpleNamespace(query_params={"share": query.removeprefix("?share=")})
    )
    assert restored.methods == both and restored.method == NAME


def test_the_about_tab_describes_every_registered_method(toy):
    from iqa.app.about_tab import about_text

    text = about_text()
    assert f"### {NAME}" in text and "arXiv 2207.12396" in text and "The GRMP-IQA model this server uses" in text


def test_on_zerogpu_the_toy_is_built_at_start(tmp_path, monkeypatch):
    """A ZeroGPU worker loses what it loads: a method that keeps its scorer is built on the main thread."""
    from iqa.app import models as app_models
    from iqa.app.config import AppConfig

    monkeypatch.setattr(app_models, "on_zerogpu", lambda: True)
    models = app_models.Models(AppConfig(backbone="test-tiny-rn", work_dir=tmp_path))
    kept = [m.name for m in registry.methods() if not m.follows_prompts and not m.required]
    assert NAME in kept and "CLIP-IQA" not in kept and "GRMP-IQA" not in kept  # follows the table; needs a checkpoint
    assert [key[0] for key in models._methods] == kept
    built = next(scorer for key, scorer in models._methods.items() if key[0] == NAME)
    assert built.method == NAME and models.scorer_for(NAME, models.store("test-tiny-rn"), {}) is built
