"""Files from the Hugging Face Hub, for every method that downloads its weights: the Hub's own
cache, a fast failure when it cannot be reached, and a check of the file's hash.

One helper for all of them (GRMP-IQA's official release, CLIP-IQA+'s learned prompts, QualiCLIP's
fine-tuned RN50), so that each names its file, its repository and its way out the same way.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from iqa.errors import IQAError, Unavailable


class HubFileUnavailable(Unavailable):
    """A file could not be had from the Hub (offline, unreachable, unknown): exit 3."""


class HubFileMismatch(IQAError, ValueError):
    """A downloaded file is not the one pinned by its hash (changed upstream, or damaged)."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host answers on its port (a few seconds at most, rather than minutes of retries)."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_file(
    repo_id: str, filename: str, way_out: str, sha256: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """The path of `filename` from the Hub repository `repo_id`, downloaded into the Hub's cache on
    first use.

    `sha256` pins the file: its full hex digest, or a prefix of it (pyiqa's file names carry the
    first 8 digits); a file that does not match raises HubFileMismatch. When the file is neither
    cached nor reachable, HubFileUnavailable says so in one line naming the file, the repository
    and `way_out` (how to do without the download).
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    folder = os.fspath(cache_dir) if cache_dir is not None else None
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=folder)
    if isinstance(cached, str):
        path = Path(cached)
    else:
        if hub_offline() or not hub_reachable():
            cause = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub cannot be reached"
            raise HubFileUnavailable(_unavailable(repo_id, filename, cause, way_out))
        try:
            path = Path(hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=folder, etag_timeout=10))
        except Exception as err:  # network errors, an unknown file: all mean "not available"
            raise HubFileUnavailable(_unavailable(repo_id, filename, " ".join(str(err).split()), way_out)) from err
    if sha256:
        check_sha256(path, sha256, f"{filename} from {repo_id}")
    return path


def check_sha256(path: Path, expected: str, what: str) -> None:
    """HubFileMismatch unless the file's sha256 starts with `expected` (the whole digest or a prefix)."""
    actual = file_sha256(path)
    if not actual.startswith(expected.lower()):
        raise HubFileMismatch(
            f"{what} ({path}) has sha256 {actual[:16]}..., not the pinned {expected[:16]}...: "
            f"the file changed or is damaged; delete it to download it again"
        )


def _unavailable(repo_id: str, filename: str, cause: str, way_out: str) -> str:
    return f"could not download {filename} from the Hugging Face Hub repository {repo_id} ({cause}). {way_out}"
