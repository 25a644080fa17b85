"""CLIP-IQA as the registry describes it (no torch import: the scorer is built by `build`)."""

from iqa.methods.registry import Method
from iqa.names import CLIP_IQA

ABOUT = r"""
Zero-shot quality from antonym prompt pairs (Wang, Chan, Loy, *Exploring CLIP for Assessing the Look
and Feel of Images*, AAAI 2023, [arXiv 2207.12396](https://arxiv.org/abs/2207.12396)).
A frozen CLIP compares the photo with a positive and a negative prompt:

$$p = \frac{e^{t\,s_+}}{e^{t\,s_+} + e^{t\,s_-}}, \qquad s_\pm = \cos(f_{image}, f_{prompt_\pm})$$

and the score is the weighted mean of *p* over the enabled pairs, as in the reference library (pyiqa).
Settings that matter: the **temperature** *t* (CLIP's own logit scale, 100 for OpenAI weights; the seed
document's *t* = 1 keeps every *p* near 0.5), the **prompt pairs**, and the **backbone**: the paper uses
OpenAI RN50 at the photo's own resolution (attention-pool positional embedding off), with CLIP's mean/std.
"""

CLIP_IQA_METHOD = Method(
    name=CLIP_IQA,
    option="clipiqa",
    column="clip_iqa",
    colour="#2a9d8f",
    follows_prompts=True,
    build="iqa.methods.clipiqa.scorer:build",
    arguments=("pairs", "temperature"),
    about=ABOUT,
    on_by_default=True,
)
