"""Image features kept on disk between runs: one SQLite file, raw float32 vectors, no code.

Trying a new prompt pair on a folder that was scored before then costs no decoding and no image
encoding. Rows are keyed by (model key, preprocessing key, content hash of the photo file); the
model key names the backbone, its weights and number format. A vector is stored as the bytes of a
float32 array, followed by a checksum of its key and bytes, and read back with `numpy.frombuffer`,
so nothing in the file can run code. A row is used only if its length and checksum are right and
it is what an image feature is (finite, unit length); any other is dropped (and so encoded again)
and counted in `dropped`.

The file is never taken for broken on a guess: a file that is locked by another process is waited
for (`LOCK_WAIT_S`), then read without writing, or left alone for the run; a read-only one is read
without writing; only a file that SQLite itself finds corrupt (`PRAGMA quick_check`) is moved aside
and started afresh. What this changes for the run is in `notices`, one line each, for the caller
to show. SQLite's write-ahead log lets several processes read and write at once. The file is
bounded: past `max_bytes` the least recently used rows are evicted.

It also remembers each photo file's content hash and size against the file's signature
(`iqa.photos.signature`), so that a re-run hashes only the files that changed. Those rows are bounded
by count (`MAX_FILES`, least recently used forgotten) and count towards `max_bytes` too.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from iqa.errors import UsageError
from iqa.locations import default_cache_dir

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 * 1024**3
FILE_NAME = "features.sqlite"
FORMAT = 2  # PRAGMA user_version: 2 = vectors followed by a checksum; rows of an older format are dropped
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
LOCK_WAIT_S = 10.0  # how long a statement waits for another process's lock before the run goes on without it
CHECK_BYTES = 8  # blake2b of the row's key and vector, after the vector
NORM_TOLERANCE = 1e-2  # features are L2-normalised in float32; a stored one is 1 within rounding
_BATCH = 500  # rows per statement: below SQLite's limit on bound parameters
_T = TypeVar("_T")


class CacheFolderError(UsageError):
    """`--cache-dir` (or the default folder) names something that is not a folder."""


def error_kind(err: sqlite3.Error) -> str:
    """What an SQLite error means for the cache: locked, readonly, corrupt, unopenable or other."""
    code = getattr(err, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return _KINDS.get(code & 0xFF, "other")
    text = str(err).lower()
    for words, kind in _MESSAGES:
        if any(word in text for word in words):
            return kind
    return "other"


# SQLite's primary result codes
_KINDS = {
    5: "locked",  # BUSY
    6: "locked",  # LOCKED
    8: "readonly",  # READONLY
    11: "corrupt",  # CORRUPT
    26: "corrupt",  # NOTADB
    3: "unopenable",  # PERM
    10: "unopenable",  # IOERR
    14: "unopenable",  # CANTOPEN
}
_MESSAGES = (
    (("locked", "busy"), "locked"),
    (("readonly", "read-only"), "readonly"),
    (("malformed", "not a database"), "corrupt"),
    (("unable to open", "disk i/o", "permission"), "unopenable"),
)


# why a file cannot be used (or written), by `error_kind`
_WHY = {
    "locked": "locked by another process (waited {wait:g} s)",
    "readonly": "read-only ({reason})",
    "unopenable": "not writable ({reason})",
    "corrupt": "corrupt ({reason})",
    "other": "not usable ({reason})",
}


def row_check(model: str, preprocess: str, digest: str, vector_bytes: bytes) -> bytes:
    """The checksum stored after a vector: a row moved to another key, or edited, no longer matches."""
    key = "\0".join((model, preprocess, digest)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(key + b"\0" + vector_bytes, digest_size=CHECK_BYTES).digest()


def plausible(vector: np.ndarray, dim: int | None = None, extra: int = 0) -> bool:
    """Whether a vector is what image features are: finite and of unit length; with `extra`, one or
    more records of `dim` unit-length values followed by `extra` other numbers (MA-CLIP's views:
    each view's feature and its magnitude cue)."""
    if not np.isfinite(vector).all():
        return False
    if not extra:
        return abs(float(np.linalg.norm(vector.astype(np.float64))) - 1.0) <= NORM_TOLERANCE
    assert dim is not None, "records with extra numbers need their dimension"
    if vector.size == 0 or vector.size % (dim + extra):
        return False
    norms = np.linalg.norm(vector.astype(np.float64).reshape(-1, dim + extra)[:, :dim], axis=1)
    return bool((np.abs(norms - 1.0) <= NORM_TOLERANCE).all())


class DiskCache:
    """Feature vectors on disk, shared by every process that opens the same folder.

    `writable` and `readable` say what this run may do with the file; `notices` say why not, one
    line each; `dropped` counts the rows that failed their check.
    """

    def __init__(
        self, folder: str | os.PathLike | None = None, max_bytes: int | None = None, lock_wait_s: float | None = None
    ):
        self.path = Path(folder if folder is not None else default_cache_dir()) / FILE_NAME
        self.max_bytes = max_bytes or DEFAULT_MAX_BYTES
        self.lock_wait_s = LOCK_WAIT_S if lock_wait_s is None else lock_wait_s
        self.readable = self.writable = True
        self.notices: list[str] = []
        self.dropped = 0
        self._read_only_uri = False
        self._local = threading.local()
        self._files_count: int | None = None  # counted once, then kept up to date by this process
        if self._make_folder():
            self._open()

    def get(
        self, model: str, preprocess: str, digests: Iterable[str], dim: int, extra: int = 0
    ) -> dict[str, np.ndarray]:
        """The cached vectors of `digests` that are there and pass their check (see the module; `extra`
        as `plausible` takes it: rows of several records)."""
        wanted = list(dict.fromkeys(digests))
        found: dict[str, np.ndarray] = {}
        broken: list[str] = []
        for start in range(0, len(wanted), _BATCH):
            chunk = wanted[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = self._select(
                f"SELECT digest, vector FROM features WHERE model = ? AND preprocess = ? AND digest IN ({marks})",
                (model, preprocess, *chunk),
            )
            for digest, blob in rows:
                vector = self._checked(model, preprocess, digest, blob, dim, extra)
                if vector is None:
                    broken.append(digest)
                else:
                    found[digest] = vector
        self._touch(model, preprocess, list(found))
        if broken:
            self.dropped += len(broken)
            logger.warning("dropped %d cached features that failed their check from %s", len(broken), self.path)
            self._delete(model, preprocess, broken)
        return found

    def _checked(
        self, model: str, preprocess: str, digest: str, blob: object, dim: int, extra: int = 0
    ) -> np.ndarray | None:
        """A row's vector when its length, checksum and values are right; else None."""
        if not isinstance(blob, bytes) or len(blob) < CHECK_BYTES:
            return None
        values, odd = divmod(len(blob) - CHECK_BYTES, 4)
        whole_records = values > 0 and values % (dim + extra) == 0 if extra else values == dim
        if odd or not whole_records:
            return None
        data, check = blob[:-CHECK_BYTES], blob[-CHECK_BYTES:]
        if row_check(model, preprocess, digest, data) != check:
            return None
        vector = np.frombuffer(data, dtype="<f4").copy()
        return vector if plausible(vector, dim, extra) else None

    def put(
        self, model: str, preprocess: str, vectors: Mapping[str, np.ndarray], dim: int | None = None, extra: int = 0
    ) -> None:
        """Store unit-length float32 vectors by digest (any other is not stored; `dim` and `extra` as
        `plausible` takes them), then evict past the bound."""
        now = time.time()
        rows = []
        for digest, v in vectors.items():
            vector = np.asarray(v, dtype="<f4").ravel()
            if plausible(vector, dim, extra):
                data = vector.tobytes()
                rows.append((model, preprocess, digest, data + row_check(model, preprocess, digest, data), now))
        if rows and self._write(
            lambda db: db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)", rows)
        ):
            self._evict()

    def known_files(self, signatures: Mapping[bytes, str]) -> dict[bytes, tuple[str, tuple[int, int]]]:
        """(content hash, size) of the files (by `FileSignature.key`) whose signature is the one remembered."""
        found: dict[bytes, tuple[str, tuple[int, int]]] = {}
        paths = list(signatures)
        for start in range(0, len(paths), _BATCH):
            chunk = paths[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows = self._select(
                f"SELECT path, signature, digest, width, height FROM files WHERE path IN ({marks})", chunk
            )
            for path, signature, digest, width, height in rows:
                if signature == signatures.get(path):
                    found[path] = (str(digest), (int(width), int(height)))
        if found:
            now = time.time()
            self._write(
                lambda db: db.executemany("UPDATE files SET used = ? WHERE path = ?", [(now, p) for p in found])
            )
        return found

    def remember_files(self, files: Mapping[bytes, tuple[str, str, tuple[int, int]]]) -> None:
        """Remember (signature, content hash, size) by file key; past `MAX_FILES`, forget the oldest."""
        if not files:
            return
        now = time.time()
        rows = [(path, sig, digest, size[0], size[1], now) for path, (sig, digest, size) in files.items()]
        if not self._write(lambda db: db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", rows)):
            return
        if self._files_count is None:
            self._files_count = self._read(lambda db: int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0]), 0)
        else:
            self._files_count += len(rows)  # replaced rows overcount: only an earlier recount
        if self._files_count > MAX_FILES:
            self._forget_files()

    def _forget_files(self) -> None:
        count = self._read(lambda db: int(db.execute("SELECT COUNT(*) FROM files").fetchone()[0]), 0)
        if count > MAX_FILES and self._write(
            lambda db: db.execute(
                "DELETE FROM files WHERE path IN (SELECT path FROM files ORDER BY used LIMIT ?)",
                (count - int(0.9 * MAX_FILES),),
            )
        ):
            count = int(0.9 * MAX_FILES)
        self._files_count = count

    def size_bytes(self) -> int:
        """Bytes of the database in use (pages not on the free list), read without a table scan."""

        def pages(db: sqlite3.Connection) -> int:
            used = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
            return int(used * db.execute("PRAGMA page_size").fetchone()[0])

        return self._read(pages, 0)

    def __len__(self) -> int:
        return self._read(lambda db: int(db.execute("SELECT COUNT(*) FROM features").fetchone()[0]), 0)

    def dropped_notice(self) -> str | None:
        """A line naming this cache and the way out, when rows failed their check in this run."""
        if not self.dropped:
            return None
        return (
            f"{self.dropped} rows of the feature cache {self.path} failed their check (not image features, "
            "or damaged) and were encoded again; if this recurs, delete that file or use --no-cache"
        )

    def take_notices(self) -> list[str]:
        """The notices not taken yet (for a caller that shows each once)."""
        notices, self.notices = self.notices, []
        return notices

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's objects go)."""
        self._forget_connection()

    def _make_folder(self) -> bool:
        """Create the cache's folder; False (and a notice) where it cannot be; a file there is refused."""
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise CacheFolderError(f"feature cache folder {folder} is a file, not a folder: choose another --cache-dir")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a file on the way to it
            raise CacheFolderError(
                f"feature cache folder {folder} cannot be made: a file is in the way; choose another --cache-dir"
            ) from None
        except OSError as err:
            self._off(f"feature cache folder {folder} cannot be made ({err.strerror or err})")
            return False
        return True

    def _db(self) -> sqlite3.Connection:
        """One connection per thread (SQLite connections must not be shared across threads)."""
        db = getattr(self._local, "db", None)
        if db is None:
            if self._read_only_uri:
                db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=self.lock_wait_s)
            else:
                db = sqlite3.connect(self.path, timeout=self.lock_wait_s)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _probe(self) -> None:
        """Create the tables where they are missing and read a row of each: raises what is wrong."""
        db = self._db()
        if not self._read_only_uri:
            db.executescript(SCHEMA)
            if db.execute("PRAGMA user_version").fetchone()[0] < FORMAT:
                with db:  # rows of an older format carry no checksum: they would all be dropped one by one
                    db.execute("DELETE FROM features")
                    db.execute(f"PRAGMA user_version = {FORMAT}")
        db.execute("SELECT model, preprocess, digest, vector, used FROM features LIMIT 1").fetchall()
        db.execute("SELECT path, signature, digest, width, height, used FROM files LIMIT 1").fetchall()
        if not self._read_only_uri:  # may this run write? (a lock held by another writer, a read-only file)
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")

    def _open(self) -> None:
        """Open the file for reading and writing; else read-only, or not at all; move it aside only if corrupt."""
        try:
            self._probe()
            return
        except sqlite3.Error as err:
            self._forget_connection()
            kind, reason = error_kind(err), str(err)
        if kind == "corrupt" and self._corrupt():
            self._move_aside(reason)
            return
        why = _WHY[kind].format(wait=self.lock_wait_s, reason=reason)
        if kind in ("locked", "readonly", "unopenable") and self.path.exists() and self._open_read_only(kind):
            self.writable = False
            self.notices.append(f"feature cache {self.path} is {why}: read but not written in this run")
            return
        self._off(f"feature cache {self.path} is {why}")

    def _open_read_only(self, kind: str) -> bool:
        """Whether the file can be read without writing. After a lock was waited for, one second more:
        a lock that only kept writers out lets a reader in at once."""
        wait = self.lock_wait_s
        self._read_only_uri = True
        if kind == "locked":
            self.lock_wait_s = min(1.0, wait)
        try:
            self._probe()
        except sqlite3.Error:
            self._forget_connection()
            self._read_only_uri = False
            return False
        finally:
            self.lock_wait_s = wait
        return True

    def _corrupt(self) -> bool:
        """Whether SQLite itself finds the file corrupt: not a database, or a failed `PRAGMA quick_check`."""
        try:
            with sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=self.lock_wait_s) as db:
                verdict = db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.Error as err:
            return error_kind(err) == "corrupt"
        return verdict != [("ok",)]

    def _move_aside(self, reason: str) -> None:
        aside = self.path.with_name(f"{FILE_NAME}.broken-{int(time.time())}")
        try:
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{self.path}{suffix}")
                if part.exists():
                    part.replace(Path(f"{aside}{suffix}"))
            self._probe()
        except (OSError, sqlite3.Error) as err:
            self._forget_connection()
            self._off(f"feature cache {self.path} is corrupt ({reason}) and cannot be replaced ({err}); delete it")
            return
        self.notices.append(f"feature cache {self.path} was corrupt ({reason}); moved to {aside.name}, started afresh")

    def _off(self, why: str) -> None:
        self.readable = self.writable = False
        self.notices.append(f"{why}: this run goes on without the feature cache")

    def _forget_connection(self) -> None:
        db = getattr(self._local, "db", None)
        self._local.db = None
        if db is not None:
            db.close()

    def _read(self, query: Callable[[sqlite3.Connection], _T], empty: _T) -> _T:
        """`query`'s result, or `empty` where the cache cannot be read (then no more reads this run)."""
        if not self.readable:
            return empty
        try:
            return query(self._db())
        except sqlite3.Error as err:
            self._failed(err, reading=True)
            return empty

    def _select(self, sql: str, parameters: Iterable) -> list:
        return self._read(lambda db: db.execute(sql, tuple(parameters)).fetchall(), [])

    def _write(self, statement: Callable[[sqlite3.Connection], object]) -> bool:
        """Run `statement` in a transaction; False where the cache cannot be written (then no more writes)."""
        if not self.writable:
            return False
        try:
            db = self._db()
            with db:
                statement(db)
        except sqlite3.Error as err:
            self._failed(err, reading=False)
            return False
        return True

    def _failed(self, err: sqlite3.Error, reading: bool) -> None:
        """A statement failed mid-run: stop writing (a lock, a read-only file), or stop using the file."""
        kind = error_kind(err)
        why = _WHY[kind].format(wait=self.lock_wait_s, reason=err)
        if reading or kind not in ("locked", "readonly"):
            self._off(f"feature cache {self.path} is {why}")
        elif self.writable:
            self.writable = False
            self.notices.append(f"feature cache {self.path} is {why}: not written for the rest of this run")

    def _touch(self, model: str, preprocess: str, digests: list[str]) -> None:
        if not digests:
            return
        now = time.time()
        self._write(
            lambda db: db.executemany(
                "UPDATE features SET used = ? WHERE model = ? AND preprocess = ? AND digest = ?",
                [(now, model, preprocess, d) for d in digests],
            )
        )

    def _delete(self, model: str, preprocess: str, digests: list[str]) -> None:
        self._write(
            lambda db: db.executemany(
                "DELETE FROM features WHERE model = ? AND preprocess = ? AND digest = ?",
                [(model, preprocess, d) for d in digests],
            )
        )

    def _evict(self) -> None:
        """Past `max_bytes`, drop the least recently used rows down to about 90% of it."""
        used = self.size_bytes()
        if used <= self.max_bytes:
            return
        rows = self._read(lambda db: int(db.execute("SELECT COUNT(*) FROM features").fetchone()[0]), 0)
        doomed = math.ceil((used - 0.9 * self.max_bytes) / max(1.0, used / max(rows, 1)))
        evicted = self._write(
            lambda db: db.execute(
                "DELETE FROM features WHERE (model, preprocess, digest) IN "
                "(SELECT model, preprocess, digest FROM features ORDER BY used LIMIT ?)",
                (doomed,),
            )
        )
        if evicted:
            logger.info("feature cache: evicted %d of %d rows past %d bytes", doomed, rows, self.max_bytes)
