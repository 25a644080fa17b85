"""Import of the official GRMP-IQA release (Hugging Face Hub `zzhowe/GRMP-IQA`) into GRMP models.

The official `.pt` files are `torch.save(model.state_dict())` of the whole fine-tuned model: 311
tensors in OpenAI CLIP's layout under four prefixes (an optional `module.` from DataParallel is
dropped):
- `image_encoder.*`: the VPT vision transformer: OpenAI `visual.*` keys plus `prompt_embeddings`,
  `deep_prompt_embeddings`, `prompt_proj.*`, `prompt_norm.*`;
- `text_encoder.*`: `transformer.*`, `positional_embedding`, `ln_final.*`, `text_projection`,
  `token_embedding.weight`;
- `prompt_learner2.{ctx, token_prefix, token_suffix}`: the CoOp prompts "X X X X high quality."
  and "X X X X low quality.";
- `logit_scale`.
open_clip's `*-quickgelu` models use OpenAI's key names, so the CLIP part maps one to one onto
`ViT-B-16-quickgelu`. Files are read with `torch.load(weights_only=True)` only: a file that needs
code to unpickle is refused, never run. Tensors are cast to float32 (the official model rounds
its weights through fp16). The imported model uses the official preprocessing (244 squash,
224 centre crop, ImageNet statistics; see `GRMPConfig`) because that is what it was trained on.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import open_clip
import torch

from iqa.clip.backbones import (
    Backbone,
    CheckpointMismatch,
    load_backbone,
    state_mismatch,
    unpickling_reason,
    unreadable_reason,
)
from iqa.clip.hub import HubFileUnavailable, hub_file
from iqa.clip.test_backbones import TEST_BACKBONES
from iqa.errors import IQAError
from iqa.locations import default_cache_dir
from iqa.methods.grmp.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    check_checkpoint,
    checkpoint_paths,
    file_sha256,
    save_checkpoint,
)
from iqa.methods.grmp.model import GRMPConfig, GRMPModel
from iqa.names import DEFAULT_FILE, HUB_REPO

logger = logging.getLogger(__name__)

OFFICIAL_BACKBONE = "ViT-B-16-quickgelu"
# What the default file is, for people reading the app and the README.
DEFAULT_DESCRIPTION = (
    "the official GRMP-IQA release, fine-tuned on 50 labelled LIVE Challenge photos "
    "(lambda = 5) after meta-prompt pre-training on TID2013 and KADID-10k distortions"
)
OFFICIAL_CLASS_TEXTS = ("high quality", "low quality")
VPT_NAMES = ("prompt_embeddings", "deep_prompt_embeddings", "prompt_proj", "prompt_norm")


class OfficialCheckpointError(IQAError, ValueError):
    """A file is not a usable official GRMP-IQA checkpoint (or could not be had)."""


def download_official(filename: str = DEFAULT_FILE, repo_id: str = HUB_REPO, cache_dir: str | None = None) -> Path:
    """Path of an official checkpoint from the Hugging Face Hub (the local cache when it is there)."""
    way_out = (
        f"Without internet access, download it elsewhere (https://huggingface.co/{repo_id}) and "
        f"import the local file with import_official(path)."
    )
    try:
        return hub_file(repo_id, filename, way_out, cache_dir=cache_dir)
    except HubFileUnavailable as err:
        raise OfficialCheckpointError(str(err)) from err


def read_official_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The official state dict as float32 tensors, read without running any code from the file."""
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"official GRMP-IQA checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise OfficialCheckpointError(f"refused to load {path.name}: {unpickling_reason(err)}") from None
    except Exception as err:
        raise OfficialCheckpointError(
            f"{path.name} is not a readable PyTorch checkpoint: {unreadable_reason(path, err)}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OfficialCheckpointError(
            f"{path.name} is not a state dict of tensors (a dictionary of tensor names "
            f"to tensors, as torch.save(model.state_dict()) writes)"
        )
    return {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in state.items()}


def map_official_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(GRMPModel state dict, the official fixed prompt tokens) from an official state dict."""
    mapped, prompt_tokens, unknown = {}, {}, []
    for key, tensor in state.items():
        head, _, rest = key.partition(".")
        if key == "logit_scale":
            mapped["clip.logit_scale"] = tensor
        elif head == "image_encoder":
            is_vpt = rest.split(".")[0] in VPT_NAMES
            mapped[("vpt." if is_vpt else "clip.visual.") + rest] = tensor
        elif head == "text_encoder":
            mapped["clip." + rest] = tensor
        elif key == "prompt_learner2.ctx":
            mapped["prompt_learner.ctx"] = tensor
        elif key in ("prompt_learner2.token_prefix", "prompt_learner2.token_suffix"):
            prompt_tokens[rest] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise OfficialCheckpointError(
            f"not an official GRMP-IQA checkpoint: {len(unknown)} unknown tensors (e.g. {unknown[0]}; expected "
            f"image_encoder.*, text_encoder.*, prompt_learner2.* and logit_scale)"
        )
    for needed in ("prompt_learner.ctx", "vpt.prompt_embeddings", "clip.logit_scale", "clip.visual.conv1.weight"):
        if needed not in mapped:
            raise OfficialCheckpointError(f"not an official GRMP-IQA checkpoint: it has no {needed!r} tensor")
    return mapped, prompt_tokens


def official_config(mapped: dict[str, torch.Tensor], backbone_name: str, source: str) -> GRMPConfig:
    """The paper-variant config that an official checkpoint's tensors describe."""
    ctx = mapped["prompt_learner.ctx"]
    depth = min(
        _block_count(mapped, "clip.visual.transformer.resblocks."), _block_count(mapped, "clip.transformer.resblocks.")
    )
    return GRMPConfig(
        variant="paper",
        backbone=backbone_name,
        pretrained=None,
        n_ctx=ctx.shape[-2],
        class_texts=OFFICIAL_CLASS_TEXTS,
        class_specific=ctx.dim() == 3,
        vpt_tokens=mapped["vpt.prompt_embeddings"].shape[1],
        train_last_blocks=min(4, depth),
        preprocess="official",
        training={"source": "official GRMP-IQA release", "file": source},
    )


