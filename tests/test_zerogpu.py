"""The app as a ZeroGPU Space runs it: the real `spaces` package in its ZeroGPU mode, with only the
GPU scheduler's calls and the copy onto a GPU replaced (tests/zerogpu/sitecustomize.py), driven
through gradio_client as a visitor. Every request's torch work must cross the GPU boundary: CUDA
anywhere else raises there, and every argument and result is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, running_app
from gradio_client import Client, handle_file
from official_reference import tiny_official_state

from iqa.clip.backbones import load_backbone
from iqa.clip.features import FeatureStore
from iqa.methods.clipiqa.scorer import CLIPIQA
from iqa.methods.grmp.checkpoint import save_checkpoint
from iqa.methods.grmp.model import GRMPConfig, GRMPModel
from iqa.methods.grmp.scorer import GRMPScorer
from iqa.methods.prompts import PRESETS
from iqa.names import DEFAULT_MAX_SIDE
from iqa.photos.decode import open_bounded

pytestmark = pytest.mark.slow  # one app process for the module
T_SCALE = "checkpoint's logit scale"
FILES = ["astronaut.jpg", "chelsea_gaussian_blur_L5.jpg", "coffee_gaussian_noise_L3.jpg", "rocket.jpg"]
FP16 = 5e-3  # the app computes in fp16 when it sees CUDA; the references here in fp32


@pytest.fixture(scope="module")
def zerogpu(tmp_path_factory):
    """The served app under emulated ZeroGPU, with an official-layout GRMP-IQA file as its default model;
    yields (client, scheduler log, official file)."""
    folder = tmp_path_factory.mktemp("zerogpu")
    official = folder / "tiny_official.pt"
    torch.save(tiny_official_state(load_backbone("test-tiny-vit")), official)
    log = folder / "scheduler.jsonl"
    env = {
        "PYTHONPATH": str(ROOT / "tests" / "zerogpu"),
        "IQA_ZEROGPU_LOG": str(log),
        "ZEROGPU_OFFLOAD_DIR": str(folder / "offload"),
        "IQA_CACHE_DIR": str(folder / "cache"),
    }
    with running_app(folder, "--grmp-official", str(official), env=env, timeout=150) as url:
        client = Client(url, verbose=False)
        yield client, log, official


def _events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _references(official: Path):
    """The same photos, pairs and models without ZeroGPU, in fp32 on the CPU: what the app must show."""
    store = FeatureStore(load_backbone("test-tiny-rn"), max_side=DEFAULT_MAX_SIDE)
    photos = [open_bounded(ROOT / "examples" / name, name, DEFAULT_MAX_SIDE) for name in FILES]
    from iqa.methods.grmp.official import import_official

    grmp = GRMPScorer(import_official(official, device="cpu"))
    clip = {r.name: r.score for r in CLIPIQA(store, PRESETS["seed"]).score(photos)}
    return store, photos, clip, {r.name: r.score for r in grmp.score(photos)}


def _by_name(ranking: dict, column: int) -> dict[str, float]:
    return {row[-1]: float(row[column]) for row in ranking["data"] if row[column] != ""}


def test_a_visitor_session_works_end_to_end_through_the_gpu_scheduler(zerogpu, tmp_path):
    client, log, official = zerogpu
    store, photos, clip, grmp = _references(official)
    gallery, info = client.predict([handle_file(str(ROOT / "examples" / n)) for n in FILES], api_name="/add_photos")
    assert info.startswith("4 photo(s) ready.")
    config = client.view_api(return_format="dict", print_info=False)
    assert "/score" in config["named_endpoints"]

    table = client.predict("seed", api_name="/load_preset")[0]
    default = _default_checkpoint(client)
    out = client.predict(table, "test-tiny-rn", T_SCALE, default, 0.5, "CLIP-IQA", api_name="/score")
    ranking, status = out[1], out[8]
    assert "on cuda, fp16" in status, status  # the app saw CUDA (ZeroGPU's), and chose half precision
    for name, score in _by_name(ranking, 2).items():
        assert score == pytest.approx(clip[name], abs=FP16)
    for name, score in _by_name(ranking, 3).items():
        assert score == pytest.approx(grmp[name], abs=FP16)
    assert set(_by_name(ranking, 3)) == set(FILES)  # the official GRMP-IQA model scored every photo

    edited = dict(table)
    edited["data"] = [list(row) for row in table["data"]]
    edited["data"][0][1] = "a crisp photo"
    again = client.predict(edited, "test-tiny-rn", T_SCALE, default, 0.5, "CLIP-IQA", api_name="/score")
    assert "0 image(s) encoded" in again[8]  # a prompt edit: features from this process's caches
    pairs = [*PRESETS["seed"]]
    pairs[0] = type(pairs[0])("a crisp photo", pairs[0].negative, pairs[0].weight)
    expected = {r.name: r.score for r in CLIPIQA(store, pairs).score(photos)}
    for name, score in _by_name(again[1], 2).items():
        assert score == pytest.approx(expected[name], abs=FP16)

    vit = client.predict(table, "test-tiny-vit", T_SCALE, default, 0.5, "CLIP-IQA", api_name="/score")
    assert "on test-tiny-vit" in vit[8] and len(_by_name(vit[1], 2)) == len(FILES)  # loaded at start, not now

    choices, figure, message = client.predict(
        edited,
        "test-tiny-rn",
        T_SCALE,
        "astronaut.jpg",
        "overall (weighted mean of the pairs)",
        api_name="/quality_map",
    )
    assert "Quality map of astronaut.jpg" in message and figure is not None

    lab_table, _, summary = client.predict(
        "bundled synthetic set (examples/)", None, [], edited, "test-tiny-rn", T_SCALE, api_name="/prompt_lab"
    )
    assert len(lab_table["data"]) == 3 and "photos" in summary

    job = client.submit("bundled synthetic set (examples/)", None, [], 1.0, 30, "test-tiny-rn", api_name="/adapt")
    outputs = list(job)
    final = job.result()
    assert len(outputs) >= 2 and "Done:" in final[1], final[1]  # the steps streamed, then the checkpoint
    assert any("Step " in o[1] for o in outputs[:-1])

    tensors, config = _seed_checkpoint(tmp_path)
    uploaded = client.predict([handle_file(str(config)), handle_file(str(tensors))], api_name="/upload_checkpoint")
    scored = client.predict(table, "test-tiny-rn", T_SCALE, uploaded, 0.5, "GRMP-IQA", api_name="/score")
    assert len(_by_name(scored[1], 3)) == len(FILES) and "GRMP-IQA (seed)" in scored[8]

    events = _events(log)
    schedules = [e for e in events if e["event"] == "schedule"]
    assert len(schedules) >= 8, events  # score, score again, another backbone, map, lab, adapt, upload check, its score
    assert all(e["request"] for e in schedules)  # each with the visitor's request (their quota, their token)
    assert all(10 <= e["duration"] <= 100 for e in schedules)  # within a free visitor's quota
    assert max(e["duration"] for e in schedules) > 10  # the adaptation asked for its steps' time
    releases = [e for e in events if e["event"] == "release"]
    assert len(releases) == len(schedules) and not any(e["fail"] for e in releases)
    # (ZeroGPU's warnings of a call outlasting its duration mean nothing here: fp16 on the CPU is slow)


def _default_checkpoint(client: Client) -> str:
    config = client.config
    values = [
        c["props"]["value"] for c in config["components"] if c.get("props", {}).get("label") == "GRMP-IQA checkpoint"
    ]
    assert len(values) == 1 and values[0]
    return values[0]


def _seed_checkpoint(folder: Path):
    backbone = load_backbone("test-tiny-rn")
    config = GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=backbone.pretrained, seed=3)
    return save_checkpoint(GRMPModel(config, backbone), folder / "uploaded-seed")
