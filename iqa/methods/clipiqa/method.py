"""CLIP-IQA as the registry describes it (no torch import: the scorer is built by `build`)."""

from iqa.methods.registry import Method
from iqa.names import CLIP_IQA

CLIP_IQA_METHOD = Method(
    name=CLIP_IQA,
    option="clipiqa",
    column="clip_iqa",
    colour="#2a9d8f",
    follows_prompts=True,
    build="iqa.methods.clipiqa.scorer:build",
    arguments=("pairs", "temperature"),
)
