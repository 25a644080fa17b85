"""QualiCLIP's weights: pyiqa's `QualiCLIP.pth` from the Hub, or a local copy, read without running code.

The file holds the fine-tuned RN50 under `clip_model.<OpenAI key>` (open_clip's `RN50-quickgelu`
has the same key names) and `prompts_features`: the normalised text features of its 14 prompts
(`PAIRS`, positive then negative), as its fine-tuned text tower encodes them. No sha256 of the
release is documented (its name carries none), so the file is checked for what it must be: every
tensor of an RN50 CLIP, of the right shapes, and prompt features of the right shape; its hash is
recorded with every result (`settings`) and names its features in the caches.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from iqa.clip.backbones import Backbone, CheckpointMismatch, backbone_from_state, read_weights
from iqa.clip.hub import file_sha256, hub_file
from iqa.methods.qualiclip.method import PAIRS, WEIGHTS_FILE
from iqa.names import PYIQA_WEIGHTS_REPO

BACKBONE = "RN50-quickgelu"  # OpenAI's RN50 (QuickGELU): what QualiCLIP fine-tuned
PREFIX = "clip_model."
PROMPT_FEATURES = "prompts_features"
OPTION = "--qualiclip-weights PATH"


@dataclass(frozen=True)
class QualiCLIPWeights:
    """The fine-tuned backbone, the prompts' text features from the file [14, D] (None: encode them
    with the backbone's tower), and where they came from, in words and as the file's sha256."""

    backbone: Backbone
    prompt_features: torch.Tensor | None
    source: str
    digest: str


_LOADED: dict[tuple, QualiCLIPWeights] = {}
_LOCK = threading.Lock()


def qualiclip_weights(
    path: str | os.PathLike | None = None, device: str | None = None, dtype: str | None = None
) -> QualiCLIPWeights:
    """QualiCLIP from `path`, else from the Hub (downloaded once into its cache).

    A file is loaded once per process for a device and precision (it is 390 MB): scorers built
    again (a Ray actor's, the app's) share it while the file is unchanged.
    """
    if path is None:
        way_out = (
            f"Without internet access, download it elsewhere (https://huggingface.co/{PYIQA_WEIGHTS_REPO}) and "
            f"give the local file ({OPTION}, or the IQA_QUALICLIP_WEIGHTS variable)."
        )
        path = hub_file(PYIQA_WEIGHTS_REPO, WEIGHTS_FILE, way_out)
    path = Path(path).resolve()
    stat = path.stat() if path.is_file() else None
    key = (str(path), stat and (stat.st_size, stat.st_mtime_ns), device, dtype)
    with _LOCK:
        if key not in _LOADED:
            _LOADED.clear()  # one QualiCLIP at a time: the last one asked for
            _LOADED[key] = read_qualiclip(path, device, dtype)
        return _LOADED[key]


def read_qualiclip(path: Path, device: str | None = None, dtype: str | None = None) -> QualiCLIPWeights:
    """A file in `QualiCLIP.pth`'s layout as a backbone and its prompt features; CheckpointMismatch
    naming what was expected for a file of another layout or backbone."""
    value = read_weights(path)
    expected = f"{PREFIX}* tensors (a fine-tuned OpenAI RN50) and {PROMPT_FEATURES}, as in {WEIGHTS_FILE}"
    if not isinstance(value, dict) or not any(str(k).startswith(PREFIX) for k in value):
        raise CheckpointMismatch(f"{path.name} is not a QualiCLIP file: expected {expected}")
    unknown = sorted(k for k in value if not k.startswith(PREFIX) and k != PROMPT_FEATURES)
    if unknown:
        raise CheckpointMismatch(
            f"{path.name} is not a QualiCLIP file: unknown tensors (e.g. {unknown[0]}); expected {expected}"
        )
    state = {k.removeprefix(PREFIX): v for k, v in value.items() if k.startswith(PREFIX)}
    digest = file_sha256(path)
    source = f"{path.name} (sha256 {digest[:16]})"
    try:
        backbone = backbone_from_state(BACKBONE, state, f"qualiclip-{digest[:16]}", source, device, dtype)
    except CheckpointMismatch as err:
        raise CheckpointMismatch(f"{err}; QualiCLIP is a fine-tuned OpenAI RN50 ({BACKBONE})") from None
    features = value.get(PROMPT_FEATURES)
    if features is not None:
        shape = (2 * len(PAIRS), backbone.embed_dim)
        if not isinstance(features, torch.Tensor) or tuple(features.shape) != shape:
            found = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise CheckpointMismatch(f"{path.name}: {PROMPT_FEATURES} is {found}, QualiCLIP's prompts need {shape}")
        features = features.float()
    return QualiCLIPWeights(backbone, features, source, digest)
