"""A full-size official GRMP-IQA checkpoint made from seeded random weights, and what the official
code scored with it.

`official_state()` builds, deterministically, a state dict in the layout of the released files
(`zzhowe/GRMP-IQA`: ViT-B/16, 100 visual prompt tokens, 311 tensors, values rounded through fp16 as
OpenAI's `build_model` leaves them). `OFFICIAL_P` holds the probabilities of "high quality" that the
official code (LXDxmu/GRMP-IQA at b36d254: its `CLIP/` package and the `PromptLearner`,
`TextEncoder` and `CustomCLIP` classes of `finetune.py`, in eval mode, fp32 on the CPU) gave for
these weights on the bundled photos, fed as its test loop feeds them (OpenCV bicubic squash to
244x244, crop [10:234], /255, ImageNet statistics). That code was run once, outside this
repository, on a file written by `official_state()`; none of it is part of this project.
"""

from __future__ import annotations

import math
from pathlib import Path

import open_clip
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PHOTOS = (
    "astronaut.jpg",
    "chelsea_gaussian_blur_L5.jpg",
    "coffee_jpeg_L5.jpg",
    "rocket_gaussian_noise_L3.jpg",
    "coffee_under_exposure_L5.jpg",
    "chelsea.jpg",
)
SEED = 20240909
VPT_TOKENS, VPT_DEPTH, WIDTH = 100, 11, 768

# p(high quality) of the official code, in the order of PHOTOS (see the module docstring).
OFFICIAL_P = (0.46179992, 0.41307119, 0.42826447, 0.73576361, 0.53641224, 0.4084923)


def official_state(seed: int = SEED) -> dict[str, torch.Tensor]:
    """The official layout at full ViT-B/16 size: CLIP, VPT, prompt learner and logit scale, fp16."""
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):  # shapes only
        clip = open_clip.model.CLIP(**open_clip.get_model_config("ViT-B-16-quickgelu"))
    state = {}
    for name, tensor in sorted(clip.state_dict().items()):
        key = f"image_encoder.{name[len('visual.') :]}" if name.startswith("visual.") else f"text_encoder.{name}"
        state["logit_scale" if name == "logit_scale" else key] = _random_like(name, tensor, generator)
    state["logit_scale"] = torch.tensor(math.log(100.0))
    bound = math.sqrt(6.0 / (3 * 16 * 16 + WIDTH))
    state.update(
        {
            "image_encoder.prompt_embeddings": (torch.rand(1, VPT_TOKENS, WIDTH, generator=generator) * 2 - 1) * bound,
            "image_encoder.deep_prompt_embeddings": (
                torch.rand(VPT_DEPTH, VPT_TOKENS, WIDTH, generator=generator) * 2 - 1
            )
            * bound,
            "image_encoder.prompt_proj.weight": torch.randn(WIDTH, WIDTH, generator=generator) * math.sqrt(2 / WIDTH),
            "image_encoder.prompt_proj.bias": 0.02 * torch.randn(WIDTH, generator=generator),
            "image_encoder.prompt_norm.weight": 1 + 0.1 * torch.randn(WIDTH, generator=generator),
            "image_encoder.prompt_norm.bias": 0.1 * torch.randn(WIDTH, generator=generator),
            "prompt_learner2.ctx": 0.02 * torch.randn(4, 512, generator=generator),
        }
    )
    state = {k: v.half() for k, v in state.items()}
    tokens = open_clip.tokenize(["X X X X high quality.", "X X X X low quality."])
    embedded = torch.nn.functional.embedding(tokens, state["text_encoder.token_embedding.weight"])
    state["prompt_learner2.token_prefix"] = embedded[:, :1].clone()
    state["prompt_learner2.token_suffix"] = embedded[:, 5:].clone()
    return state


def _random_like(name: str, tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Scaled like trained weights, so that features and probabilities spread out."""
    noise = torch.randn(tensor.shape, generator=generator)
    if tensor.ndim == 1 and name.endswith("weight"):  # norm layer scales
        return 1.0 + 0.1 * noise
    if tensor.ndim <= 1:  # biases, class embedding
        return 0.05 * noise
    fan_in = tensor[0].numel()
    return noise / math.sqrt(fan_in)


def tiny_official_state(
    backbone, seed: int = 0, class_texts=("high quality", "low quality")
) -> dict[str, torch.Tensor]:
    """A state dict in the official layout at tiny size, in fp16 like the official model's weights.

    CLIP weights from the backbone (OpenAI key names = open_clip quickgelu key names), random VPT
    and context, and the fixed prompt tokens the official PromptLearner registers.
    """
    model, generator = backbone.model, torch.Generator().manual_seed(seed)
    width, depth, tokens = model.visual.conv1.out_channels, len(model.visual.transformer.resblocks), 4
    state = {f"image_encoder.{k}": v for k, v in model.visual.state_dict().items()}
    state.update(
        {
            "image_encoder.prompt_embeddings": torch.rand(1, tokens, width, generator=generator) - 0.5,
            "image_encoder.deep_prompt_embeddings": torch.rand(depth - 1, tokens, width, generator=generator) - 0.5,
            "image_encoder.prompt_proj.weight": torch.randn(width, width, generator=generator) / width**0.5,
            "image_encoder.prompt_proj.bias": 0.1 * torch.randn(width, generator=generator),
            "image_encoder.prompt_norm.weight": 1 + 0.1 * torch.randn(width, generator=generator),
            "image_encoder.prompt_norm.bias": 0.1 * torch.randn(width, generator=generator),
        }
    )
    text_keys = ("transformer.", "positional_embedding", "ln_final.", "text_projection", "token_embedding.")
    state.update({f"text_encoder.{k}": v for k, v in model.state_dict().items() if k.startswith(text_keys)})
    prompts = backbone.tokenize([f"X X X X {text}." for text in class_texts])
    embedded = model.token_embedding(prompts).detach()
    state.update(
        {
            "prompt_learner2.ctx": 0.02 * torch.randn(4, model.token_embedding.embedding_dim, generator=generator),
            "prompt_learner2.token_prefix": embedded[:, :1],
            "prompt_learner2.token_suffix": embedded[:, 5:],
            "logit_scale": model.logit_scale.detach().clone(),
        }
    )
    return {k: v.detach().clone().half() for k, v in state.items()}
