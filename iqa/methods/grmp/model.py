"""GRMP-IQA models: learned quality prompts on CLIP, in two variants.

"paper" follows the official GRMP-IQA code (LXDxmu/GRMP-IQA): a ViT with deep visual prompt
tuning, the CoOp prompts "X X X X high quality." / "X X X X low quality.", and fine-tuning of the
last blocks of both towers. The score is the softmax probability of the positive prompt over
`logit_scale * cos` (100 * cos for OpenAI weights); no head.

"seed" follows the project's source document: both encoders frozen, a learned text prompt and a
small MLP head mapping the two cosines to the score. Its image features never change, so they are
computed once (and shared with CLIP-IQA on the same backbone through a `FeatureStore`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD
from PIL import Image
from torch import Tensor, nn

from iqa.clip.preprocess import Preprocessor, check_shape, preprocessor_for
from iqa.clip.prompt_learner import PromptLearner
from iqa.clip.text_tower import TextTower
from iqa.methods.grmp.vpt import VisualPromptTuning, check_prompt_tunable

if TYPE_CHECKING:
    from iqa.clip.backbones import Backbone

logger = logging.getLogger(__name__)
VARIANTS = ("paper", "seed")
PREPROCESSING = ("clip", "official")

# The scene prompts of the official fine-tuning code, verbatim: no final period, and "still_life"
# keeps its underscore (the code formats the raw category names).
SCENES = ("animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others")
SCENE_PROMPTS = tuple(f"a photo of a {scene}" for scene in SCENES)


# What a config may hold: checked before anything is built from it (a checkpoint JSON can come from
# an upload). The ranges are far above any real model and keep a hostile file from allocating much.
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "variant": (str,),
    "backbone": (str,),
    "pretrained": (str, type(None)),
    "n_ctx": (int,),
    "ctx_init": (str, type(None)),
    "class_specific": (bool,),
    "vpt_tokens": (int,),
    "train_last_blocks": (int,),
    "finetune_vpt": (bool,),
    "preprocess": (str,),
    "mlp_hidden": (int,),
    "seed": (int,),
    "training": (dict,),
}
CONFIG_RANGES: dict[str, tuple[int, int]] = {
    "n_ctx": (1, 64),  # CLIP's text context is 77 tokens
    "vpt_tokens": (0, 1024),
    "train_last_blocks": (0, 256),
    "mlp_hidden": (1, 4096),
    "seed": (0, 2**63 - 1),
}
MAX_CONFIG_TEXT = 1000


@dataclass
class GRMPConfig:
    """Everything needed to rebuild a GRMP model around its backbone (saved as the checkpoint JSON).

    `preprocess` says how photos become pixels for the paper variant:
    - "clip": open_clip's evaluation transform for the ViT (shortest side to 224, centre crop) with
      CLIP's mean/std, the statistics CLIP was trained with; the default for models trained here.
    - "official": what the official GRMP-IQA code feeds its model: the whole photo squashed to
      244x244 (bicubic), the centre 224x224 cut out, ImageNet mean/std. Imported official
      checkpoints were trained on exactly these inputs, so they use it.
    The seed variant always uses its backbone's own preprocessing (features shared with CLIP-IQA).
    """

    variant: str
    backbone: str
    pretrained: str | None
    n_ctx: int = 4
    class_texts: tuple[str, str] = ("high quality", "low quality")
    ctx_init: str | None = None
    class_specific: bool = False
    # paper variant only
    vpt_tokens: int = 100
    train_last_blocks: int = 4
    finetune_vpt: bool = False  # the official fine-tuning keeps the (meta-pre-trained) VPT frozen
    preprocess: str = "clip"
    # seed variant only
    mlp_hidden: int = 16
    # seeds every random initialisation (context vectors, VPT, head)
    seed: int = 0
    # bookkeeping written to the checkpoint json
    training: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_types()
        texts = tuple(self.class_texts)
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown GRMP variant {self.variant!r}; choose one of {VARIANTS}")
        if len(texts) != 2:
            raise ValueError(f"class_texts must be (positive, negative), got {texts}")
        self.class_texts = (texts[0], texts[1])
        if self.preprocess not in PREPROCESSING:
            raise ValueError(f"unknown preprocess {self.preprocess!r}; choose one of {PREPROCESSING}")
        if self.variant == "seed" and self.preprocess != "clip":
            raise ValueError("the seed variant uses its backbone's own preprocessing (preprocess='clip')")
        for name, (low, high) in CONFIG_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")

    def _check_types(self) -> None:
        """Types first, so that a hand-edited or hostile JSON fails with a message, not a TypeError
        deep inside model building (and a size is never taken from a string or a float)."""
        for name, kinds in CONFIG_TYPES.items():
            value = getattr(self, name)
            if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
                expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise ValueError(f"{name} must be {expected}, got {type(value).__name__} {_short(value)}")
        texts = self.class_texts
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"class_texts must be a list of two strings, got {_short(texts)}")
        for name, value in (
            ("backbone", self.backbone),
            ("pretrained", self.pretrained),
            ("ctx_init", self.ctx_init),
            *(("class_texts", t) for t in texts),
        ):
            if value is not None and len(value) > MAX_CONFIG_TEXT:
                raise ValueError(f"{name} is longer than {MAX_CONFIG_TEXT} characters")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["class_texts"] = list(self.class_texts)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> GRMPConfig:
        if not isinstance(data, dict):
            raise ValueError(f"the config must be a JSON object, got {type(data).__name__}")
        missing = [name for name in ("variant", "backbone", "pretrained") if name not in data]
        if missing:
            raise ValueError(f"missing GRMP config fields: {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown GRMP config fields: {', '.join(unknown)}")
        return cls(**data)


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


PRESETS: dict[str, GRMPConfig] = {
    "paper": GRMPConfig(variant="paper", backbone="ViT-B-16-quickgelu", pretrained="openai"),
    "seed": GRMPConfig(variant="seed", backbone="RN50-quickgelu", pretrained="openai"),
}


@dataclass
class GRMPOutput:
    s_pos: Tensor  # [N] cosine of the image with the learned positive prompt
    s_neg: Tensor  # [N] cosine with the learned negative prompt
    p: Tensor  # [N] softmax probability of the positive prompt over logit_scale * cos
    score: Tensor  # [N] the quality score in [0, 1]: p (paper) or the MLP head (seed)


class QualityHead(nn.Module):
    """The seed variant's head: score = sigmoid(t * (s_pos - s_neg) + mlp(s_pos, s_neg)).

    mlp = Linear(2, hidden) -> GELU -> Linear(hidden, 1) on the raw cosines, t the backbone's
    logit scale. The last layer starts at zero, so an untrained head gives exactly p, the
    learned-prompt CLIP-IQA probability; training bends that into a calibrated score.
    """

    def __init__(self, hidden: int = 16, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        first, last = nn.Linear(2, hidden), nn.Linear(hidden, 1)
        self.mlp = nn.Sequential(first, nn.GELU(), last)
        with torch.no_grad():
            bound = 2**-0.5  # PyTorch's default bound 1/sqrt(fan_in), drawn from the seeded generator
            first.weight.copy_((torch.rand(hidden, 2, generator=generator) * 2 - 1) * bound)
            first.bias.copy_((torch.rand(hidden, generator=generator) * 2 - 1) * bound)
            last.weight.zero_()
            last.bias.zero_()

    def forward(self, s_pos: Tensor, s_neg: Tensor, logit_scale: Tensor) -> Tensor:
        correction = self.mlp(torch.stack([s_pos, s_neg], dim=-1)).squeeze(-1)
        return torch.sigmoid(logit_scale * (s_pos - s_neg) + correction)


@dataclass(frozen=True)
class OfficialPreprocessor:
    """The official GRMP-IQA input: squash to 244x244, centre 224 crop, ImageNet statistics.

    As the official data scripts and test loop do it: OpenCV's bicubic resize of the 8-bit RGB
    photo (no antialiasing, unlike Pillow's bicubic, so the two differ by far more than rounding on
    downscaled photos), the crop [10:234], then /255 and the ImageNet mean/std in float32.
    """

    resize: int = 244
    crop: int = 224

    @property
    def key(self) -> str:
        return f"grmp-official-cv2-{self.resize}c{self.crop}|{IMAGENET_MEAN}|{IMAGENET_STD}"

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return self.crop, self.crop

    def notes(self, size: tuple[int, int]) -> list[str]:
        return []

    def __call__(self, image: Image.Image) -> Tensor:
        import cv2  # only the official preprocessing needs OpenCV

        check_shape(image.size)
        array = np.asarray(image.convert("RGB"))
        resized = cv2.resize(array, (self.resize, self.resize), interpolation=cv2.INTER_CUBIC)
        offset = (self.resize - self.crop) // 2
        crop = resized[offset : offset + self.crop, offset : offset + self.crop]
        pixels = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float() / 255
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (pixels - mean) / std


class GRMPModel(nn.Module):
    """A GRMP-IQA model around a loaded backbone.

    paper: the backbone's CLIP is deep-copied (in float32, like the official `.float()`), so
    fine-tuning never changes the shared backbone, which stays usable for CLIP-IQA and as the
    frozen zero-shot teacher of the gradient regularizer. seed: the backbone is used as it is,
    frozen, and is not registered as a submodule (its state is not this model's state, and
    `train()` never reaches its batch norms).
    """

    scene_tokens: Tensor  # a buffer: the scene prompts' token ids

    def __init__(self, config: GRMPConfig, backbone: Backbone):
        super().__init__()
        self.config = config
        self.backbone = backbone
        if config.variant == "paper":
            check_prompt_tunable(backbone.model.visual)
            self.clip = copy.deepcopy(backbone.model).float()
        else:
            self.__dict__["clip"] = backbone.model
        tower = TextTower(self.clip)
        self.prompt_learner = PromptLearner(
            tower,
            backbone.tokenize,
            config.class_texts,
            n_ctx=config.n_ctx,
            ctx_init=config.ctx_init,
            class_specific=config.class_specific,
            seed=config.seed,
        )
        self.vpt = None
        self.head = None
        if config.variant == "paper" and config.vpt_tokens > 0:
            self.vpt = VisualPromptTuning(self.clip.visual, config.vpt_tokens, seed=config.seed)
        if config.variant == "seed":
            self.head = QualityHead(config.mlp_hidden, seed=config.seed).to(backbone.device)
        self.register_buffer("scene_tokens", backbone.tokenize(list(SCENE_PROMPTS)), persistent=False)
        self._check_block_count()
        self._set_requires_grad()
        self.eval()  # deterministic until a trainer calls train() (VPT dropout)

    def __deepcopy__(self, memo: dict) -> GRMPModel:
        """Copies share the backbone (and, for seed, its frozen CLIP); everything else is copied.

        Meta-learning copies the model per task; copying the backbone too would only waste memory.
        """
        memo[id(self.backbone)] = self.backbone
        if self.config.variant == "seed":
            for obj in [*self.clip.modules(), *self.clip.parameters(), *self.clip.buffers()]:
                memo[id(obj)] = obj
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            clone.__dict__[key] = copy.deepcopy(value, memo)
        return clone

    @property
    def features_frozen(self) -> bool:
        """True for seed: image features never change, so they can be cached."""
        return self.config.variant == "seed"

    @property
    def device(self) -> torch.device:
        return self.prompt_learner.ctx.device

    @property
    def description(self) -> str:
        """The backbone this model scores on, and where its weights came from."""
        if self.config.variant == "paper" and self.config.pretrained is None:
            return f"{self.config.backbone} (weights from the checkpoint) on {self.device.type}"
        return self.backbone.description

    @property
    def logit_scale(self) -> Tensor:
        return self.clip.logit_scale.detach().float().exp()

    @property
    def preprocessor(self) -> Preprocessor | OfficialPreprocessor:
        """Photo -> normalised pixels [3, H, W] for `image_features`."""
        if self.config.variant == "seed":
            return preprocessor_for(self.backbone)
        if self.config.preprocess == "official":
            return OfficialPreprocessor()
        return preprocessor_for(self.backbone, native_resolution=False)

    def image_features(self, pixels: Tensor) -> Tensor:
        """[N, D] L2-normalised float32 features; seed: the frozen encoder (no gradients)."""
        if self.config.variant == "seed":
            return F.normalize(self.backbone.encode_image(pixels).float(), dim=-1)
        pixels = pixels.to(self.device, torch.float32)
        features = self.vpt(pixels) if self.vpt is not None else self.clip.visual(pixels)
        return F.normalize(features.float(), dim=-1)

    def features_of(self, inputs: Tensor) -> Tensor:
        """Image features of a training batch: with the image tower frozen (seed) the batch already
        holds them (computed once, `TrainingData`), else it holds pixels, encoded here."""
        return inputs if self.features_frozen else self.image_features(inputs)

    def text_features(self) -> Tensor:
        """[2, D] L2-normalised features of the learned (positive, negative) prompts."""
        return F.normalize(self.prompt_learner().float(), dim=-1)

    def predict(self, image_features: Tensor) -> GRMPOutput:
        """Scores of L2-normalised image features; differentiable w.r.t. the trainable parameters."""
        cos = image_features.to(self.device, torch.float32) @ self.text_features().t()
        s_pos, s_neg = cos[:, 0], cos[:, 1]
        scale = self.logit_scale
        p = torch.softmax(scale * cos, dim=-1)[:, 0]
        score = p if self.head is None else self.head(s_pos, s_neg, scale)
        return GRMPOutput(s_pos=s_pos, s_neg=s_neg, p=p, score=score)

    def forward(self, pixels: Tensor) -> GRMPOutput:
        return self.predict(self.image_features(pixels))

    def scene_logits(self, image_features: Tensor) -> Tensor:
        """[N, 9] logits of the 9 scene prompts through this model's (fine-tuned) text tower."""
        scenes = F.normalize(self.prompt_learner.tower.encode_tokens(self.scene_tokens).float(), dim=-1)
        return self.logit_scale * image_features.to(self.device, torch.float32) @ scenes.t()

    def prompt_parameters(self) -> list[nn.Parameter]:
        """What meta-prompt pre-training updates.

        paper: the text context and every VPT parameter (prompt tokens, projection, prompt norm),
        i.e. all parameters named "*prompt*" in the official pre-training. seed: the text context
        and the head (the head turns the cosines into the score the losses see).
        """
        params = [self.prompt_learner.ctx]
        if self.vpt is not None:
            params += list(self.vpt.parameters())
        if self.head is not None:
            params += list(self.head.parameters())
        return params

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What fine-tuning updates.

        paper (official finetune.py): the text context, the last `train_last_blocks` blocks of the
        text tower and `ln_final`, the last blocks of the image tower and `ln_post`; the VPT only
        when `finetune_vpt`. seed: the text context and the head.
        """
        params = [self.prompt_learner.ctx]
        if self.head is not None:
            return params + list(self.head.parameters())
        k = self.config.train_last_blocks
        tower = self.prompt_learner.tower
        visual = cast(nn.Module, self.clip.visual)
        if k:
            for block in [*_blocks(tower.transformer)[-k:], *_blocks(visual.transformer)[-k:]]:
                params += list(block.parameters())
            params += list(tower.ln_final.parameters()) + list(cast(nn.Module, visual.ln_post).parameters())
        if self.vpt is not None and self.config.finetune_vpt:
            params += list(self.vpt.parameters())
        return params

    def backbone_state_keys(self) -> list[str]:
        """Keys of this model's state that belong to the copied backbone (paper only)."""
        return [k for k in self.state_dict() if k.startswith("clip.")]

    def _check_block_count(self) -> None:
        if self.config.variant != "paper":
            return
        visual = cast(nn.Module, self.clip.visual)
        depth = min(len(_blocks(self.prompt_learner.tower.transformer)), len(_blocks(visual.transformer)))
        if self.config.train_last_blocks > depth:
            raise ValueError(f"train_last_blocks={self.config.train_last_blocks} but the towers have {depth} blocks")

    def _set_requires_grad(self) -> None:
        if self.config.variant == "paper":
            self.clip.requires_grad_(False)
        wanted = {id(p) for p in self.prompt_parameters() + self.trainable_parameters()}
        for param in self.parameters():
            param.requires_grad_(id(param) in wanted)


def _blocks(transformer: Tensor | nn.Module) -> list[nn.Module]:
    """An open_clip transformer's residual blocks, in order."""
    return list(cast(nn.ModuleList, cast(nn.Module, transformer).resblocks))


@torch.no_grad()
def zero_shot_scene_logits(backbone: Backbone, image_features: Tensor) -> Tensor:
    """[N, 9] scene logits of the frozen zero-shot CLIP: the gradient regularizer's teacher.

    As the official teacher: the plain image tower's L2-normalised features (no visual prompts),
    the 9 scene prompts, `logit_scale * cos`.
    """
    scenes = F.normalize(backbone.encode_text(backbone.tokenize(list(SCENE_PROMPTS))).float(), dim=-1)
    return backbone.logit_scale * image_features.to(scenes.device).float() @ scenes.t()
