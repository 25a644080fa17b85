"""GRMP checkpoints: `<stem>.safetensors` (tensors) beside `<stem>.json` (config and bookkeeping).

What the tensors hold: the learned prompts (text context, VPT, head) always; for the paper
variant also the backbone weights that fine-tuning changes (the trainable blocks and norms), or
the whole backbone when the config names no pretrained weights to rebuild it from (imported
official checkpoints, which carry their own fine-tuned CLIP). The frozen rest comes from
`load_backbone(config.backbone, config.pretrained)` on loading.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from iqa.clip.backbones import (
    Backbone,
    BackboneUnavailable,
    CheckpointMismatch,
    architecture_shapes,
    load_backbone,
    state_mismatch,
)
from iqa.clip.hub import file_sha256 as file_sha256  # re-exported: its users import it from here
from iqa.errors import IQAError
from iqa.methods.grmp.model import GRMPConfig, GRMPModel

logger = logging.getLogger(__name__)
FORMAT = "iqa-grmp"
FORMAT_VERSION = 1
MAX_JSON_BYTES = 1 << 20  # 1 MiB: a config is a few kilobytes
MAX_JSON_DEPTH = 32


class CheckpointError(IQAError, ValueError):
    """A file is not a (readable) GRMP checkpoint."""


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(tensors, json) paths of a checkpoint given by its stem or either of its two files."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def saved_keys(model: GRMPModel) -> list[str]:
    """The state-dict keys a checkpoint of this model holds (see the module docstring).

    Besides the blocks that fine-tuning trains, any backbone tensor that no longer equals the
    pretrained backbone's is saved too, so a reloaded model always scores as the saved one did.
    """
    own = [k for k in model.state_dict() if not k.startswith("clip.")]
    if model.config.variant != "paper":
        return own
    if model.config.pretrained is None:
        return own + model.backbone_state_keys()
    return own + [f"clip.{name}" for name in _changed_backbone_tensors(model)]


def _required_keys(model: GRMPModel) -> set[str]:
    """What a checkpoint of this (freshly built) model must hold at least."""
    own = {k for k in model.state_dict() if not k.startswith("clip.")}
    if model.config.variant != "paper":
        return own
    if model.config.pretrained is None:
        return own | set(model.backbone_state_keys())
    trainable = {id(p) for p in model.trainable_parameters()}
    return own | {f"clip.{name}" for name, p in model.clip.named_parameters() if id(p) in trainable}


def _changed_backbone_tensors(model: GRMPModel) -> list[str]:
    """Names of the paper model's CLIP tensors that train, or that differ from its backbone's."""
    trainable = {id(p) for p in model.trainable_parameters()}
    reference = model.backbone.model.state_dict()
    changed = []
    for name, tensor in model.clip.state_dict(keep_vars=True).items():
        if id(tensor) in trainable or not torch.equal(
            tensor.detach().float().cpu(), reference[name].detach().float().cpu()
        ):
            changed.append(name)
    return changed


def save_checkpoint(model: GRMPModel, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write `<stem>.safetensors` and `<stem>.json`; `path` is a stem, either file, or a folder.

    A folder gets the stem `grmp-<variant>` inside it. Both files are written under temporary
    names and renamed, the JSON last, so a checkpoint is never half there. Returns the two paths.
    """
    return write_checkpoint(*checkpoint_content(model), path)


def checkpoint_content(model: GRMPModel) -> tuple[dict[str, torch.Tensor], dict]:
    """What a checkpoint of `model` holds: its tensors (on the CPU, compacted) and its JSON metadata.

    Apart from the model so that a process that trained it (ZeroGPU's GPU worker) can hand it to
    the one that writes it (`write_checkpoint`) as plain CPU data.
    """
    state = model.state_dict()
    tensors = {k: _compact(state[k]) for k in saved_keys(model)}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "prompts": list(model.prompt_learner.display_texts()),
        "backbone_weights": _backbone_weights(model.config),
    }
    if model.config.pretrained is not None and Path(model.config.pretrained).is_file():
        meta["backbone_file"] = {"path": model.config.pretrained, "sha256": file_sha256(model.config.pretrained)}
    return tensors, meta


