"""Loading CLIP backbones: open_clip pretrained weights, local checkpoints, or the test backbones.

A `Backbone` bundles the model with its tokenizer, device, dtype and the one detail that matters for
CLIP-IQA: RN50 as used by the reference implementation encodes images at their own resolution with
the attention pool's positional embedding switched off (`native_resolution`).
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet

from iqa.clip.devices import parse_dtype, pick_device, precision_name
from iqa.clip.hub import hub_offline, hub_reachable
from iqa.clip.test_backbones import TEST_BACKBONES, build_test_model, is_test_backbone
from iqa.clip.text_tower import TextTower
from iqa.errors import IQAError
from iqa.names import DEFAULT_BACKBONE, DEFAULT_PRETRAINED

logger = logging.getLogger(__name__)
CHECKPOINT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


class BackboneUnavailable(IQAError, RuntimeError):
    """The weights of a backbone could not be had (no network, unknown name or tag, bad file)."""


class CheckpointMismatch(IQAError, ValueError):
    """A checkpoint does not fit the backbone it is being loaded into."""


class BadCheckpoint(CheckpointMismatch):
    """A checkpoint file that cannot be read safely: it would run code, or is empty, truncated or
    not a checkpoint. A CheckpointMismatch, so every handler of unusable checkpoints (the command
    line's exit code 2, the app's messages) treats both alike."""


@dataclass
class Backbone:
    name: str
    pretrained: str | None
    model: open_clip.CLIP
    tokenizer: Callable[[list[str]], torch.Tensor]
    device: torch.device
    dtype: torch.dtype
    is_test: bool
    native_resolution: bool
    image_size: int
    logit_scale: float
    preprocess_cfg: dict  # open_clip's: size, mean, std, interpolation, resize mode
    source: str = ""  # where the weights came from, in words

    @property
    def key(self) -> str:
        """Identifies the weights and number format, for feature caches."""
        return f"{self.name}|{self.pretrained}|{precision_name(self.dtype)}|native={self.native_resolution}"

    @property
    def embed_dim(self) -> int:
        return self.model.visual.output_dim

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.model.visual, ModifiedResNet)

    @property
    def description(self) -> str:
        return f"{self.name} ({self.source}) on {self.device.type}, {precision_name(self.dtype)}"

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.device)

    @cached_property
    def text_tower(self) -> TextTower | None:
        """The tower's parts for padding-free encoding; None for towers it does not cover (HF)."""
        try:
            return TextTower(self.model)
        except TypeError:
            return None

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalised text embeddings, computed without the padding after the end token."""
        tokens = tokens.to(self.device)
        if self.text_tower is None:
            return self.model.encode_text(tokens)
        return self.text_tower.encode_tokens(tokens)

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unnormalised image embeddings of a batch of same-sized, normalised images."""
        pixels = pixels.to(self.device, self.dtype)
        if self.native_resolution:
            return encode_image_native(self.model.visual, pixels)
        return self.model.encode_image(pixels)


def encode_image_native(visual: ModifiedResNet, x: torch.Tensor) -> torch.Tensor:
    """ModifiedResNet forward for any input size: attention pool without positional embedding.

    The reference CLIP-IQA feeds images at their own resolution, which the 7x7 positional embedding
    of open_clip's `AttentionPool2d` cannot take; it is switched off as in the reference. Only the
    mean token's output is needed, so it is the only query.
    """
    x = visual.stem(x)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    tokens = x.flatten(2).permute(2, 0, 1)  # (HW)NC
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    pool = visual.attnpool
    out, _ = F.multi_head_attention_forward(
        query=tokens[:1],
        key=tokens,
        value=tokens,
        embed_dim_to_check=tokens.shape[-1],
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )
    return out[0]


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    pretrained: str | None = DEFAULT_PRETRAINED,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    native_resolution: bool | None = None,
) -> Backbone:
    """Load a CLIP backbone.

    Weights come from `checkpoint` (a file, or a folder holding one) when given, else from the
    open_clip `pretrained` tag (downloaded from the Hugging Face Hub and cached), else the model
    keeps random weights (pretrained=None). Names starting with "test-" are the tiny test backbones.
    `native_resolution` defaults to True for ResNet towers (the reference CLIP-IQA set-up).
    """
    device = pick_device(device)
    dtype = parse_dtype(dtype, device)
    tag: str | None
    if is_test_backbone(name):
        model, tokenizer, tag = build_test_model(name), open_clip.tokenizer.SimpleTokenizer(), "random-test-weights"
        if checkpoint is not None:
            _load_checkpoint_into(model, name, _checkpoint_file(Path(checkpoint)))
            tag = str(Path(checkpoint).resolve())
    else:
        model, tag = _create_model(name, pretrained, checkpoint)
        tokenizer = open_clip.get_tokenizer(name)
    source = _weights_source(name, tag, tag if checkpoint is not None else None)
    logger.info("loaded backbone %s: %s", name, source)
    return _wrap(name, tag, model, tokenizer, device, dtype, native_resolution, source)


