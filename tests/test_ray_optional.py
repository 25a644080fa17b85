"""`score --engine ray` without Ray, its option checks, an address where no cluster listens (no Ray started)."""

import socket
import sys

import pytest

from iqa.cli.main import EXIT_INPUT, main


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


def test_an_address_where_no_cluster_listens_is_one_line_and_exit_3(tmp_path, capsys):
    pytest.importorskip("ray")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    args = ["score", "examples", "--backbone", "test-tiny-rn", "--engine", "ray", "--ray-address", address]
    assert main([*args, "--out", str(tmp_path / "out")]) == 3
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: cannot reach the Ray cluster at {address}: Connection refused"
    )


def test_ray_client_without_its_extra_names_the_package(monkeypatch, tmp_path, capsys):
    pytest.importorskip("ray")
    monkeypatch.setitem(sys.modules, "grpc", None)  # as when ray[client] is not installed
    args = ["score", "examples", "--engine", "ray", "--ray-address", "ray://127.0.0.1:10001"]
    assert main([*args, "--backbone", "test-tiny-rn", "--out", str(tmp_path / "out")]) == 3
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        'error: Ray Client (ray://) needs its extra: pip install "ray[client]" (or pip install ".[ray]")'
    )


def test_the_stall_timeout_must_be_a_positive_number(tmp_path, capsys):
    pytest.importorskip("ray")
    args = ["score", "examples", "--engine", "ray", "--out", str(tmp_path / "out"), "--stall-timeout", "0"]
    assert main(args) == EXIT_INPUT
    assert "--stall-timeout must be a positive number of seconds, not 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "node_cpus, gpus, actors, decode_tasks",
    [
        ([1], 0, 1, 2),  # one CPU: an actor and a decode task share it
        ([2], 0, 2, 4),
        ([1, 1], 0, 1, 4),  # either node alone must still hold the actor and a decode task
        ([1, 1, 1], 0, 3, 6),
        ([8, 8, 8, 8], 0, 32, 64),  # one actor per CPU where losing a node still leaves room
        ([8, 8], 4, 4, 32),  # GPUs: one actor each
    ],
)
def test_the_pool_sizes_follow_the_cluster(node_cpus, gpus, actors, decode_tasks):
    from iqa.engine.ray_engine import plan_resources

    plan = plan_resources(node_cpus, gpus)
    assert (plan.actors, plan.decode_tasks, plan.actor_gpus) == (actors, decode_tasks, 1 if gpus else 0)
