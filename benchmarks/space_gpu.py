"""The app on dedicated GPU hardware (a T4, L4 or A10G Space), started as a Space starts it and driven
through gradio_client as a visitor; every step timed, one after another, in one run.

Steps: upload and score the first `--photos` count of 12 MP JPEGs, then up to the second count;
re-score after a prompt edit (features from the cache); a quality map; an adaptation of `--steps`
steps; every score also runs the default GRMP-IQA model, the official one (`--official`). Prints
each step's wall time as the visitor waits for it, and the app process's peak memory: CUDA (from
nvidia-smi) on a GPU, resident memory on the CPU.

Nothing can be downloaded on the benchmark machines, so the backbone has random weights
(`--pretrained none`) and `--official random` writes an official-layout file of random weights at
the release's full size (the generator the parity tests use): the compute is the real models', the
scores are meaningless. `--device cpu --smoke` runs it all on the test backbone in about a minute.

    python -m benchmarks.space_gpu [--device cuda] [--backbone RN50-quickgelu] [--photos 20,200] [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from gradio_client import Client, handle_file

from benchmarks.photoset import ensure_photos

ROOT = Path(__file__).resolve().parents[1]
T_SCALE = "checkpoint's logit scale"
OVERALL = "overall (weighted mean of the pairs)"
BUNDLED = "bundled synthetic set (examples/)"


class PeakMemory:
    """The largest memory the app process used, sampled twice a second: CUDA on a GPU, else resident."""

    def __init__(self, pid: int, cuda: bool):
        self.pid, self.cuda, self.peak_mib = pid, cuda, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.peak_mib = max(self.peak_mib, self._now())

    def _now(self) -> float:
        if not self.cuda:
            status = Path(f"/proc/{self.pid}/status").read_text()
            return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
        query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        rows = subprocess.run(query, capture_output=True, text=True, check=False).stdout.splitlines()
        return sum(float(used) for pid, used in (row.split(",") for row in rows if row) if int(pid) == self.pid)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mib


def official_file(kind: str, folder: Path, test_backbone: bool) -> str:
    """The official model to show: a file given, none, or one of random weights in the release's layout."""
    if kind != "random":
        return kind
    sys.path.insert(0, str(ROOT / "tests"))
    from official_reference import official_state, tiny_official_state

    from iqa.clip.backbones import load_backbone

    state = tiny_official_state(load_backbone("test-tiny-vit")) if test_backbone else official_state()
    path = folder / "random_official.pt"
    torch.save(state, path)
    return str(path)


def start_app(args: argparse.Namespace, folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--device", args.device]
    command += ["--backbone", args.backbone, "--pretrained", args.pretrained]
    command += ["--grmp-official", official_file(args.official, folder, args.backbone.startswith("test-"))]
    command += ["--max-photos", str(max(args.photos) + 10)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "IQA_CACHE_DIR": str(folder)}
    log = (folder / "app.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited with {process.returncode}:\n{(folder / 'app.log').read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"the app did not answer within 600 s:\n{(folder / 'app.log').read_text()}")


def timed(label: str, step: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    out = step()
    print(f"  {label:<52} {time.perf_counter() - start:8.2f} s", flush=True)
    return out


def drive(client: Client, photos: list[Path], counts: list[int], backbone: str, steps: int) -> None:
    config = client.config
    default = next(
        c["props"]["value"] for c in config["components"] if c.get("props", {}).get("label") == "GRMP-IQA checkpoint"
    )
    table = client.predict("seed", api_name="/load_preset")[0]
    added = 0
    for count in counts:
        batch = [handle_file(str(p)) for p in photos[added:count]]
        label = f"upload {count - added} photos ({count} in the session)"
        timed(label, lambda: client.predict(batch, api_name="/add_photos"))  # noqa: B023 - called at once
        added = count
        out = timed(
            f"score {count} photos (CLIP-IQA + GRMP-IQA)",
            lambda: client.predict(table, backbone, T_SCALE, default, 0.5, "CLIP-IQA", api_name="/score"),
        )
        print(f"    {out[8].splitlines()[0]}")
    edited = {**table, "data": [list(row) for row in table["data"]]}
    edited["data"][0][1] = "a crisp photo"
    out = timed(
        "re-score after a prompt edit",
        lambda: client.predict(edited, backbone, T_SCALE, default, 0.5, "CLIP-IQA", api_name="/score"),
    )
    print(f"    {out[8].splitlines()[0]}")
    first = Path(photos[0]).name
    timed(
        "quality map of one photo",
        lambda: client.predict(edited, backbone, T_SCALE, first, OVERALL, api_name="/quality_map"),
    )
    out = timed(
        f"adaptation, {steps} steps on the bundled set",
        lambda: client.predict(BUNDLED, None, [], 1.0, steps, backbone, api_name="/adapt"),
    )
    print(f"    {out[1].splitlines()[0][:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbone", default="RN50-quickgelu")
    parser.add_argument("--pretrained", default="none", help="open_clip tag; 'none': random weights (default)")
    parser.add_argument("--official", default="random", help="official GRMP-IQA file, 'random' (default) or 'none'")
    parser.add_argument("--photos", default="20,200", help="session sizes scored one after the other")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--photos-dir", type=Path, default=Path(tempfile.gettempdir()) / "iqa12mp")
    parser.add_argument("--smoke", action="store_true", help="the test backbone, 3 and 6 photos, 10 steps")
    args = parser.parse_args()
    if args.smoke:
        args.backbone, args.photos, args.steps = "test-tiny-rn", "3,6", 10
    args.photos = [int(n) for n in args.photos.split(",")]
    photos = ensure_photos(args.photos_dir, max(args.photos))
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_app(args, Path(tmp))
        memory = PeakMemory(process.pid, args.device.startswith("cuda"))
        try:
            print(f"app on {args.device} with {args.backbone} ({args.pretrained} weights), official: {args.official}")
            drive(Client(url, verbose=False), photos, args.photos, args.backbone, args.steps)
        finally:
            peak = memory.stop()
            process.terminate()
            process.wait(timeout=30)
        kind = "CUDA memory" if memory.cuda else "resident memory"
        print(f"  peak {kind} of the app process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