def backbone_from_state(
    name: str,
    state: Mapping[str, torch.Tensor],
    tag: str,
    source: str,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> Backbone:
    """Backbone `name` holding the weights `state` (a whole state dict, in open_clip's key names):
    for a method whose file carries a fine-tuned CLIP besides other tensors (QualiCLIP).

    `tag` names the weights in `Backbone.key` (feature caches): give it the file's hash. A state
    of another architecture raises CheckpointMismatch naming the tensors that do not fit.
    """
    device = pick_device(device)
    dtype = parse_dtype(dtype, device)
    if is_test_backbone(name):
        model, tokenizer = build_test_model(name), open_clip.tokenizer.SimpleTokenizer()
    else:
        with _no_random_init_warning():
            model = open_clip.create_model(name, pretrained=None)
        tokenizer = open_clip.get_tokenizer(name)
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointMismatch(f"{source} does not fit backbone {name!r}: {problem}")
    model.load_state_dict(dict(state), strict=True)
    logger.info("loaded backbone %s: %s", name, source)
    return _wrap(name, tag, model, tokenizer, device, dtype, None, source)


def _wrap(
    name: str,
    tag: str | None,
    model: open_clip.CLIP,
    tokenizer: Callable[[list[str]], torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
    native_resolution: bool | None,
    source: str,
) -> Backbone:
    logit_scale = float(model.logit_scale.detach().float().exp())
    # every tensor in one dtype: open_clip's convert_weights_to_lp leaves LayerNorms in fp32, which
    # CUDA's layer norm refuses to mix with half-precision activations
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    resnet = isinstance(model.visual, ModifiedResNet)
    return Backbone(
        name=name,
        pretrained=tag,
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        is_test=is_test_backbone(name),
        native_resolution=resnet if native_resolution is None else native_resolution and resnet,
        image_size=_image_size(model),
        logit_scale=logit_scale,
        preprocess_cfg=open_clip.get_model_preprocess_cfg(model),
        source=source,
    )


def _weights_source(name: str, tag: str | None, checkpoint) -> str:
    if checkpoint is not None:
        return f"weights from {checkpoint}"
    if is_test_backbone(name):
        return "random test weights"
    return f"pretrained {tag!r}" if tag else "random init"


@contextmanager
def _no_random_init_warning():
    """Hide open_clip's "No pretrained weights loaded ... initialized randomly" where that is the plan:
    the weights are loaded right after (a local file, a GRMP-IQA checkpoint) or asked to be random."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def architecture_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of backbone `name`, from its configuration alone (meta device: no memory)."""
    with torch.device("meta"):
        if is_test_backbone(name):
            model: torch.nn.Module = open_clip.model.CLIP(**TEST_BACKBONES[name])
        else:
            cfg = open_clip.get_model_config(name)
            if cfg is None:
                raise BackboneUnavailable(f"unknown backbone {name!r}: not an open_clip model name")
            cls = open_clip.model.CustomTextCLIP if "hf_model_name" in cfg.get("text_cfg", {}) else open_clip.model.CLIP
            model = cls(**cfg)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def available_backbones() -> list[str]:
    """Test backbones first, then every open_clip model name."""
    return sorted(TEST_BACKBONES) + open_clip.list_models()


def _image_size(model: open_clip.CLIP) -> int:
    size = model.visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else int(size)


def _create_model(name: str, pretrained: str | None, checkpoint) -> tuple[open_clip.CLIP, str | None]:
    if name not in open_clip.list_models():
        raise BackboneUnavailable(
            f"unknown backbone {name!r}: not an open_clip model name (e.g. RN50-quickgelu, "
            f"ViT-B-16-quickgelu, ViT-L-14-quickgelu) nor a test backbone ({', '.join(TEST_BACKBONES)})"
        )
    if checkpoint is not None or pretrained is None:
        with _no_random_init_warning():
            model = open_clip.create_model(name, pretrained=None)
    if checkpoint is not None:
        _load_checkpoint_into(model, name, _checkpoint_file(Path(checkpoint)))
        return model, str(Path(checkpoint).resolve())
    if pretrained is None:
        return model, None
    _check_weights_reachable(name, pretrained)
    try:
        return open_clip.create_model(name, pretrained=pretrained), pretrained
    except Exception as err:  # open_clip raises bare RuntimeErrors for every download failure
        raise BackboneUnavailable(_unavailable_message(name, pretrained, err)) from err


def _check_weights_reachable(name: str, tag: str) -> None:
    """Fail at once, rather than after minutes of retries, when weights are neither cached nor reachable."""
    if tag not in open_clip.list_pretrained_tags_by_model(name):
        known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise BackboneUnavailable(f"{name!r} has no pretrained weights tagged {tag!r} (known tags: {known})")
    repo = open_clip.get_pretrained_cfg(name, tag).get("hf_hub", "")
    if _hub_weights_cached(repo):
        return
    if hub_offline() or not hub_reachable():
        cause = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub cannot be reached"
        raise BackboneUnavailable(_unavailable_message(name, tag, cause))


def _hub_weights_cached(repo: str) -> bool:
    if not repo:
        return False
    from huggingface_hub import try_to_load_from_cache

    parts = repo.strip("/").split("/")
    repo_id = "/".join(parts[:2])
    names = (
        [parts[2]]
        if len(parts) > 2
        else [open_clip.constants.HF_SAFE_WEIGHTS_NAME, open_clip.constants.HF_WEIGHTS_NAME]
    )
    return any(isinstance(try_to_load_from_cache(repo_id, n), str) for n in names)


def _unavailable_message(name: str, tag: str, cause) -> str:
    return (
        f"cannot load weights for backbone {name!r} (pretrained={tag!r}): {cause}. "
        f"Either give a local checkpoint file or folder (--weights PATH, or the IQA_WEIGHTS variable), "
        f"or use the test backbone (--backbone test-tiny-rn), whose scores are meaningless."
    )


def _checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        found = [path / c for c in CHECKPOINT_FILES if (path / c).is_file()]
        found = found[:1] or sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".pt", ".pth", ".bin"))
        if len(found) == 1:
            logger.info("weights folder %s: using %s", path, found[0].name)
            return found[0]
        raise BackboneUnavailable(
            f"checkpoint folder {path} holds no single weights file (looked for {', '.join(CHECKPOINT_FILES)})"
        )
    if not path.is_file():
        raise BackboneUnavailable(f"checkpoint {path} does not exist")
    return path


