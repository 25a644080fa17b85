"""Direct access to an open_clip text tower: soft prompts, and text encoding without the padding.

Prompts are short (a pair's text is about 8 tokens of the 77-token context), and under the causal
attention mask nothing after the end token reaches the pooled feature; encoding only the positions
up to it gives the same features several times faster, which is what re-scoring after a prompt
edit and each soft-prompt training step mostly cost.
"""

from __future__ import annotations

from typing import Any

import torch
from open_clip.transformer import text_global_pool
from torch import Tensor, nn


class TextTower:
    """The pieces of an open_clip text tower, wherever the model keeps them.

    `open_clip.CLIP` keeps them on the model itself, `CustomTextCLIP` in `model.text` (a
    `TextTransformer`). Hugging Face text towers and CoCa-style towers (appended class token,
    padding masks) have no place for soft prompts here and are refused.

    A plain object, not an `nn.Module`, so that holding it does not register the tower's weights
    a second time. It reads every piece from the tower when used, so it follows the tower through
    `.to()` / `.cpu()` (which replace buffers such as the attention mask) and `copy.deepcopy` of
    its owner.
    """

    def __init__(self, model: nn.Module):
        tower = model.text if hasattr(model, "text") else model
        if not hasattr(tower, "token_embedding") or not hasattr(tower, "transformer"):
            raise TypeError(
                f"{type(tower).__name__} is not an open_clip transformer text tower "
                "(Hugging Face text towers cannot take soft prompts here)"
            )
        if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
            raise TypeError("text towers with an appended class token or a padding mask are not supported")
        self.tower: Any = tower  # open_clip's towers differ in what they hold: read as they are
        self.pool_type = str(getattr(tower, "text_pool_type", None) or getattr(tower, "pool_type", "argmax"))
        self.eos_id: int | None = getattr(tower, "text_eos_id", None) or getattr(tower, "eos_id", None)
        if self.pool_type == "eos" and self.eos_id is None:
            raise TypeError("a text tower pooled at its end token must name that token (eos_id)")

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.tower.token_embedding

    @property
    def positional_embedding(self) -> Tensor:
        return self.tower.positional_embedding

    @property
    def transformer(self) -> nn.Module:
        return self.tower.transformer

    @property
    def ln_final(self) -> nn.Module:
        return self.tower.ln_final

    @property
    def text_projection(self) -> Tensor | nn.Linear | None:
        return self.tower.text_projection

    @property
    def attn_mask(self) -> Tensor | None:
        return self.tower.attn_mask

    @property
    def width(self) -> int:
        return self.token_embedding.weight.shape[1]

    @property
    def cast_dtype(self) -> torch.dtype:
        return self.tower.transformer.get_cast_dtype()

    def embed(self, tokens: Tensor) -> Tensor:
        """Token embeddings [N, L, width] of token ids [N, L]."""
        return self.token_embedding(tokens)

    def encode_embeddings(self, embeddings: Tensor, tokens: Tensor) -> Tensor:
        """Text features [N, D] (not normalised) of token embeddings [N, L, width].

        `tokens` are the token ids the embeddings stand for; they only locate the pooled position
        (the end token for OpenAI towers).
        """
        length = self.needed_length(tokens)
        embeddings, tokens = embeddings[:, :length], tokens[:, :length]
        x = embeddings.to(self.cast_dtype) + self.positional_embedding[:length].to(self.cast_dtype)
        mask = self.attn_mask[:length, :length] if self.attn_mask is not None else None
        batch_first = getattr(self.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        x = self.transformer(x, attn_mask=mask)
        if not batch_first:
            x = x.transpose(0, 1)
        x = self.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def needed_length(self, tokens: Tensor) -> int:
        """How many leading positions decide the pooled feature.

        Under the causal mask a position sees only those before it, so everything after the
        pooled end token (padding, mostly: 77 positions for a prompt of 8 tokens) can be cut
        without changing the result. This makes each training step several times cheaper.
        """
        if self.attn_mask is None or self.pool_type not in ("argmax", "eos", "first"):
            return tokens.shape[1]
        if self.pool_type == "first":
            return 1
        if self.pool_type == "eos":
            assert self.eos_id is not None  # checked when built
            ends = tokens.eq(self.eos_id).int().argmax(dim=-1)
        else:
            ends = tokens.argmax(dim=-1)
        return int(ends.max()) + 1

    def encode_tokens(self, tokens: Tensor) -> Tensor:
        """Text features [N, D] (not normalised) of hard prompts given as token ids [N, L]."""
        return self.encode_embeddings(self.embed(tokens), tokens)
