"""The compute-heavy parts of the handlers, run under ZeroGPU's `@spaces.GPU` on Hugging Face Spaces.

`spaces` patches torch, so `app.py` imports it before anything imports torch; elsewhere `gpu` is
a no-op decorator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


@dataclass
class Added:
    """What a run cached, for the caller to merge: under ZeroGPU the run happens in a forked worker,
    whose caches are lost with it. `clip` holds CLIP-IQA's store additions; `grmp_features` those of
    a GRMP-IQA scorer's own store (the paper/official models encode through their prompted tower),
    and `grmp_results` its per-photo results."""

    clip: tuple[dict, dict]
    grmp_features: tuple[dict, dict] = field(default_factory=lambda: ({}, {}))
    grmp_results: dict = field(default_factory=dict)

    def merge_into(self, store: FeatureStore, grmp: CachedScorer | None) -> None:
        store.merge(self.clip)
        if grmp is not None:
            own = _own_store(grmp, store)
            if own is not None:
                own.merge(self.grmp_features)
            grmp.merge(self.grmp_results)


def _own_store(grmp: CachedScorer, clip_store: FeatureStore) -> FeatureStore | None:
    """The GRMP-IQA scorer's feature store when it is not CLIP-IQA's (then it has additions of its own)."""
    store = getattr(grmp.scorer, "store", None)
    return store if isinstance(store, FeatureStore) and store is not clip_store else None


@gpu
def run_compare(
    photos: Sequence[Photo], clip: CLIPIQA, grmp: CachedScorer | None, progress: ProgressFn | None = None
) -> tuple[list[ComparedPhoto], Added]:
    """The compute-heavy part of scoring, on the GPU under ZeroGPU.

    Also returns what it added to the caches (CLIP-IQA's features, GRMP-IQA's own features and
    results): under ZeroGPU this runs in a forked worker, and the caller merges them
    (`Added.merge_into`) so that a prompt edit or another Score click re-encodes nothing.
    """
    own = _own_store(grmp, clip.store) if grmp is not None else None
    marks = clip.store.keys(), own.keys() if own is not None else None, grmp.keys() if grmp is not None else None
    rows = compare(photos, [clip] if grmp is None else [clip, grmp], progress)
    added = Added(clip.store.added_since(marks[0]))
    if own is not None and marks[1] is not None:
        added.grmp_features = own.added_since(marks[1])
    if grmp is not None and marks[2] is not None:
        added.grmp_results = grmp.added_since(marks[2])
    return rows, added


@gpu
def run_map(photo: Photo, clip: CLIPIQA, progress: ProgressFn | None = None) -> tuple[QualityMap, tuple[dict, dict]]:
    """The quality map of one photo, on the GPU under ZeroGPU; returns the window features it added
    to the store too (merged by the caller, as `run_compare`'s), so a prompt edit re-draws from cache."""
    mark = clip.store.keys()
    qmap = quality_map(photo, clip, progress=progress)
    return qmap, clip.store.added_since(mark)
