"""`score --engine ray` without Ray installed, and its option checks (no Ray started)."""

import sys

import pytest

from iqa.cli import EXIT_INPUT, main


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    assert main(["score", "examples", "--backbone", "test-tiny-rn", "--engine", "ray", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        'error: the Ray engine needs Ray: pip install "ray[data]" (or pip install ".[ray]" for this package)'
    ]


def test_the_ray_engine_needs_out_and_writes_parquet_only(capsys):
    pytest.importorskip("ray")
    assert main(["score", "examples", "--backbone", "test-tiny-rn", "--engine", "ray"]) == EXIT_INPUT
    assert "give --out DEST" in capsys.readouterr().err
    assert main(["score", "examples", "--engine", "ray", "--out", "x", "--csv", "y.csv"]) == EXIT_INPUT
    assert "--csv and --json are for the local engine" in capsys.readouterr().err
