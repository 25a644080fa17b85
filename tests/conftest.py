"""Shared fixtures: the test backbones, a few real photos from scikit-image, and the running app.

Test modules never import each other nor this file; helpers they share live in `tests/hostile.py`
and `tests/official_reference.py`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from iqa.clip.backbones import load_backbone
from iqa.engine.ray_engine import LOCAL_ONLY_VARIABLE
from iqa.photos.photo import Photo

# The local Ray of the Ray tests talks over 127.0.0.1 only; Ray reads this when it is imported,
# which a test module may do before the engine starts it.
os.environ.setdefault(LOCAL_ONLY_VARIABLE, "0")


@pytest.fixture(autouse=True, scope="session")
def _feature_cache_in_a_temporary_folder(tmp_path_factory):
    """The command line's feature cache (and that of processes the tests start) never in ~/.cache."""
    previous = os.environ.get("IQA_CACHE_DIR")
    os.environ["IQA_CACHE_DIR"] = str(tmp_path_factory.mktemp("iqa-cache"))
    yield
    if previous is None:
        os.environ.pop("IQA_CACHE_DIR", None)
    else:
        os.environ["IQA_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def rn_backbone():
    return load_backbone("test-tiny-rn")


@pytest.fixture(scope="session")
def vit_backbone():
    return load_backbone("test-tiny-vit")


@pytest.fixture(scope="session")
def photos() -> list[Photo]:
    """Three real photos of different sizes, downsized to keep the tests fast."""
    images = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee()}
    out = []
    for name, array in images.items():
        image = Image.fromarray(array)
        image.thumbnail((160, 160))
        out.append(Photo(name, image))
    return out


@pytest.fixture
def album(tmp_path, photos):
    """The three photos as JPEG files in a folder."""
    folder = tmp_path / "album"
    folder.mkdir()
    for photo in photos:
        photo.image.save(folder / f"{photo.name}.jpg")
    return folder


@pytest.fixture(scope="module")
def photo_files(photos, tmp_path_factory) -> list[str]:
    """The three photos saved as JPEG files, for uploads (paths as the app's upload handlers get them)."""
    folder = tmp_path_factory.mktemp("uploads")
    paths = []
    for photo in photos:
        path = folder / f"{photo.name}.jpg"
        photo.image.save(path, quality=92)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def pixels():
    """Three random 224x224 inputs for the model-level tests."""
    import torch

    return torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python app.py --test-backbone` with the Hugging Face Hub switched off, one per test module."""
    with running_app(tmp_path_factory.mktemp("app")) as url:
        yield url


ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running_app(folder: Path, *args: str, timeout: float = 90, env: dict[str, str] | None = None):
    """`python app.py --test-backbone ARGS` on a free port with the Hugging Face Hub switched off
    (`env` added to its environment); yields its URL once it answers, and stops it afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HOME": str(folder / "hf"),
        **(env or {}),
    }
    log = folder / "app.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py"), "--test-backbone", "--port", str(port), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: whatever it forks (ZeroGPU's workers) ends with it
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(url, process, log, timeout)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def _wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{log.read_text()}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"app.py did not answer at {url} within {timeout} s:\n{log.read_text()}")
