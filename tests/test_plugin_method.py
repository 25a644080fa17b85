"""A method added from outside the package: registered in a few lines, it shows up in `score`,
`--out`, `eval`, the Ray rows, the CSV and the breakdown chart without any other file knowing it."""

import csv
from pathlib import Path

import numpy as np
import pytest
from toy_method import NAME

from iqa.cli.main import EXIT_OK, main
from iqa.methods.registry import Method, register, unregister
from iqa.methods.scoring import ScorerSpec, build_scorers
from iqa.report import charts
from iqa.report.compare import compare, rows_to_csv

TEST = ["--backbone", "test-tiny-rn"]


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


def test_the_apps_ranking_breakdown_and_csv_carry_the_toy(photos, tmp_path):
    from iqa.app.config import AppConfig
    from iqa.app.demo import Handlers
    from iqa.app.models import Models
    from iqa.app.session import Session

    handlers = Handlers(Models(AppConfig(backbone="test-tiny-rn", work_dir=tmp_path)))
    scorers = build_scorers(ScorerSpec(methods=("CLIP-IQA", NAME), backbone="test-tiny-rn"))
    session = Session(rows=compare(photos, list(scorers.values())))
    ranking = handlers.scoring.rerank(session, 0.5, NAME)
    assert NAME in ranking.ranking.columns
    assert "toy_score" in Path(ranking.results_csv).read_text().splitlines()[0]
    assert "toy light / toy dark" in handlers.scoring.breakdown(session, photos[0].name).data[0].y
