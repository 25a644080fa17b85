"""Splitting scored photos at a threshold, and moving or copying the rejected ones safely.

A copy is written under a temporary name in the destination folder (`.NAME.iqa-partial`),
flushed to disk, then given its final name in one atomic step, so a final name never holds a
truncated photo, whatever interrupts the run (kill -9, a full disk, a power cut). A move deletes
the original only once the copy's size and content hash equal the original's. Re-running after an
interruption removes the leftover temporary files and recognises photos already copied (same name,
same content), so it finishes the job without `-1` duplicates.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from iqa.errors import OutputError
from iqa.methods.results import ScoreResult

PARTIAL_SUFFIX = ".iqa-partial"
_CHUNK = 1 << 20


def split_by_threshold(results: list[ScoreResult], threshold: float) -> tuple[list[ScoreResult], list[ScoreResult]]:
    """(kept, rejected): a photo is kept when its score is at least the threshold. Each list is best first.

    A result without a finite score is in neither list; `unscored` lists those.
    """
    ranked = sorted((r for r in results if math.isfinite(r.score)), key=lambda r: r.score, reverse=True)
    return [r for r in ranked if r.score >= threshold], [r for r in ranked if r.score < threshold]


def unscored(results: list[ScoreResult]) -> list[ScoreResult]:
    """The results whose score is not a finite number (so neither kept nor rejected)."""
    return [r for r in results if not math.isfinite(r.score)]


def plan_transfer(paths: Iterable[Path], destination: Path) -> list[tuple[Path, Path]]:
    """Where each file would go in `destination`, never onto another file or onto each other.

    A clashing name gets a numbered suffix (photo.jpg -> photo-1.jpg), unless the file already
    there is this very photo (same size and content: a copy an interrupted run finished), which
    is then reused.
    """
    taken: set[Path] = set()
    plan = []
    for source in paths:
        source = Path(source)
        target = _free_name(source, destination / source.name, taken)
        taken.add(target)
        plan.append((source, target))
    return plan


def _free_name(source: Path, target: Path, taken: set[Path]) -> Path:
    candidate, n = target, 0
    while candidate in taken or (candidate.exists() and not same_file_content(source, candidate)):
        n += 1
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
    return candidate


def same_file_content(a: Path, b: Path) -> bool:
    """True when both are regular files of the same size and content hash."""
    try:
        if not (a.is_file() and b.is_file()) or a.stat().st_size != b.stat().st_size:
            return False
        return file_digest(a) == file_digest(b)
    except OSError:
        return False


def file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=32)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_partials(destination: Path) -> list[Path]:
    """Delete the temporary files an interrupted run left in `destination`; returns them."""
    if not destination.is_dir():
        return []
    leftovers = [p for p in destination.iterdir() if p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX)]
    for path in leftovers:
        path.unlink()
    return leftovers


def transfer(plan: list[tuple[Path, Path]], mode: str = "copy") -> list[tuple[Path, Path]]:
    """Copy or move each (source, target). A target that appeared meanwhile is never overwritten.

    Raises OutputError (an OSError naming the photo, the target and the reason, and how many
    were done before it) when the destination cannot be written: nothing is lost, and running
    again finishes the job.
    """
    if mode not in ("copy", "move"):
        raise ValueError(f"mode must be 'copy' or 'move', not {mode!r}")
    done: list[tuple[Path, Path]] = []
    for source, target in plan:
        try:
            _transfer_one(source, target, mode)
        except OSError as error:
            verb = "moved" if mode == "move" else "copied"
            raise OutputError(
                error.errno or errno.EIO,
                f"could not {mode} {source} to {target}: {_reason(error)} ({len(done)} of {len(plan)} "
                f"photos {verb} before it; nothing was lost, run again to finish)",
            ) from error
        done.append((source, target))
    return done


def _transfer_one(source: Path, target: Path, mode: str) -> None:
    """Copy, or copy and then delete `source`. A symbolic link is copied as the photo it points to,
    and a move deletes the link only: never a file it points to, inside the folder or outside it."""
    if target.exists():
        if not same_file_content(source, target):
            raise FileExistsError(errno.EEXIST, "a different file appeared there; nothing was written over it")
    else:
        _ensure_folder(target.parent)
        _copy_atomically(source, target)
    if mode == "move":
        if not same_file_content(source, target):
            raise OSError(errno.EIO, "the copy differs from the original in size or content; the original was kept")
        source.unlink()


def _ensure_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)


def _copy_atomically(source: Path, target: Path) -> None:
    """Copy to a temporary name beside `target`, fsync, then link it to the final name."""
    partial = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
    try:
        with source.open("rb") as src, partial.open("wb") as dst:
            copy_stream(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, partial)
        _publish(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _fsync_folder(target.parent)


def copy_stream(src, dst) -> None:
    """Copy a file object's bytes in chunks (the step a full disk interrupts)."""
    shutil.copyfileobj(src, dst, _CHUNK)


def _publish(partial: Path, target: Path) -> None:
    """Give `partial` the name `target` atomically, failing (not overwriting) if `target` exists."""
    appeared = FileExistsError(errno.EEXIST, "a file appeared there while copying; nothing was written over it")
    try:
        os.link(partial, target)
    except FileExistsError:
        raise appeared from None
    except OSError:  # file systems without hard links: rename, after checking
        if target.exists():
            raise appeared from None
        os.replace(partial, target)


def _fsync_folder(folder: Path) -> None:
    """Make the new name durable; not every platform can open a folder, which is then skipped."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def check_destination(destination: Path, source_folders: Iterable[Path], recursive: bool) -> str | None:
    """Why filtering into `destination` would be wrong, else None.

    Moving rejected photos into the folder they come from renames them on every run; a folder
    inside it, with `recursive`, feeds them back into the next run.
    """
    dest = _absolute(destination)
    for folder in {_absolute(f) for f in source_folders}:
        if dest == folder:
            return f"{destination} is the folder the photos come from; choose a folder outside it"
        if recursive and folder in dest.parents:
            return f"{destination} is inside {folder}, which is searched with --recursive; choose a folder outside it"
    return None


def _absolute(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(path).absolute()
