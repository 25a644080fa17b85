"""CLIP-IQA+'s learned context: from pyiqa's release on the Hub, a local file, or (test backbones)
a deterministic random one.

The release file is a bare fp16 tensor of shape (16, 512): the 16 context vectors learned for
OpenAI's RN50 text tower (width 512). It is read with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from iqa.clip.backbones import Backbone, CheckpointMismatch, read_weights
from iqa.clip.hub import file_sha256, hub_file
from iqa.errors import UsageError
from iqa.methods.clipiqa_plus.method import PROMPTS_FILE
from iqa.names import PYIQA_WEIGHTS_REPO

N_CTX = 16
PROMPTS_SHA256 = "603f3273"  # the first 8 hex digits of the release's sha256, as its name carries them
RELEASE_BACKBONE = "RN50-quickgelu"  # OpenAI's RN50 (QuickGELU), which the release was learned on
TEST_CONTEXT_SEED = 18_002  # the random context of a test backbone (meaningless, but the same every run)
OPTION = "--clipiqa-plus-prompts PATH"


@dataclass(frozen=True)
class LearnedContext:
    """The context vectors [N_CTX, width] (float32, CPU; None: drawn at random for a test backbone),
    and where they came from, in words and as a hash (the results' settings record it)."""

    ctx: torch.Tensor | None
    source: str
    digest: str


def learned_context(backbone: Backbone, path: str | os.PathLike | None = None) -> LearnedContext:
    """The context for `backbone`: the file at `path` when given, else a random one on a test
    backbone, else the release from the Hub (downloaded once into its cache, pinned by hash)."""
    if path is None and backbone.is_test:
        return LearnedContext(None, f"random test context (seed {TEST_CONTEXT_SEED})", f"seed-{TEST_CONTEXT_SEED}")
    if path is None:
        if backbone.name != RELEASE_BACKBONE:
            raise UsageError(
                f"CLIP-IQA+'s released prompts were learned on OpenAI's RN50 (--backbone {RELEASE_BACKBONE}), "
                f"not on {backbone.name!r}: give a context learned for it ({OPTION})"
            )
        way_out = (
            f"Without internet access, download it elsewhere (https://huggingface.co/{PYIQA_WEIGHTS_REPO}) and "
            f"give the local file ({OPTION}, or the IQA_CLIPIQA_PLUS_PROMPTS variable)."
        )
        path = hub_file(PYIQA_WEIGHTS_REPO, PROMPTS_FILE, way_out, sha256=PROMPTS_SHA256)
    return read_context(Path(path), backbone)


def read_context(path: Path, backbone: Backbone) -> LearnedContext:
    """A context file in the release's layout, checked against `backbone`'s text tower."""
    value = read_weights(path)
    width = text_width(backbone)
    expected = f"a bare tensor of shape ({N_CTX}, {width}) as in {PROMPTS_FILE}"
    if not isinstance(value, torch.Tensor):
        raise CheckpointMismatch(
            f"{path.name} is not a CLIP-IQA+ context: expected {expected} (whole-model files such as "
            f"CLIPIQA+_RN50_512-*.pth are not supported)"
        )
    if tuple(value.shape) != (N_CTX, width) or not value.is_floating_point():
        raise CheckpointMismatch(
            f"{path.name} holds a {value.dtype} tensor of shape {tuple(value.shape)}; CLIP-IQA+ on backbone "
            f"{backbone.name!r} needs {expected}: it was learned for another backbone"
        )
    digest = file_sha256(path)
    return LearnedContext(value.float(), f"{path.name} (sha256 {digest[:16]})", digest)


def text_width(backbone: Backbone) -> int:
    """The width of `backbone`'s text tower (its token embeddings); UsageError where no soft prompt fits."""
    if backbone.text_tower is None:
        raise UsageError(f"CLIP-IQA+ needs an open_clip text tower for its learned prompts; {backbone.name!r} has none")
    return backbone.text_tower.width
