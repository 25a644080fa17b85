"""Image features kept on disk between runs: one SQLite file, raw float32 vectors, no code.

Trying a new prompt pair on a folder that was scored before then costs no decoding and no image
encoding. Rows are keyed by (model key, preprocessing key, content hash of the photo file); the
model key names the backbone, its weights and number format. A vector is stored as the bytes of a
float32 array and read back with `numpy.frombuffer`, so nothing in the file can run code; a row
whose length does not fit is dropped, and a file that is not a readable database is moved aside
and started afresh (never trusted). SQLite's write-ahead log lets several processes read and write
at once. The file is bounded: past `max_bytes` the least recently used rows are evicted.

It also remembers each photo file's content hash and size against the file's signature
(`iqa.file_signature`), so that a re-run hashes only the files that changed. Those rows are bounded
by count (`MAX_FILES`, least recently used forgotten) and count towards `max_bytes` too.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 * 1024**3
FILE_NAME = "features.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    model TEXT NOT NULL,
    preprocess TEXT NOT NULL,
    digest TEXT NOT NULL,
    vector BLOB NOT NULL,
    used REAL NOT NULL,
    PRIMARY KEY (model, preprocess, digest)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS features_used ON features (used);
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,
    signature TEXT NOT NULL,
    digest TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    used REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_used ON files (used);
"""
MAX_FILES = 250_000  # remembered file hashes, about 320 bytes each (80 MB at the bound)
_BATCH = 500  # rows per statement: below SQLite's limit on bound parameters


