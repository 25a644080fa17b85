"""Splitting scored photos at a threshold, and moving or copying the rejected ones safely."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from .results import ScoreResult


def split_by_threshold(results: list[ScoreResult], threshold: float) -> tuple[list[ScoreResult], list[ScoreResult]]:
    """(kept, rejected): a photo is kept when its score is at least the threshold. Each list is best first."""
    ranked = sorted(results, key=lambda r: r.score, reverse=True)
    return [r for r in ranked if r.score >= threshold], [r for r in ranked if r.score < threshold]


def plan_transfer(paths: Iterable[Path], destination: Path) -> list[tuple[Path, Path]]:
    """Where each file would go in `destination`, never onto an existing file or onto each other.

    A clashing name gets a numbered suffix (photo.jpg -> photo-1.jpg).
    """
    taken: set[Path] = set()
    plan = []
    for source in paths:
        target = _free_name(destination / source.name, taken)
        taken.add(target)
        plan.append((Path(source), target))
    return plan


def _free_name(target: Path, taken: set[Path]) -> Path:
    candidate, n = target, 0
    while candidate.exists() or candidate in taken:
        n += 1
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
    return candidate


def transfer(plan: list[tuple[Path, Path]], mode: str = "copy") -> list[tuple[Path, Path]]:
    """Copy or move each (source, target). A target that appeared meanwhile is never overwritten.

    A move copies first and removes the source only once the copy has the source's size, so an
    interrupted run loses nothing.
    """
    if mode not in ("copy", "move"):
        raise ValueError(f"mode must be 'copy' or 'move', not {mode!r}")
    done = []
    for source, target in plan:
        if target.exists():
            raise FileExistsError(f"{target} appeared while filtering; nothing was written over it")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        if mode == "move":
            if target.stat().st_size != source.stat().st_size:
                raise OSError(f"copy of {source} to {target} is incomplete; the original was kept")
            source.unlink()
        done.append((source, target))
    return done
