"""Resumable training state in a file that cannot carry code: one `.safetensors` file.

Tensors (model, optimiser moments, the random generators' states as uint8 tensors) are stored as
safetensors tensors; everything else (steps, history, settings, schedule) is JSON in the file's
metadata, with each tensor replaced by a reference to its name. Reading it only parses JSON and
tensor bytes, so a tampered file can at worst hold wrong numbers, never run anything. One file
(not a pair) keeps the write atomic: it is written under a temporary name and renamed.

Values allowed: None, bool, int, float (NaN and infinities included), str, list, tuple, dict
(any JSON-able keys: optimiser states are keyed by int), torch tensors, and the dataclasses
registered by the caller (given to `write_state` and `read_state` by name).
"""

from __future__ import annotations

import json
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from iqa.errors import IQAError

METADATA_KEY = "iqa_train_state"
FORMAT = 1


class StateFileError(IQAError, ValueError):
    """A training state file that cannot be read back; the message names the file and why."""


def write_state(path: str | os.PathLike, state: dict) -> None:
    """Write `state` atomically to `path` (a `.safetensors` file)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    plain = _encode(state, tensors)
    metadata = {METADATA_KEY: json.dumps({"format": FORMAT, "state": plain}, allow_nan=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    with tmp.open("rb+") as f:  # on disk before the rename, so a crash leaves the old or the new state
        os.fsync(f.fileno())
    tmp.replace(path)


def read_state(path: str | os.PathLike, dataclasses: dict[str, type]) -> dict:
    """The state written by `write_state`; StateFileError (one line) when it is unreadable or tampered."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if METADATA_KEY not in metadata:
            raise ValueError("it holds no training state in its metadata")
        document = json.loads(metadata[METADATA_KEY])
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("unknown format version")
        state = _decode(document["state"], tensors, dataclasses)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise StateFileError(
            f"{path} is not a readable training state ({reason[:200]}); delete it to start afresh"
        ) from None
    if not isinstance(state, dict):
        raise StateFileError(
            f"{path} is not a readable training state (top level is not a mapping); delete it to start afresh"
        )
    return state


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().clone().contiguous()
        return {"__tensor__": name}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, tensors) for v in value]
        return items if isinstance(value, list) else {"__tuple__": items}
    if isinstance(value, dict):
        return {"__dict__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if is_dataclass(value) and not isinstance(value, type):
        return {
            "__dataclass__": type(value).__name__,
            "fields": {f.name: _encode(getattr(value, f.name), tensors) for f in fields(value)},
        }
    raise TypeError(f"cannot store a {type(value).__name__} in a training state")


def _decode(value: Any, tensors: dict[str, torch.Tensor], dataclasses: dict[str, type]) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode(v, tensors, dataclasses) for v in value]
    if not isinstance(value, dict) or len(value) not in (1, 2):
        raise ValueError(f"unexpected entry {str(value)[:60]}")
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__tuple__" in value:
        return tuple(_decode(v, tensors, dataclasses) for v in value["__tuple__"])
    if "__dict__" in value:
        return {_decode(k, tensors, dataclasses): _decode(v, tensors, dataclasses) for k, v in value["__dict__"]}
    if "__dataclass__" in value:
        cls = dataclasses[value["__dataclass__"]]
        return cls(**{k: _decode(v, tensors, dataclasses) for k, v in value["fields"].items()})
    raise ValueError(f"unexpected entry {str(value)[:60]}")
