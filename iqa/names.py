"""Names and defaults that several layers share, importable without torch.

The command line builds its parser from these, so `iqa --help` starts without loading torch,
open_clip or scipy; the modules that own each thing import them from here.
"""

from __future__ import annotations

# The built-in methods' names (`ScoreResult.method`); everything else about them is in their
# registry entries (`iqa.methods.registry`).
CLIP_IQA = "CLIP-IQA"
GRMP_IQA = "GRMP-IQA"
MA_CLIP = "MA-CLIP"
CLIP_IQA_PLUS = "CLIP-IQA+"
QUALICLIP = "QualiCLIP"

DEFAULT_BACKBONE = "RN50-quickgelu"
DEFAULT_PRETRAINED = "openai"
DEFAULT_MAX_SIDE = 1024
MAP_WINDOW_LIMIT = 4096  # the most windows a quality map may have (a 64 x 64 grid), whatever is asked

GRMP_VARIANTS = ("paper", "seed")
REGULARIZERS = ("pairwise", "projection", "none")

# The official GRMP-IQA release on the Hugging Face Hub.
HUB_REPO = "zzhowe/GRMP-IQA"
DEFAULT_FILE = "clive_50_prompt_lda_5.0.pt"

# The reference library's (pyiqa's) weights on the Hugging Face Hub: CLIP-IQA+'s learned prompts, QualiCLIP.
PYIQA_WEIGHTS_REPO = "chaofengc/IQA-PyTorch-Weights"
