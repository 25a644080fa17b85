"""Deep visual prompt tuning (VPT) for open_clip's VisionTransformer, as GRMP-IQA uses it.

Forward, as in the official `VPTVisionTransformer` (deep variant, one set of prompts per block):
patch embedding + class token + positional embedding, `ln_pre`; `num_tokens` projected prompt
tokens are inserted right after the class token; block 0 runs; before each block i >= 1 the
prompt tokens are replaced by fresh ones, `prompt_proj(deep_prompt_embeddings[i - 1])`; after the
last block `prompt_norm` (LayerNorm, eps 1e-6), then `ln_post`; the class token times `proj` is
the image feature. Every projected prompt passes dropout (p = 0.1, inactive in eval mode).
Initialisation as the official code: prompts uniform in +-sqrt(6 / (3 * patch^2 + width)), the
projection Kaiming-normal (fan_out). Nothing is hard-wired to ViT-B/16: the width, the number of
blocks and the patch size come from the tower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from open_clip.transformer import LayerNorm, VisionTransformer
from torch import Tensor, nn


@dataclass(frozen=True)
class Tower:
    """The parts of an open_clip VisionTransformer that VPT runs, typed (torch's `Module.__getattr__`
    types every sub-module as `Tensor | Module`)."""

    conv1: nn.Conv2d
    class_embedding: Tensor
    positional_embedding: Tensor
    patch_dropout: nn.Module
    ln_pre: nn.Module
    blocks: nn.ModuleList
    batch_first: bool
    ln_post: nn.Module
    proj: Tensor

    @classmethod
    def of(cls, visual: VisionTransformer) -> Tower:
        transformer = cast(nn.Module, visual.transformer)
        return cls(
            conv1=cast(nn.Conv2d, visual.conv1),
            class_embedding=cast(Tensor, visual.class_embedding),
            positional_embedding=cast(Tensor, visual.positional_embedding),
            patch_dropout=cast(nn.Module, visual.patch_dropout),
            ln_pre=cast(nn.Module, visual.ln_pre),
            blocks=cast(nn.ModuleList, transformer.resblocks),
            batch_first=bool(getattr(transformer, "batch_first", True)),
            ln_post=cast(nn.Module, visual.ln_post),
            proj=cast(Tensor, visual.proj),
        )


class VisualPromptTuning(nn.Module):
    """The VPT parameters plus the prompted forward through a (not registered) vision tower.

    The tower is held as a plain reference, so the prompt parameters are this module's only state;
    its owner registers the tower itself.
    """

    visual: VisionTransformer  # in __dict__, not a registered sub-module

    def __init__(self, visual: nn.Module, num_tokens: int = 100, dropout: float = 0.1, seed: int = 0):
        super().__init__()
        tower = check_prompt_tunable(visual)
        if num_tokens < 1:
            raise ValueError(f"VPT needs at least one prompt token, got {num_tokens}")
        self.__dict__["visual"] = tower
        parts = Tower.of(tower)
        self.num_tokens = num_tokens
        width = parts.conv1.out_channels
        depth = len(parts.blocks)
        patch = parts.conv1.kernel_size
        generator = torch.Generator().manual_seed(seed)
        bound = math.sqrt(6.0 / float(3 * patch[0] * patch[1] + width))
        device = parts.conv1.weight.device

        def uniform(*shape: int) -> Tensor:
            return (torch.rand(shape, generator=generator) * 2 - 1) * bound

        self.prompt_embeddings = nn.Parameter(uniform(1, num_tokens, width).to(device))
        self.deep_prompt_embeddings = nn.Parameter(uniform(depth - 1, num_tokens, width).to(device))
        self.prompt_proj = nn.Linear(width, width, device=device)
        with torch.no_grad():
            # Kaiming normal, fan_out, gain sqrt(2): std = sqrt(2 / out_features).
            std = math.sqrt(2.0 / width)
            self.prompt_proj.weight.copy_(torch.randn((width, width), generator=generator) * std)
            self.prompt_proj.bias.copy_((torch.rand(width, generator=generator) * 2 - 1) / math.sqrt(width))
        self.prompt_norm = LayerNorm(width, eps=1e-6, device=device)
        self.prompt_dropout = nn.Dropout(dropout)

    def _prompts(self, embeddings: Tensor, batch: int, dtype: torch.dtype) -> Tensor:
        projected = self.prompt_dropout(self.prompt_proj(embeddings.to(self.prompt_proj.weight.dtype)))
        return projected.to(dtype).expand(batch, -1, -1)

    def forward(self, pixels: Tensor) -> Tensor:
        """Image features [N, output_dim] (not normalised) of normalised pixels [N, 3, H, W]."""
        visual = Tower.of(self.visual)
        x = visual.conv1(pixels.to(visual.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.ln_pre(visual.patch_dropout(x))
        batch, n_prompt = x.shape[0], self.num_tokens
        x = torch.cat([x[:, :1], self._prompts(self.prompt_embeddings, batch, x.dtype), x[:, 1:]], dim=1)

        for i, block in enumerate(visual.blocks):
            if i > 0:
                deep = self._prompts(self.deep_prompt_embeddings[i - 1 : i], batch, x.dtype)
                x = torch.cat([x[:, :1], deep, x[:, 1 + n_prompt :]], dim=1)
            x = block(x) if visual.batch_first else block(x.transpose(0, 1)).transpose(0, 1)

        # Both norms act token by token, so normalising the class token alone is the same.
        pooled = visual.ln_post(self.prompt_norm(x[:, 0]))
        return pooled @ visual.proj


def check_prompt_tunable(visual: nn.Module) -> VisionTransformer:
    """`visual` as the plain class-token open_clip VisionTransformer it must be; a clear error otherwise."""
    if not isinstance(visual, VisionTransformer):
        raise TypeError(
            f"visual prompt tuning needs an open_clip VisionTransformer image tower, "
            f"this backbone has {type(visual).__name__} (use a ViT backbone, e.g. ViT-B-16-quickgelu)"
        )
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
        raise TypeError("visual prompt tuning needs a ViT pooled by its class token (pool_type 'tok')")
    if visual.proj is None:
        raise TypeError("visual prompt tuning needs a ViT with an output projection (`proj`)")
    return visual
