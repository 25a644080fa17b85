"""Hostile GRMP checkpoint JSON: every bad config is refused with one line before anything is built."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from iqa.methods.grmp.checkpoint import (
    MAX_JSON_BYTES,
    CheckpointError,
    check_checkpoint,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from iqa.methods.grmp.model import GRMPConfig, GRMPModel


@pytest.fixture
def seed_checkpoint(rn_backbone, tmp_path):
    model = GRMPModel(
        GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=rn_backbone.pretrained), rn_backbone
    )
    return save_checkpoint(model, tmp_path / "tiny")


def _edit(json_path, **config):
    meta = json.loads(json_path.read_text())
    meta["config"].update(config)
    json_path.write_text(json.dumps(meta))


def _refused(path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as caught:
        check_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and "tiny." in message
    return message


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("mlp_hidden", "16", "mlp_hidden must be int, got str '16'"),
        ("mlp_hidden", 16.0, "mlp_hidden must be int, got float"),
        ("n_ctx", True, "n_ctx must be int, got bool"),
        ("class_specific", "yes", "class_specific must be bool"),
        ("pretrained", 5, "pretrained must be str or null"),
        ("class_texts", ["good", 3], "class_texts must be a list of two strings"),
        ("training", [], "training must be dict"),
        ("mlp_hidden", 100_000_000, "mlp_hidden must be between 1 and 4096, got 100000000"),
        ("n_ctx", 0, "n_ctx must be between 1 and 64"),
        ("vpt_tokens", -1, "vpt_tokens must be between 0 and 1024"),
        ("seed", -5, "seed must be between 0 and"),
        ("backbone", "x" * 5000, "backbone is longer than 1000 characters"),
    ],
)
def test_config_fields_of_the_wrong_type_or_size_are_refused(seed_checkpoint, field, value, match):
    tensors, json_path = seed_checkpoint
    _edit(json_path, **{field: value})
    _refused(json_path, f"tiny.json holds an invalid GRMP config: {match}")


def test_missing_fields_and_a_config_that_is_not_an_object(seed_checkpoint):
    _, json_path = seed_checkpoint
    meta = json.loads(json_path.read_text())
    del meta["config"]["backbone"]
    json_path.write_text(json.dumps(meta))
    _refused(json_path, "missing GRMP config fields: backbone")
    json_path.write_text(json.dumps({**meta, "config": [1, 2]}))
    _refused(json_path, "the config must be a JSON object, got list")


@pytest.mark.parametrize("version", ["1", 1.0, None, [1]])
def test_a_format_version_that_is_not_an_integer_is_refused(seed_checkpoint, version):
    _, json_path = seed_checkpoint
    meta = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**meta, "format_version": version}))
    _refused(json_path, "tiny.json: format_version must be an integer")


def test_deep_nesting_and_oversized_files_are_refused_before_use(seed_checkpoint):
    _, json_path = seed_checkpoint
    json_path.write_text("[" * 200_000 + "]" * 200_000)
    _refused(json_path, "nested more than 32 levels deep")
    meta = json.loads(json.dumps({"format": "iqa-grmp", "config": {}}))
    inner = meta
    for _ in range(100):  # deep, but shallow enough for the parser: caught after parsing
        inner["x"] = {}
        inner = inner["x"]
    json_path.write_text(json.dumps(meta))
    _refused(json_path, "nested more than 32 levels deep")
    json_path.write_text(" " * (MAX_JSON_BYTES + 1))
    _refused(json_path, f"{MAX_JSON_BYTES + 1:,} bytes, more than")


def test_sizes_are_checked_against_the_tensor_header_before_building(seed_checkpoint):
    tensors, json_path = seed_checkpoint
    _edit(json_path, mlp_hidden=4096)
    tracemalloc.start()
    try:
        with pytest.raises(
            CheckpointError,
            match=r"tensor 'head.mlp.0.weight' has shape \[16, 2\], which does "
            r"not fit the config in tiny.json \(.*mlp_hidden=4096",
        ):
            load_checkpoint(json_path, backbone=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # nothing of the model was built (the backbone was not even loaded)
    _edit(json_path, mlp_hidden=16, n_ctx=8)
    _refused(json_path, "'prompt_learner.ctx' has shape \\[4, 32\\]")
    _edit(json_path, n_ctx=4)
    assert check_checkpoint(json_path) == read_config(json_path)


def test_unreadable_or_incomplete_tensor_files_are_named(seed_checkpoint, tmp_path):
    tensors, json_path = seed_checkpoint
    tensors.write_bytes(b"")
    _refused(json_path, "tiny.safetensors is not a readable safetensors file")
    tensors.unlink()
    _refused(json_path, "tiny.safetensors do not exist")
