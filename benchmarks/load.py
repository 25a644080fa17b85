"""Load benchmark: many concurrent gradio_client sessions against the served app, and its memory.

Starts `python app.py --test-backbone` on 127.0.0.1 (a free port, offline, its temporary files in
a folder of its own, a short idle expiry), then:
1. two identical rounds: N sessions at once (threads), each uploading the bundled example photos,
   scoring, and re-scoring after E prompt edits. Reported per round: errors, p50/p95 latency of
   each call, and the server's resident memory (RSS) afterwards. Target: RSS grows by at most 5%
   from the first round to the second.
2. once those sessions expired, a burst of B sessions each uploading L large photos (side S
   pixels, compressed PNGs), then waiting for them to expire. Target: RSS back within 10% of the
   idle figure.

The idle figure is taken after one warm-up session (which loads everything loaded lazily) has
expired. Every loop is bounded; the server is stopped at the end whatever happens.

    python benchmarks/load.py [--sessions 8] [--edits 3] [--burst 2] [--large 8] [--side 7000] [--ttl 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PHOTOS = [
    EXAMPLES / f"{name}.jpg"
    for name in ("astronaut", "chelsea", "coffee", "rocket", "astronaut_gaussian_blur_L5", "chelsea_jpeg_L5")
]
T_SCALE = "checkpoint's logit scale"
START_TIMEOUT = 120
CALL_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(folder: Path, ttl: float):
    """The app on a free port of 127.0.0.1; yields (url, pid)."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "TMPDIR": str(folder)}
    log = (folder / "app.log").open("w")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--test-backbone", "--port", str(port), "--session-ttl", str(ttl)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, process)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def wait_until_up(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"app.py exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"app.py did not answer within {START_TIMEOUT} s")


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process (VmHWM: its peak so far), from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


class Timings:
    """Latencies per call name and errors, from many threads."""

    def __init__(self):
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def call(self, client: Client, name: str, *args):
        start = time.perf_counter()
        try:
            result = client.submit(*args, api_name=name).result(timeout=CALL_TIMEOUT)
        except Exception as err:  # a benchmark counts every failure, whatever it is
            with self._lock:
                self.errors.append(f"{name}: {type(err).__name__}: {err}")
            return None
        with self._lock:
            self.latencies[name].append(time.perf_counter() - start)
        return result


def user_session(url: str, timings: Timings, photos: list[Path], edits: int) -> None:
    """One user: upload, score, then edit a prompt `edits` times (each edit re-scores)."""
    client = Client(url, verbose=False)
    if timings.call(client, "/add_photos", [handle_file(str(p)) for p in photos]) is None:
        return
    table = timings.call(client, "/load_preset", "seed")
    if table is None:
        return
    timings.call(client, "/score", table, "test-tiny-rn", T_SCALE, "", 0.5, "CLIP-IQA")
    for edit in range(edits):
        table["data"][0][1] = f"a photo, edit {edit}"
        timings.call(client, "/score", table, "test-tiny-rn", T_SCALE, "", 0.5, "CLIP-IQA")


def run_sessions(url: str, count: int, photos: list[Path], edits: int) -> Timings:
    timings = Timings()
    threads = [threading.Thread(target=user_session, args=(url, timings, photos, edits)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=CALL_TIMEOUT * (3 + edits))
    if any(thread.is_alive() for thread in threads):
        timings.errors.append("a session did not finish in time")
    return timings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(label: str, timings: Timings, rss: float, seconds: float) -> None:
    calls = ", ".join(
        f"{name} p50 {statistics.median(v):.2f} s / p95 {percentile(v, 0.95):.2f} s (n={len(v)})"
        for name, v in sorted(timings.latencies.items())
    )
    print(f"{label}: {seconds:.1f} s, {len(timings.errors)} error(s), RSS {rss:.0f} MiB; {calls}")
    for error in timings.errors[:5]:
        print(f"  error: {error}")


def large_photos(folder: Path, count: int, side: int) -> list[Path]:
    """Compressed PNGs of `side` x `side` pixels (a smooth gradient: a few hundred KB each)."""
    gradient = Image.linear_gradient("L").resize((side, side))
    paths = []
    for k in range(count):
        path = folder / f"large_{k}.png"
        flipped = gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        Image.merge("RGB", (gradient, gradient.rotate(90 * (k % 4)), flipped)).save(path)
        paths.append(path)
    return paths


def wait_for_expiry(pid: int, ttl: float, idle: float) -> float:
    """RSS once sessions have had time to expire (polled until within 10% of idle, at most 3 x ttl + 30 s)."""
    time.sleep(ttl + 2)
    deadline = time.monotonic() + 2 * ttl + 30
    rss = rss_mib(pid)
    while rss > 1.1 * idle and time.monotonic() < deadline:
        time.sleep(1)
        rss = rss_mib(pid)
    return rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions per round")
    parser.add_argument("--edits", type=int, default=3, help="prompt edits (re-scores) per session")
    parser.add_argument("--burst", type=int, default=2, help="sessions uploading large photos")
    parser.add_argument("--large", type=int, default=8, help="large photos per burst session")
    parser.add_argument("--side", type=int, default=7000, help="side of the large photos (7000: 49 MP)")
    parser.add_argument("--ttl", type=float, default=10, help="the server's idle expiry, seconds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="iqa-load-") as tmp, server(Path(tmp), args.ttl) as (url, pid):
        print(f"server {url} (pid {pid}), RSS at start {rss_mib(pid):.0f} MiB")
        run_sessions(url, 1, PHOTOS, args.edits)
        idle = wait_for_expiry(pid, args.ttl, float("inf"))
        print(f"idle (after a warm-up session expired): RSS {idle:.0f} MiB")
        rounds = []
        for number in (1, 2):
            start = time.perf_counter()
            timings = run_sessions(url, args.sessions, PHOTOS, args.edits)
            rounds.append(rss_mib(pid))
            report(
                f"round {number} ({args.sessions} sessions x {len(PHOTOS)} photos, {args.edits} edits)",
                timings,
                rounds[-1],
                time.perf_counter() - start,
            )
        growth = rounds[1] / rounds[0] - 1
        print(f"growth from round 1 to round 2: {growth:+.1%} (target <= +5%)")
        before = wait_for_expiry(pid, args.ttl, idle)
        print(f"once the rounds' sessions expired: RSS {before:.0f} MiB, {before / idle - 1:+.1%} from idle")
        start = time.perf_counter()
        timings = run_sessions(url, args.burst, large_photos(Path(tmp), args.large, args.side), 0)
        report(
            f"burst ({args.burst} sessions x {args.large} photos of {args.side}x{args.side})",
            timings,
            rss_mib(pid),
            time.perf_counter() - start,
        )
        print(f"peak RSS so far (during the burst's decoding): {rss_mib(pid, 'VmHWM'):.0f} MiB")
        after = wait_for_expiry(pid, args.ttl, idle)
        print(f"after the sessions expired: RSS {after:.0f} MiB, {after / idle - 1:+.1%} from idle (target <= +10%)")
        ok = growth <= 0.05 and after <= 1.1 * idle and not timings.errors
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
