"""What identifies a photo file's content without reading all of it, so that a re-run need not hash it.

The disk cache remembers each photo file's content hash against this signature: the file's device,
inode, size, modification and change times, and a hash of its first 64 KiB. On a camera roll of
20 GB that is the difference between reading 20 GB and reading 64 KiB a photo.

Why each part: the change time is set by the system on every write and cannot be set back by
tools (a tool that keeps the modification time, like `exiftool -P`, still changes it); the first
64 KiB hold the EXIF and XMP blocks, so a metadata edit in place is seen even on a file system
that keeps no real change time (some FUSE and network mounts). None (hash the file) where the
signature cannot be trusted: on Windows, whose change time is the creation time; for a file
changed within the last two seconds, where a second write in the same clock tick would not show
(on a network mount whose clock runs behind this machine's, that window is shorter).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from typing import NamedTuple

HEAD_BYTES = 64 * 1024
SETTLE_NS = 2_000_000_000


class FileSignature(NamedTuple):
    key: bytes  # the absolute path as bytes: any file name, in any encoding
    text: str
    size: int  # bytes


def file_signature(path: str | os.PathLike) -> FileSignature | None:
    """The file's signature, or None where it cannot be trusted (see the module) or read."""
    if os.name != "posix":
        return None
    try:
        info = os.stat(path)  # before the read: a write after it gives another signature next time
        if not stat.S_ISREG(info.st_mode) or time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) < SETTLE_NS:
            return None
        with open(path, "rb") as file:
            head = hashlib.blake2b(file.read(HEAD_BYTES), digest_size=8).hexdigest()
    except OSError:
        return None
    text = f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}:{head}"
    return FileSignature(os.fsencode(os.path.abspath(path)), text, info.st_size)
