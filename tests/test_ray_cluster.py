"""`score --engine ray --ray-address` on a multi-node cluster simulated on this machine.

`ray.cluster_utils.Cluster` (what Ray's own tests use) starts a head and worker nodes, each a
raylet of its own, all on 127.0.0.1; the head has no CPU, so the work runs on the workers. The
drivers are `python -m iqa score ...` processes, as a user runs them: decoding fans out over two
nodes, a node removed mid-job is survived, a job that can no longer run stops within its stall
timeout with one line and a re-run completes it. A head requiring token authentication (Ray
2.60's default for `ray start`) tells a driver without the setting so, in one line.
"""

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from iqa.methods.scoring import ScorerSpec, build_scorers  # noqa: E402
from iqa.photos.photo import open_photos  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PHOTOS = 16
NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}


@pytest.fixture(scope="module")
def cluster():
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0})
    yield cluster
    cluster.shutdown()


# A head of its own in another process: Ray reads RAY_AUTH_MODE once per process.
TOKEN_HEAD = """
import os, sys
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=sys.argv[1], RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, node_ip_address="127.0.0.1"))
print(cluster.address, flush=True)
sys.stdin.read()
cluster.shutdown()
"""


@pytest.fixture
def album(tmp_path):
    folder = tmp_path / "album"
    folder.mkdir()
    for path in sorted(EXAMPLES.glob("*.jpg"))[:PHOTOS]:
        shutil.copy(path, folder / path.name)
    return folder


def workers(cluster, count: int) -> list:
    """Add or remove worker nodes (the last added first) until `count` are alive."""
    nodes = list(cluster.worker_nodes)
    while len(nodes) < count:
        nodes.append(cluster.add_node(**NODE))
    while len(nodes) > count:
        cluster.remove_node(nodes.pop())
    cluster.wait_for_nodes()
    return nodes


def score_command(address: str, album: Path, dest: Path, *options: str) -> list[str]:
    return [
        sys.executable, "-m", "iqa", "score", str(album), "--backbone", "test-tiny-rn", "--pairs", "seed",
        "--engine", "ray", "--ray-address", address, "--out", str(dest), *options,
    ]  # fmt: skip


def score(cluster, album: Path, dest: Path, *options: str) -> subprocess.CompletedProcess:
    command = score_command(cluster.address, album, dest, *options)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


class Job:
    """A driver process; `started` is set once Ray Data starts executing its dataset, and `stopped`
    holds when (monotonic) a line starting with `error:` came."""

    def __init__(self, command: list[str]):
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.started = threading.Event()
        self.stopped: float | None = None
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if "Starting execution of Dataset" in line:
                self.started.set()
            if line.startswith("error:"):
                self.stopped = time.monotonic()

    def finish(self, timeout: float) -> tuple[int, str, str]:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.reader.join(timeout=10)
            pytest.fail(f"the driver did not exit within {timeout} s:\n{''.join(self.lines)[-3000:]}")
        self.reader.join(timeout=10)
        return code, self.process.stdout.read(), "".join(self.lines)


def rows(dest: Path) -> dict[str, dict]:
    table = pq.read_table(dest).to_pylist()
    assert len({row["path"] for row in table}) == len(table)  # no file twice
    return {row["path"]: row for row in table}


def test_decoding_fans_out_over_two_nodes_and_the_rows_equal_the_local_engine(cluster, album, tmp_path):
    workers(cluster, 2)
    result = score(cluster, album, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"scored {PHOTOS} photos, 0 unusable; decoded on 2 nodes" in result.stdout
    found = rows(tmp_path / "out")
    photos, _ = open_photos(sorted(album.glob("*.jpg")))
    spec = ScorerSpec(backbone="test-tiny-rn", options={"CLIP-IQA": {"pairs": "seed"}})
    for photo, local in zip(photos, build_scorers(spec)["CLIP-IQA"].score(photos)):
        row = found[str(photo.path.absolute())]
        assert row["clip_iqa"] == pytest.approx(local.score, abs=1e-5) and row["error"] is None
        for pair in local.pairs:
            assert row[f"p[{pair.positive} / {pair.negative}]"] == pytest.approx(pair.p, abs=1e-5)


def test_a_node_removed_mid_job_leaves_its_work_to_the_others(cluster, album, tmp_path):
    nodes = workers(cluster, 3)
    job = Job(score_command(cluster.address, album, tmp_path / "out", "--stall-timeout", "90"))
    assert job.started.wait(120), "".join(job.lines)[-3000:]
    cluster.remove_node(nodes[-1])
    code, out, err = job.finish(timeout=200)
    assert code == 0, err[-3000:]
    assert f"scored {PHOTOS} photos, 0 unusable" in out
    assert len(rows(tmp_path / "out")) == PHOTOS


def test_a_job_that_cannot_go_on_stops_within_its_stall_timeout_and_a_rerun_completes_it(cluster, album, tmp_path):
    nodes = workers(cluster, 1)
    dest = tmp_path / "out"
    job = Job(score_command(cluster.address, album, dest, "--stall-timeout", "15"))
    assert job.started.wait(120), "".join(job.lines)[-3000:]
    started = time.monotonic()
    cluster.remove_node(nodes[0])  # no CPU left anywhere: nothing can be decoded or scored
    code, out, err = job.finish(timeout=180)
    assert code == 3 and job.stopped is not None and job.stopped - started < 15 + 30, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the Ray job stalled: no photo scored for 15 s (")
    assert "0 of 0 CPU free" in last or "no CPU or GPU left" in last
    written = rows(dest) if any(dest.glob("*.parquet")) else {}
    workers(cluster, 1)
    result = score(cluster, album, dest)
    assert result.returncode == 0, result.stderr[-3000:]
    already = f", {len(written)} already in" if written else ";"  # rows scored before the stall, if any
    assert f"scored {PHOTOS - len(written)} photos, 0 unusable{already}" in result.stdout
    assert len(rows(dest)) == PHOTOS


def test_a_driver_without_the_token_setting_is_told_in_one_line(album, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    head = subprocess.Popen(
        [sys.executable, "-c", TOKEN_HEAD, secrets.token_hex(16)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        address = head.stdout.readline().strip()
        env["RAY_gcs_server_port_wait_time_s"] = "3"  # Ray's retries of a refused connection: 20 s by default
        env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token
        command = score_command(address, album, tmp_path / "out")
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        head.communicate(timeout=60)
    assert result.returncode == 3
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: Test backbone")]
    assert lines == [
        f"error: the Ray cluster at {address} requires token authentication: set RAY_AUTH_MODE=token, "
        "the head's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"
    ]
    assert not (tmp_path / "out").exists()