def _load_checkpoint_into(model: open_clip.CLIP, name: str, path: Path) -> None:
    state = read_state_dict(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointMismatch(
            f"{path.name} does not fit backbone {name!r}: {problem}. It was probably saved from another backbone."
        )
    model.load_state_dict(state, strict=True)


def read_weights(path: Path) -> object:
    """What a weights file holds (a tensor, or a dictionary of them), read without running code:
    `.safetensors`, or `torch.load(weights_only=True)`. A file that would need code to unpickle,
    or that is not a checkpoint at all, raises BadCheckpoint with one line saying why."""
    if not path.is_file():
        raise BackboneUnavailable(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: noise
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise BadCheckpoint(f"refused to load {path}: {unpickling_reason(err)}") from None
    except Exception as err:
        raise BadCheckpoint(f"{path} is not a readable checkpoint: {unreadable_reason(path, err)}") from None


def unpickling_reason(err: Exception) -> str:
    """One line for a file torch.load(weights_only=True) refused: it would have to run code.

    torch's own message is many lines long and advises loading with weights_only=False, which is
    exactly what must not be done with a file of unknown origin; only its diagnosis is kept.
    """
    detail = str(err).partition("WeightsUnpickler error:")[2].strip().split("\n")[0].split(". ")[0].strip()
    if not detail or "weights_only" in detail:
        detail = "it holds objects other than tensors"
    return (
        f"it is not a plain tensor checkpoint, and reading it would run code stored in the file ({detail.rstrip('.')})"
    )


def unreadable_reason(path: Path, err: Exception) -> str:
    """Why a file is not a checkpoint, on one line, for any error that reading it raised."""
    try:
        if path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
    except OSError as os_err:
        return os_err.strerror or str(os_err)
    if isinstance(err, EOFError):
        return "the file is truncated (it ends before its data does)"
    if isinstance(err, ValueError) and str(err).startswith("expected"):
        return str(err)
    text = " ".join(str(err).split())[:160]
    kind = "a .safetensors file" if path.suffix == ".safetensors" else "a PyTorch or safetensors file"
    return f"not {kind} ({type(err).__name__}{': ' + text if text else ''})"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A file's state dict (under `state_dict` where it nests one), read as `read_weights` reads it."""
    state = read_weights(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadCheckpoint(f"{path} is not a readable checkpoint: expected a dictionary of tensors")
    return state


def state_mismatch(
    own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], required: Iterable[str] | None = None
) -> str:
    """What keeps state `given` from loading into a module whose state is `own`, in words; '' when it fits.

    Missing tensors (of `required`, by default all of `own`), unexpected ones, ones of another shape.
    """
    needed = set(own) if required is None else set(required)
    missing = sorted(needed - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = sorted(k for k in set(own) & set(given) if own[k].shape != given[k].shape)
    found = (("missing tensors", missing), ("unexpected tensors", unexpected), ("tensors of another shape", shapes))
    return "; ".join(f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in found if keys)
