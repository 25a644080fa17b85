"""CoOp-style soft text prompts on an open_clip text tower.

The prompts are "X X X X high quality." and "X X X X low quality.": the four "X" token embeddings
are replaced by learned context vectors, the start token and everything after the context (class
words, ".", end token, padding) stay fixed. The same context is shared by both prompts unless
`class_specific` is set. This is the prompt learner of CoOp and of the GRMP-IQA code
(`prompt_learner2` there), written for open_clip's batch-first text towers.

CLIP-IQA+ places the class words in the middle instead (`class_position="middle"`): start token,
the first half of the context, the class words, the second half, then the end token. Its prompt
texts are the same, so the end token keeps its position and the tower pools the same place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from iqa.clip.text_tower import TextTower

Tokenizer = Callable[[list[str]], Tensor]


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    """How many tokens `text` takes between the start and end tokens (padding id 0)."""
    ids = tokenizer([text])[0]
    return int((ids != 0).sum().item()) - 2


class PromptLearner(nn.Module):
    """Learned context vectors shared by (or specific to) the prompts of `class_texts`.

    forward() returns the text features [n_cls, D] (not normalised) of the prompts
    "<ctx> <class text>." through the tower, so gradients reach `ctx` (and any tower weights that
    train). With `ctx_init` the context starts as the word embeddings of that text and the prompt
    equals the hard prompt "<ctx_init> <class text>."; without it the context is drawn from
    N(0, 0.02^2) with a generator seeded by `seed`. `class_position="middle"` puts the class words
    (every token between the context and the end token) between the two halves of the context.
    """

    tokenized_prompts: Tensor  # a buffer: the prompts' token ids

    def __init__(
        self,
        tower: TextTower,
        tokenizer: Tokenizer,
        class_texts: Sequence[str] = ("high quality", "low quality"),
        n_ctx: int = 4,
        ctx_init: str | None = None,
        class_specific: bool = False,
        seed: int = 0,
        class_position: Literal["end", "middle"] = "end",
    ):
        super().__init__()
        if class_position not in ("end", "middle"):
            raise ValueError(f"class_position must be 'end' or 'middle', got {class_position!r}")
        if n_ctx < 1:
            raise ValueError(f"n_ctx must be at least 1, got {n_ctx}")
        if len(class_texts) < 2:
            raise ValueError(f"need at least two class texts, got {list(class_texts)}")
        self.tower = tower
        self.class_texts = tuple(class_texts)
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.class_specific = class_specific
        self.class_position = class_position
        n_cls = len(self.class_texts)
        device = tower.token_embedding.weight.device

        if ctx_init is not None:
            if count_tokens(tokenizer, ctx_init) != n_ctx:
                raise ValueError(
                    f"ctx_init {ctx_init!r} is {count_tokens(tokenizer, ctx_init)} tokens long "
                    f"but n_ctx is {n_ctx}; make them agree"
                )
            with torch.no_grad():
                init_embedding = tower.embed(tokenizer([ctx_init]).to(device))[0, 1 : 1 + n_ctx]
            ctx = init_embedding.float().clone()
            if class_specific:
                ctx = ctx.unsqueeze(0).repeat(n_cls, 1, 1)
            context_text = ctx_init
        else:
            shape = (n_cls, n_ctx, tower.width) if class_specific else (n_ctx, tower.width)
            generator = torch.Generator().manual_seed(seed)
            ctx = (0.02 * torch.randn(shape, generator=generator)).to(device)
            context_text = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(ctx)

        self.prompt_texts = tuple(f"{context_text} {text}." for text in self.class_texts)
        # Token ids only: the fixed embeddings are looked up from the tower at every forward.
        self.register_buffer("tokenized_prompts", tokenizer(list(self.prompt_texts)).to(device), persistent=False)
        # the class words' lengths in tokens (those of the prompt after the context, end token excluded)
        self.class_lengths = tuple(count_tokens(tokenizer, text) - n_ctx for text in self.prompt_texts)

    @property
    def n_cls(self) -> int:
        return len(self.class_texts)

    @property
    def token_prefix(self) -> Tensor:
        """[n_cls, 1, width]: the start token's embedding."""
        return self._fixed_embeddings()[:, :1]

    @property
    def token_suffix(self) -> Tensor:
        """[n_cls, L - 1 - n_ctx, width]: class words, ".", end token and padding."""
        return self._fixed_embeddings()[:, 1 + self.n_ctx :]

    def _fixed_embeddings(self) -> Tensor:
        """The prompts' token embeddings from the tower's current weights, as constants.

        CoOp registers these as buffers computed once at build time. They are derived from the
        token embedding, so a learner built on one set of weights and then loaded with another
        would keep stale ones and score wrongly; looking them up (two short rows) costs nothing.
        """
        with torch.no_grad():
            return self.tower.embed(self.tokenized_prompts).float()

    def prompt_embeddings(self) -> Tensor:
        """[n_cls, L, width]: start token, the learned context, then the fixed suffix (class words
        in the middle of the context with `class_position="middle"`)."""
        fixed = self._fixed_embeddings()
        ctx = self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        ctx = ctx.to(fixed.dtype)
        if self.class_position == "end":
            return torch.cat([fixed[:, :1], ctx, fixed[:, 1 + self.n_ctx :]], dim=1)
        half, start = self.n_ctx // 2, 1 + self.n_ctx
        rows = [
            torch.cat([row[:1], own[:half], row[start : start + k], own[half:], row[start + k :]])
            for row, own, k in zip(fixed, ctx, self.class_lengths)
        ]
        return torch.stack(rows)

    def forward(self) -> Tensor:
        return self.tower.encode_embeddings(self.prompt_embeddings(), self.tokenized_prompts)

    def display_texts(self) -> tuple[str, ...]:
        """How the learned prompts are shown to people, e.g. "[4 learned tokens] high quality", or
        "[8 learned tokens] Good photo. [8 learned tokens]" with the class words in the middle."""
        if self.class_position == "middle":
            half = self.n_ctx // 2
            first, second = f"[{half} learned tokens]", f"[{self.n_ctx - half} learned tokens]"
            return tuple(f"{first} {text} {second}" for text in self.class_texts)
        return tuple(f"[{self.n_ctx} learned tokens] {text}" for text in self.class_texts)


def encode_hard_prompts(tower: TextTower, tokenizer: Tokenizer, texts: Sequence[str]) -> Tensor:
    """L2-normalised features [N, D] of plain text prompts through `tower` (fine-tuned or not)."""
    tokens = tokenizer(list(texts)).to(tower.token_embedding.weight.device)
    return F.normalize(tower.encode_tokens(tokens).float(), dim=-1)
