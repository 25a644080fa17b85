"""The compute-heavy parts of the handlers, run under ZeroGPU's `@spaces.GPU` on Hugging Face Spaces.

`spaces` patches torch, so `app.py` imports it before anything imports torch; elsewhere `gpu` is
a no-op decorator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..clipiqa import CLIPIQA
from ..compare import CachedScorer, ComparedPhoto, compare
from ..features import FeatureStore, ProgressFn
from ..grmp.model import GRMPModel
from ..grmp.train import adapt_seed
from ..photos import Photo
from ..quality_map import QualityMap, quality_map

try:  # ZeroGPU on Hugging Face Spaces
    from spaces import GPU as gpu
except ImportError:

    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


@gpu(duration=300)
def run_adapt(store: FeatureStore, images: list, steps: int, lam: float, record: Callable[[dict], None]) -> GRMPModel:
    """The training part of adaptation, on the GPU under ZeroGPU; `record` gets one dict per step."""

    def on_step(step: int, loss: float, val_srcc: float | None) -> None:
        record({"step": step, "loss": loss, "val_srcc": val_srcc})

    model, _ = adapt_seed(store, images, steps=steps, lam=lam, on_step=on_step)
    return model


@gpu
def run_compare(
    photos: Sequence[Photo], clip: CLIPIQA, grmp: CachedScorer | None, progress: ProgressFn | None = None
) -> tuple[list[ComparedPhoto], tuple[dict, dict]]:
    """The compute-heavy part of scoring, on the GPU under ZeroGPU.

    Also returns the features it added to CLIP-IQA's cache: under ZeroGPU this runs in a forked
    worker, and the caller merges them so that a prompt edit still re-scores without re-encoding.
    """
    mark = clip.store.keys()
    rows = compare(photos, [clip] if grmp is None else [clip, grmp], progress)
    return rows, clip.store.added_since(mark)


@gpu
def run_map(photo: Photo, clip: CLIPIQA, progress: ProgressFn | None = None) -> tuple[QualityMap, tuple[dict, dict]]:
    """The quality map of one photo, on the GPU under ZeroGPU; returns the window features it added
    to the store too (merged by the caller, as `run_compare`'s), so a prompt edit re-draws from cache."""
    mark = clip.store.keys()
    qmap = quality_map(photo, clip, progress=progress)
    return qmap, clip.store.added_since(mark)
