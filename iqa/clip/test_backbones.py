"""Tiny test backbones: real open_clip architectures with deterministic random weights.

They exist so that tests and offline runs exercise every code path without downloading weights.
Their scores are meaningless. Every tensor is filled with seeded random values (batch-norm running
statistics included) because open_clip's own initialisation is degenerate for comparisons (zeroed
last batch norm of each residual block), and the logit scale is set to ln(100) like OpenAI's CLIP.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from iqa.errors import InputError

if TYPE_CHECKING:  # torch and open_clip load with the first model, not with the command line's parser
    import torch
    from open_clip.model import CLIP

TEST_BACKBONE_WARNING = (
    "Test backbone in use: a tiny CLIP with random weights. Its scores are meaningless; "
    "they only show that the pipeline works."
)

MEANINGLESS_NOTE = "test backbone: meaningless score"

_TEXT_CFG = dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2)

TEST_BACKBONES: dict[str, dict] = {
    # ModifiedResNet (the RN50 design) with one block per stage and narrow channels.
    "test-tiny-rn": dict(
        embed_dim=32,
        vision_cfg=dict(layers=[1, 1, 1, 1], width=8, head_width=32, image_size=224),
        text_cfg=_TEXT_CFG,
    ),
    # VisionTransformer (the ViT-B/16 design) with two narrow layers.
    "test-tiny-vit": dict(
        embed_dim=32,
        vision_cfg=dict(layers=2, width=32, head_width=16, patch_size=16, image_size=224),
        text_cfg=_TEXT_CFG,
    ),
}

SEED = 20230207


def is_test_backbone(name: str) -> bool:
    return name in TEST_BACKBONES


def build_test_model(name: str) -> CLIP:
    """The named tiny CLIP, in eval mode, with the same weights on every call."""
    import torch
    from open_clip.model import CLIP

    if name not in TEST_BACKBONES:
        raise InputError(f"unknown test backbone {name!r}; choose one of {sorted(TEST_BACKBONES)}")
    model = CLIP(**TEST_BACKBONES[name], quick_gelu=True)
    _fill_randomly(model, torch.Generator().manual_seed(SEED))
    return model.eval()


def _fill_randomly(model: CLIP, generator: torch.Generator) -> None:
    import torch

    with torch.no_grad():
        for name, tensor in sorted(model.state_dict(keep_vars=True).items()):
            if tensor.dtype.is_floating_point:
                tensor.copy_(_random_like(name, tensor, generator))
        model.logit_scale.fill_(math.log(100.0))


def _random_like(name: str, tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    import torch

    noise = torch.randn(tensor.shape, generator=generator)
    if name.endswith("running_var"):
        return 0.75 + 0.5 * torch.rand(tensor.shape, generator=generator)
    if name.endswith("running_mean"):
        return 0.1 * noise
    if tensor.ndim == 1 and name.endswith("weight"):  # norm layer scales
        return 1.0 + 0.1 * noise
    if tensor.ndim == 1:  # biases, class embedding
        return 0.05 * noise
    fan_in = tensor[0].numel() if tensor.ndim > 1 else tensor.numel()
    return noise / math.sqrt(fan_in)
