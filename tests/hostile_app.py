"""A corpus of hostile inputs for the app: each case writes its files and says what the app must answer.

Used by tests/test_app_hostile.py against the handlers and the served app alike. `message` is a
regular expression the app's answer (an error, or the photo summary) must match.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from iqa.clip.backbones import load_backbone
from iqa.methods.grmp.checkpoint import save_checkpoint
from iqa.methods.grmp.model import GRMPConfig, GRMPModel


@dataclass
class Case:
    name: str
    make: Callable[[Path], list[Path]]  # writes the files into a folder, returns them
    message: str


class Payload:
    """Unpickling this runs code: a checkpoint loader must never unpickle an upload."""

    def __reduce__(self):
        return (Path("/tmp/iqa-hostile-pickle-ran").touch, ())


# --- photos (the upload box) ---------------------------------------------------------------------


def _corrupt(folder: Path) -> list[Path]:
    path = folder / "corrupt.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 200)
    return [path]


def _text_as_jpg(folder: Path) -> list[Path]:
    path = folder / "notes.jpg"
    path.write_text("these are not pixels\n" * 20)
    return [path]


def _empty_photo(folder: Path) -> list[Path]:
    path = folder / "empty.jpg"
    path.write_bytes(b"")
    return [path]


def _strip(folder: Path) -> list[Path]:
    path = folder / "strip.png"
    Image.new("RGB", (40000, 1), (120, 60, 30)).save(path)
    return [path]


PHOTO_CASES = [
    Case("corrupt photo", _corrupt, r"corrupt\.jpg: image is corrupt"),
    Case("text file named .jpg", _text_as_jpg, r"notes\.jpg: not an image file \(looks like a text file\)"),
    Case("empty photo", _empty_photo, r"empty\.jpg: file is empty \(0 bytes\)"),
    Case("40000x1 strip", _strip, r"strip\.png: .*(aspect|thin|ratio)"),
]


# --- GRMP checkpoint uploads ---------------------------------------------------------------------


def good_checkpoint(folder: Path, stem: str = "tiny") -> tuple[Path, Path]:
    """A valid seed checkpoint on the test backbone the test servers start with."""
    backbone = load_backbone("test-tiny-rn")
    model = GRMPModel(GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=backbone.pretrained), backbone)
    return save_checkpoint(model, folder / stem)


def _edited(**config) -> Callable[[Path], list[Path]]:
    def make(folder: Path) -> list[Path]:
        tensors, json_path = good_checkpoint(folder)
        meta = json.loads(json_path.read_text())
        meta["config"].update(config)
        json_path.write_text(json.dumps(meta))
        return [json_path, tensors]

    return make


def _string_version(folder: Path) -> list[Path]:
    tensors, json_path = good_checkpoint(folder)
    meta = json.loads(json_path.read_text())
    json_path.write_text(json.dumps({**meta, "format_version": "1"}))
    return [json_path, tensors]


def _deep(folder: Path) -> list[Path]:
    tensors, json_path = good_checkpoint(folder)
    json_path.write_text("[" * 200_000 + "]" * 200_000)
    return [json_path, tensors]


def _pickle(folder: Path) -> list[Path]:
    tensors, json_path = good_checkpoint(folder)
    tensors.write_bytes(pickle.dumps({"weights": Payload()}))
    return [json_path, tensors]


def _empty_checkpoint(folder: Path) -> list[Path]:
    paths = [folder / "tiny.json", folder / "tiny.safetensors"]
    for path in paths:
        path.write_bytes(b"")
    return paths


CHECKPOINT_CASES = [
    Case("malicious pickle as tensors", _pickle, r"tiny\.safetensors is not a readable safetensors file"),
    Case("empty files", _empty_checkpoint, r"tiny\.json is not a GRMP checkpoint config: not valid JSON"),
    Case("string format_version", _string_version, r"tiny\.json: format_version must be an integer, got '1'"),
    Case("nesting 200,000 deep", _deep, r"tiny\.json is not a GRMP checkpoint config: JSON nested more than 32"),
    Case(
        "mlp_hidden 100000000",
        _edited(mlp_hidden=100_000_000),
        r"tiny\.json holds an invalid GRMP config: mlp_hidden must be between 1 and 4096, got 100000000",
    ),
    Case(
        "foreign backbone",
        _edited(backbone="ViT-L-14-quickgelu", pretrained="openai"),
        r"needs backbone 'ViT-L-14-quickgelu'; uploaded checkpoints may only use the backbones this server was "
        r"started with: test-tiny-rn",
    ),
]


# --- prompt sets -----------------------------------------------------------------------------------


def _non_strings(folder: Path) -> list[Path]:
    path = folder / "prompts.json"
    path.write_text(json.dumps([{"positive": 1, "negative": None}]))
    return [path]


def _control_characters(folder: Path) -> list[Path]:
    path = folder / "prompts.json"
    path.write_text(json.dumps([{"positive": "a sharp\u0000photo", "negative": "a blurry photo"}]))
    return [path]


def _binary(folder: Path) -> list[Path]:
    path = folder / "prompts.json"
    path.write_bytes(b"\xff\xfe\x00\x81" * 50)
    return [path]


PROMPT_CASES = [
    Case("prompts that are not strings", _non_strings, r"(?i)positive.*(string|text)"),
    Case("prompt with a NUL character", _control_characters, r"(?i)control|NUL"),
    Case("binary prompt file", _binary, r"prompts\.json is not a text file"),
]

ZERO_WEIGHTS_MESSAGE = r"every enabled row has weight 0"
