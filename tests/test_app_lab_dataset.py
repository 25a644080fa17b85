"""The Prompt lab on a labelled set on the server (`--lab-dataset NAME:DIR`), read through the disk cache."""

from __future__ import annotations

from pathlib import Path

from iqa.app.config import AppConfig, parse_args
from iqa.app.demo import Handlers
from iqa.app.lab_tab import BUNDLED_SET, server_set_label
from iqa.app.models import Models
from iqa.app.table import pairs_table
from iqa.methods.prompts import PRESETS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
T_SCALE = "checkpoint's logit scale"


def test_the_server_set_ranks_pairs_like_the_same_photos_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_CACHE_DIR", str(tmp_path / "cache"))
    spec = f"csv:{EXAMPLES / 'labels.csv'}"
    config = AppConfig(backbone="test-tiny-rn", work_dir=tmp_path / "work", lab_dataset=spec)
    handlers = Handlers(Models(config))
    label = server_set_label(handlers.models)
    assert label == f"server set: {spec} (64 photos)"
    assert handlers.models.lab_set is not None and handlers.models.lab_set.encoded == 64

    table = pairs_table(PRESETS["pyiqa"])
    server = handlers.lab.run_lab(label, None, None, table, "test-tiny-rn", T_SCALE)
    bundled = handlers.lab.run_lab(BUNDLED_SET, None, None, table, "test-tiny-rn", T_SCALE)
    assert "on 64 photos" in server.lab_summary
    assert server.lab_table["SRCC"].tolist() == bundled.lab_table["SRCC"].tolist()

    calibrated = [
        handlers.calibration.calibrate_filter(source, None, None, table, "test-tiny-rn", T_SCALE, "best F1", 0.9)
        for source in (label, BUNDLED_SET)
    ]
    assert calibrated[0].cal_threshold == calibrated[1].cal_threshold
    assert calibrated[0].cal_summary.split("\n\n")[:2] == calibrated[1].cal_summary.split("\n\n")[:2]
    assert "features only: no photos to show" in calibrated[0].cal_summary and calibrated[0].cal_false_keeps is None
    searched = [
        list(handlers.search.search_pairs(source, None, None, table, "test-tiny-rn", T_SCALE, "", 2, 3))[-1]
        for source in (label, BUNDLED_SET)
    ]
    assert searched[0].search_summary == searched[1].search_summary
    assert searched[0].search_table.equals(searched[1].search_table)

    again = Models(config)  # a restart: every feature comes from the disk cache
    assert again.lab_set is not None and again.lab_set.encoded == 0 and again.lab_set.from_cache == 64


def test_the_flag_and_its_variable(monkeypatch):
    monkeypatch.delenv("IQA_LAB_DATASET", raising=False)
    assert parse_args(["--test-backbone"]).lab_dataset is None
    assert (
        parse_args(["--test-backbone", "--lab-dataset", "koniq10k:/data/koniq"]).lab_dataset == "koniq10k:/data/koniq"
    )
    monkeypatch.setenv("IQA_LAB_DATASET", "spaq:/data/spaq")
    assert parse_args(["--test-backbone"]).lab_dataset == "spaq:/data/spaq"
