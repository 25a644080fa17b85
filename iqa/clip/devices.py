"""Choice of compute device and number format."""

from __future__ import annotations

import logging

import torch

from iqa.errors import InputError

logger = logging.getLogger(__name__)

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def pick_device(requested: str | torch.device | None = None) -> torch.device:
    """The requested device, or the best available one: cuda, then mps, then cpu."""
    if requested not in (None, "", "auto"):
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {requested!r} was asked for, but CUDA is not available here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise InputError(f"device {requested!r} was asked for, but MPS is not available here")
        return device
    best = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    logger.info("no device asked for: using %s, the best available", best)
    return torch.device(best)


def default_dtype(device: torch.device) -> torch.dtype:
    """Half precision on a GPU, where it is fast and accurate enough; fp32 on the CPU."""
    return torch.float16 if device.type == "cuda" else torch.float32


def parse_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Turn 'fp16' / 'bf16' / 'fp32' (or None for the device default) into a torch dtype."""
    if name is None or name == "auto":
        return default_dtype(device)
    if isinstance(name, torch.dtype):
        dtype = name
    elif name.lower() in _DTYPES:
        dtype = _DTYPES[name.lower()]
    else:
        raise InputError(f"unknown dtype {name!r}; use one of fp32, fp16, bf16")
    if device.type == "cpu" and dtype == torch.float16:
        raise InputError("fp16 is not supported on the CPU; use fp32 (or bf16)")
    return dtype


def precision_name(dtype: torch.dtype) -> str:
    """open_clip's name for a dtype ('fp32', 'fp16', 'bf16')."""
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
