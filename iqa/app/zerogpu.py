"""ZeroGPU on Hugging Face Spaces: whether it is on, and its `@spaces.GPU` decorator (which returns
the function unchanged elsewhere, as the `spaces` package itself does off ZeroGPU).

`spaces` patches torch when ZeroGPU is on, so `app.py` imports it before anything imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def on_zerogpu() -> bool:
    """True on a ZeroGPU Space (the `spaces` package installed and SPACES_ZERO_GPU set)."""
    try:
        from spaces.config import Config
    except ImportError:
        return False
    return bool(Config.zero_gpu)


def gpu(duration: Callable[..., float]) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=...)` where the package is installed, else nothing."""
    try:
        from spaces import GPU
    except ImportError:
        return lambda fn: fn
    decorate: Any = GPU(duration=duration)
    return decorate