def _block_count(mapped: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in mapped if k.startswith(prefix)})


def import_official(
    path: str | os.PathLike,
    backbone: Backbone | None = None,
    device: str | torch.device | None = None,
    sha256: str | None = None,
) -> GRMPModel:
    """A paper-variant GRMPModel holding an official checkpoint's weights, in eval mode.

    `sha256` is the file's hash when the caller has it already (it is recorded in the config).

    The checkpoint carries its whole fine-tuned CLIP, so no pretrained weights are needed: without
    `backbone` the architecture the tensors describe (ViT-B/16 for the release) is built with
    random weights and fully overwritten. A given backbone only supplies the architecture and
    tokenizer and must have the checkpoint's shapes.
    """
    path = Path(path)
    mapped, prompt_tokens = map_official_state(read_official_state(path))
    if backbone is None:
        backbone = load_backbone(_architecture(mapped, path.name), pretrained=None, device=device)
    digest = sha256 or file_sha256(path)
    config = official_config(mapped, backbone.name, source=f"{path.name} (sha256 {digest[:16]})")
    try:
        model = GRMPModel(config, backbone)
    except (TypeError, ValueError) as err:
        raise CheckpointMismatch(f"{path.name} does not fit backbone {backbone.name!r}: {err}") from err
    _check_fit(model, mapped, path.name)
    model.load_state_dict(mapped, strict=False)
    _check_prompt_tokens(model, prompt_tokens, path.name)
    return model.eval()


def converted_official(source: str | os.PathLike = DEFAULT_FILE, cache_dir: str | os.PathLike | None = None) -> Path:
    """The stem of this project's checkpoint converted from an official file, converting only once.

    `source` is a local `.pt` file or a file name in the Hub repository (downloaded once into the
    Hub cache). The conversion is kept under `cache_dir` (default: `default_cache_dir()`), named
    after the file, its content hash and the checkpoint format version, and reused while all are the
    same and it still reads as a checkpoint; otherwise it is converted again (files are written
    atomically, so an interrupted conversion is simply redone).
    """
    path = Path(source)
    if not path.is_file():
        if len(path.parts) > 1 or path.suffix not in (".pt", ".pth"):
            raise OfficialCheckpointError(f"official GRMP-IQA checkpoint {source} does not exist")
        path = download_official(str(source))
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = file_sha256(path)
    stem = folder / "official" / f"{path.stem}-{digest[:12]}-v{FORMAT_VERSION}"
    if _readable(stem):
        logger.info("official checkpoint %s: converted before, using %s", path.name, stem)
    else:
        logger.info("official checkpoint %s: converting to %s", path.name, stem)
        save_checkpoint(import_official(path, device="cpu", sha256=digest), stem)
    return stem


def _readable(stem: Path) -> bool:
    if not checkpoint_paths(stem)[1].is_file():
        return False
    try:
        check_checkpoint(stem)
        return True
    except CheckpointError as err:
        logger.warning("converted checkpoint %s is unreadable (%s); converting again", stem, err)
        return False


def _architecture(mapped: dict[str, torch.Tensor], name: str) -> str:
    """The open_clip model whose vision tower has the checkpoint's width and depth.

    The release is ViT-B/16; the tiny test ViT is recognised too, so tests need no 600 MB file.
    """
    width = mapped["clip.visual.conv1.weight"].shape[0]
    depth = _block_count(mapped, "clip.visual.transformer.resblocks.")
    candidates = {
        OFFICIAL_BACKBONE: open_clip.get_model_config(OFFICIAL_BACKBONE)["vision_cfg"],
        "test-tiny-vit": TEST_BACKBONES["test-tiny-vit"]["vision_cfg"],
    }
    for backbone, vision in candidates.items():
        if (vision["width"], vision["layers"]) == (width, depth):
            return backbone
    raise OfficialCheckpointError(
        f"{name}: a vision tower of width {width} and {depth} blocks is not an official GRMP-IQA model "
        f"(those are {OFFICIAL_BACKBONE}: width 768, 12 blocks)"
    )


def _check_fit(model: GRMPModel, mapped: dict[str, torch.Tensor], name: str) -> None:
    problem = state_mismatch(model.state_dict(), mapped)
    if problem:
        raise CheckpointMismatch(
            f"{name} does not fit backbone {model.backbone.name!r}: {problem}. Official GRMP-IQA checkpoints need "
            f"{OFFICIAL_BACKBONE!r}."
        )


def _check_prompt_tokens(model: GRMPModel, prompt_tokens: dict[str, torch.Tensor], name: str) -> None:
    """The checkpoint's fixed prompt tokens must be those of our prompts: else the texts differ."""
    learner = model.prompt_learner
    for buffer in ("token_prefix", "token_suffix"):
        theirs = prompt_tokens.get(buffer)
        ours = getattr(learner, buffer).cpu()
        if theirs is None:
            continue
        if theirs.shape != ours.shape or not torch.allclose(theirs, ours, atol=1e-3, rtol=1e-3):
            raise OfficialCheckpointError(
                f"{name}: the fixed prompt tokens ({buffer}) differ from those of the prompts "
                f"{learner.prompt_texts}; the checkpoint was trained with other class texts"
            )
