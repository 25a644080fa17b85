"""Where the project keeps files between runs by default (imports nothing of its own)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$IQA_CACHE_DIR, else $XDG_CACHE_HOME/iqa, else ~/.cache/iqa."""
    if os.environ.get("IQA_CACHE_DIR"):
        return Path(os.environ["IQA_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iqa"