def write_checkpoint(tensors: dict[str, torch.Tensor], meta: dict, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write `checkpoint_content`'s tensors and metadata as `save_checkpoint` does."""
    path = Path(path)
    if path.is_dir():
        path = path / f"grmp-{meta['config']['variant']}"
    tensors_path, json_path = checkpoint_paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    _replace_atomically(tensors_path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}))
    text = json.dumps({**meta, "tensors": tensors_path.name}, indent=2, ensure_ascii=False) + "\n"
    _replace_atomically(json_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return tensors_path, json_path


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """float16 where that loses nothing (OpenAI's weights are fp16-born: half the file), else float32."""
    full = tensor.detach().to("cpu", torch.float32).contiguous()
    half = full.half()
    return half if torch.equal(half.float(), full) else full


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_config(path: str | os.PathLike) -> GRMPConfig:
    """The config of a checkpoint, without loading any weights."""
    json_path = checkpoint_paths(path)[1]
    meta = _read_meta(json_path)
    try:
        return GRMPConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{json_path.name} holds an invalid GRMP config: {err}") from err


def load_checkpoint(
    path: str | os.PathLike,
    backbone: Backbone | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> GRMPModel:
    """Rebuild a saved GRMP model, in eval mode.

    Without `backbone` the one named in the JSON is loaded (on `device`, in `dtype`: by default
    fp16 on CUDA for the seed variant, float32 for the paper variant, whose model keeps a float32
    copy of its backbone: rounding it through fp16 would change scores of weights not born in
    fp16). A weights file named by the checkpoint must still be there, unchanged. A given backbone
    must be the one the checkpoint was trained on, else `CheckpointMismatch` says which one it needs.
    """
    check_checkpoint(path)
    tensors_path, json_path = checkpoint_paths(path)
    config = read_config(json_path)
    logger.info(
        "GRMP checkpoint %s (+ %s): %s variant on %s", tensors_path, json_path.name, config.variant, config.backbone
    )
    _check_backbone_source(config, json_path)
    tensors = _read_tensors(tensors_path)
    if backbone is None:
        if config.variant == "paper" and dtype is None:
            dtype = torch.float32
        backbone = _load_named_backbone(config, _read_meta(json_path), device, dtype)
    else:
        _check_backbone(config, backbone, json_path)
    model = GRMPModel(config, backbone)
    _check_tensors(model, tensors, json_path)
    model.load_state_dict(tensors, strict=False)
    return model.eval()


def _check_backbone_source(config: GRMPConfig, json_path: Path) -> None:
    """Refuse a checkpoint that would score on a silently random backbone.

    A seed checkpoint carries no backbone weights, so it needs a pretrained tag or a weights file
    to rebuild them from; a paper checkpoint without one must carry its whole backbone (checked
    with the tensors).
    """
    if config.variant == "seed" and config.pretrained is None:
        raise CheckpointError(
            f"{json_path.name} names no pretrained weights for backbone {config.backbone!r} and a seed "
            f"checkpoint does not carry them: it was trained on a randomly initialised backbone and "
            f"cannot be rebuilt"
        )


def _backbone_weights(config: GRMPConfig) -> str:
    if config.variant == "seed":
        return "none (frozen backbone)"
    if config.pretrained is None:
        return "all (the checkpoint carries its whole backbone)"
    return "fine-tuned blocks only (the rest from the pretrained backbone)"


def _read_meta(json_path: Path) -> dict:
    if not json_path.is_file():
        hint = ""
        if json_path.with_suffix(".pt").is_file() or json_path.with_suffix(".pth").is_file():
            hint = " (an official GRMP-IQA .pt file? import it with iqa.methods.grmp.official.import_official)"
        raise CheckpointError(f"GRMP checkpoint config {json_path} does not exist{hint}")
    meta = _parse_json(json_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{json_path.name} is not a GRMP checkpoint config (no '{FORMAT}' format marker)")
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{json_path.name}: format_version must be an integer, got {version!r:.40}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path.name} has format version {version}; this program reads up to {FORMAT_VERSION}"
        )
    return meta


def _parse_json(json_path: Path) -> object:
    """The JSON in the file, refusing oversized files before reading and deep nesting after parsing
    (a real config is a few kilobytes, three levels deep)."""
    size = json_path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CheckpointError(
            f"{json_path.name} is not a GRMP checkpoint config: {size:,} bytes, more than the "
            f"{MAX_JSON_BYTES:,} a config may have"
        )
    try:
        meta = json.loads(json_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{json_path.name} is not a GRMP checkpoint config: not valid JSON ({err})") from err
    except RecursionError:
        meta = None
    if meta is None or _depth(meta) > MAX_JSON_DEPTH:
        raise CheckpointError(
            f"{json_path.name} is not a GRMP checkpoint config: JSON nested more than {MAX_JSON_DEPTH} levels deep"
        )
    return meta


def _depth(value: object) -> int:
    """Nesting depth of parsed JSON, without recursion (so a deep value cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_checkpoint(path: str | os.PathLike) -> GRMPConfig:
    """The checkpoint's config, once it is known to fit its tensors: every size the config sets is
    compared with the shapes in the .safetensors header (read without loading a tensor), so that
    nothing is allocated from a config its tensors contradict."""
    tensors_path, json_path = checkpoint_paths(path)
    config = read_config(json_path)
    shapes = _header_shapes(tensors_path)
    for key, expected in _expected_shapes(config).items():
        found = shapes.get(key)
        if found is None:
            raise CheckpointError(
                f"{tensors_path.name} has no tensor {key!r}, which a {config.variant} checkpoint needs"
            )
        if not expected(found):
            raise CheckpointError(
                f"{tensors_path.name}: tensor {key!r} has shape {list(found)}, which does not "
                f"fit the config in {json_path.name} ({_config_sizes(config)})"
            )
    if config.variant == "paper" and config.pretrained is None:
        _check_carried_backbone(config, shapes, tensors_path)
    return config


def _check_carried_backbone(config: GRMPConfig, shapes: dict[str, tuple[int, ...]], tensors_path: Path) -> None:
    """A checkpoint without a pretrained tag must hold its whole backbone: checked on the header's
    shapes against the architecture's (built on the meta device, so nothing is allocated) before any
    model is built from it."""
    try:
        expected = architecture_shapes(config.backbone)
    except (BackboneUnavailable, TypeError, ValueError) as err:
        raise CheckpointError(f"{tensors_path.name}: backbone {config.backbone!r} cannot be built ({err})") from err
    missing = [k for k in expected if f"clip.{k}" not in shapes]
    wrong = [k for k, shape in expected.items() if f"clip.{k}" in shapes and shapes[f"clip.{k}"] != shape]
    if missing or wrong:
        example = (missing or wrong)[0]
        raise CheckpointError(
            f"{tensors_path.name} names no pretrained weights, so it must carry its whole {config.backbone} "
            f"backbone, but {len(missing)} of its tensors are missing and {len(wrong)} have another shape "
            f"(e.g. clip.{example})"
        )


def _header_shapes(tensors_path: Path) -> dict[str, tuple[int, ...]]:
    if not tensors_path.is_file():
        raise CheckpointError(f"GRMP checkpoint tensors {tensors_path} do not exist")
    try:
        with safe_open(str(tensors_path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{tensors_path.name} is not a readable safetensors file: {reason}") from err


def _expected_shapes(config: GRMPConfig) -> dict[str, Callable[[tuple[int, ...]], bool]]:
    """Tests on the shapes of the tensors whose sizes the config decides."""
    ctx_dims = 3 if config.class_specific else 2
    tests = {"prompt_learner.ctx": lambda s: len(s) == ctx_dims and s[-2] == config.n_ctx}
    if config.variant == "seed":
        tests["head.mlp.0.weight"] = lambda s: s == (config.mlp_hidden, 2)
    elif config.vpt_tokens > 0:
        tests["vpt.prompt_embeddings"] = lambda s: len(s) == 3 and s[1] == config.vpt_tokens
    return tests


def _config_sizes(config: GRMPConfig) -> str:
    sizes = f"n_ctx={config.n_ctx}, class_specific={config.class_specific}"
    return sizes + (
        f", mlp_hidden={config.mlp_hidden}" if config.variant == "seed" else f", vpt_tokens={config.vpt_tokens}"
    )


def _read_tensors(tensors_path: Path) -> dict[str, torch.Tensor]:
    if not tensors_path.is_file():
        raise CheckpointError(f"GRMP checkpoint tensors {tensors_path} do not exist")
    try:
        return load_file(str(tensors_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{tensors_path.name} is not a readable safetensors file: {err}") from err


def _needed(config: GRMPConfig) -> str:
    tag = f" (pretrained {config.pretrained!r})" if config.pretrained is not None else ""
    return f"backbone {config.backbone!r}{tag}"


def _check_backbone(config: GRMPConfig, backbone: Backbone, json_path: Path) -> None:
    same_weights = config.pretrained is None or config.pretrained == backbone.pretrained
    if backbone.name != config.backbone or not same_weights:
        raise CheckpointMismatch(
            f"{json_path.stem} was trained on {_needed(config)}, not on backbone {backbone.name!r} "
            f"(pretrained {backbone.pretrained!r}); load {config.backbone!r} to use it"
        )


def _load_named_backbone(config: GRMPConfig, meta: dict, device, dtype) -> Backbone:
    """The backbone named in the config: a pretrained tag, or the weights file it was trained on."""
    source = config.pretrained
    if isinstance(meta.get("backbone_file"), dict) or (source is not None and _looks_like_path(config)):
        _check_backbone_file(config, meta)
        return load_backbone(config.backbone, pretrained=None, checkpoint=source, device=device, dtype=dtype)
    return load_backbone(config.backbone, pretrained=source, device=device, dtype=dtype)


def _looks_like_path(config: GRMPConfig) -> bool:
    """A `pretrained` value that is no tag of the backbone: a weights file (older checkpoints)."""
    import open_clip

    tags = {"random-test-weights", *open_clip.list_pretrained_tags_by_model(config.backbone)}
    return config.pretrained not in tags


def _check_backbone_file(config: GRMPConfig, meta: dict) -> None:
    """The weights file a checkpoint was trained on must exist and, where its hash was kept, be unchanged."""
    path = Path(str(config.pretrained))
    if not path.is_file():
        raise CheckpointError(
            f"the backbone weights file {path} named by the checkpoint is missing; put it back, or load "
            f"the checkpoint with the backbone it was trained on"
        )
    recorded = meta.get("backbone_file", {}).get("sha256") if isinstance(meta.get("backbone_file"), dict) else None
    if recorded and file_sha256(path) != recorded:
        raise CheckpointError(
            f"the backbone weights file {path} has changed since the checkpoint was saved (sha256 differs); "
            f"its scores would not be the checkpoint's"
        )


def _check_tensors(model: GRMPModel, tensors: dict[str, torch.Tensor], json_path: Path) -> None:
    problem = state_mismatch(model.state_dict(), tensors, _required_keys(model))
    if problem:
        raise CheckpointMismatch(f"{json_path.stem} does not fit {_needed(model.config)} as configured: {problem}")