def default_cache_dir() -> Path:
    """$IQA_CACHE_DIR, else $XDG_CACHE_HOME/iqa, else ~/.cache/iqa."""
    if os.environ.get("IQA_CACHE_DIR"):
        return Path(os.environ["IQA_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iqa"


class DiskCache:
    """Feature vectors on disk, shared by every process that opens the same folder."""

    def __init__(self, folder: str | os.PathLike | None = None, max_bytes: int | None = None):
        self.path = Path(folder if folder is not None else default_cache_dir()) / FILE_NAME
        self.max_bytes = max_bytes or DEFAULT_MAX_BYTES
        self._local = threading.local()
        self._files_count: int | None = None  # counted once, then kept up to date by this process
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open_or_rebuild()

    def get(self, model: str, preprocess: str, digests: Iterable[str], dim: int) -> dict[str, np.ndarray]:
        """The cached vectors of `digests` that are there and have `dim` float32 values."""
        wanted = list(dict.fromkeys(digests))
        found: dict[str, np.ndarray] = {}
        broken: list[str] = []
        db = self._db()
        for start in range(0, len(wanted), _BATCH):
            chunk = wanted[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT digest, vector FROM features WHERE model = ? AND preprocess = ? AND digest IN ({marks})",
                (model, preprocess, *chunk),
            ).fetchall()
            for digest, blob in rows:
                if len(blob) == 4 * dim:
                    found[digest] = np.frombuffer(blob, dtype="<f4").copy()
                else:
                    broken.append(digest)
        self._touch(model, preprocess, list(found))
        if broken:
            logger.warning("dropped %d cached features of the wrong size from %s", len(broken), self.path)
            self._delete(model, preprocess, broken)
        return found

    def put(self, model: str, preprocess: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Store vectors (float32) by digest, then evict the least recently used rows past the bound."""
        now = time.time()
        rows = [(model, preprocess, digest, np.asarray(v, dtype="<f4").tobytes(), now) for digest, v in vectors.items()]
        db = self._db()
        with db:
            db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)", rows)
        self._evict()

    def known_files(self, signatures: Mapping[bytes, str]) -> dict[bytes, tuple[str, tuple[int, int]]]:
        """(content hash, size) of the files (by `FileSignature.key`) whose signature is the one remembered."""
        found: dict[bytes, tuple[str, tuple[int, int]]] = {}
        paths = list(signatures)
        db = self._db()
        for start in range(0, len(paths), _BATCH):
            chunk = paths[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT path, signature, digest, width, height FROM files WHERE path IN ({marks})", chunk
            ).fetchall()
            for path, signature, digest, width, height in rows:
                if signature == signatures[path]:
                    found[path] = (digest, (int(width), int(height)))
        if found:
            now = time.time()
            with db:
                db.executemany("UPDATE files SET used = ? WHERE path = ?", [(now, path) for path in found])
        return found

    def remember_files(self, files: Mapping[bytes, tuple[str, str, tuple[int, int]]]) -> None:
        """Remember (signature, content hash, size) by file key; past `MAX_FILES`, forget the oldest."""
        if not files:
            return
        now = time.time()
        rows = [(path, sig, digest, size[0], size[1], now) for path, (sig, digest, size) in files.items()]
        db = self._db()
        with db:
            db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", rows)
        if self._files_count is None:
            self._files_count = int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0])
        else:
            self._files_count += len(rows)  # replaced rows overcount: only an earlier recount
        if self._files_count > MAX_FILES:
            self._forget_files(db)

    def _forget_files(self, db: sqlite3.Connection) -> None:
        count = int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0])
        if count > MAX_FILES:
            with db:
                db.execute(
                    "DELETE FROM files WHERE path IN (SELECT path FROM files ORDER BY used LIMIT ?)",
                    (count - int(0.9 * MAX_FILES),),
                )
            count = int(0.9 * MAX_FILES)
        self._files_count = count

    def size_bytes(self) -> int:
        """Bytes of the database in use (pages not on the free list), read without a table scan."""
        db = self._db()
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages * db.execute("PRAGMA page_size").fetchone()[0])

    def __len__(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM features").fetchone()[0])

    def _db(self) -> sqlite3.Connection:
        """One connection per thread (SQLite connections must not be shared across threads)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _open_or_rebuild(self) -> None:
        try:
            db = self._db()
            db.executescript(SCHEMA)
            db.execute("SELECT model, preprocess, digest, vector, used FROM features LIMIT 1").fetchall()
            db.execute("SELECT path, signature, digest, width, height, used FROM files LIMIT 1").fetchall()
        except sqlite3.DatabaseError as err:
            self._local.db = None
            aside = self.path.with_name(f"{FILE_NAME}.broken-{int(time.time())}")
            logger.warning(
                "feature cache %s is not readable (%s); moved to %s, starting afresh", self.path, err, aside.name
            )
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{self.path}{suffix}")
                if part.exists():
                    part.replace(Path(f"{aside}{suffix}"))
            self._db().executescript(SCHEMA)

    def _touch(self, model: str, preprocess: str, digests: list[str]) -> None:
        if not digests:
            return
        now = time.time()
        db = self._db()
        with db:
            db.executemany(
                "UPDATE features SET used = ? WHERE model = ? AND preprocess = ? AND digest = ?",
                [(now, model, preprocess, d) for d in digests],
            )

    def _delete(self, model: str, preprocess: str, digests: list[str]) -> None:
        db = self._db()
        with db:
            db.executemany(
                "DELETE FROM features WHERE model = ? AND preprocess = ? AND digest = ?",
                [(model, preprocess, d) for d in digests],
            )

    def _evict(self) -> None:
        """Past `max_bytes`, drop the least recently used rows down to about 90% of it."""
        used = self.size_bytes()
        if used <= self.max_bytes:
            return
        db = self._db()
        rows = db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
        doomed = math.ceil((used - 0.9 * self.max_bytes) / max(1.0, used / max(rows, 1)))
        with db:
            db.execute(
                "DELETE FROM features WHERE (model, preprocess, digest) IN "
                "(SELECT model, preprocess, digest FROM features ORDER BY used LIMIT ?)",
                (doomed,),
            )
        logger.info("feature cache: evicted %d of %d rows past %d bytes", doomed, rows, self.max_bytes)
