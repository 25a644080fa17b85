"""The on-disk feature cache: hits across instances, two writing processes, eviction, corrupt files."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import time

import numpy as np

import iqa.file_signature
from iqa import disk_cache
from iqa.disk_cache import FILE_NAME, DiskCache
from iqa.file_signature import HEAD_BYTES, file_signature

MODEL, PREP, DIM = "RN50|openai|fp32", "native<=1024", 8


def vectors(n: int, seed: int = 0, prefix: str = "d") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{prefix}{i}": rng.standard_normal(DIM).astype(np.float32) for i in range(n)}


def test_a_new_instance_reads_what_another_wrote(tmp_path):
    written = vectors(5)
    DiskCache(tmp_path).put(MODEL, PREP, written)
    again = DiskCache(tmp_path)
    found = again.get(MODEL, PREP, [*written, "missing"], DIM)
    assert set(found) == set(written)
    for digest, vector in written.items():
        assert np.array_equal(found[digest], vector)
    assert again.get("another model", PREP, written, DIM) == {}  # keys keep models apart
    assert again.get(MODEL, "crop224", written, DIM) == {}  # and preprocessing


def _write(folder: str, seed: int, count: int) -> None:
    cache = DiskCache(folder)
    for start in range(0, count, 10):
        chunk = {
            k: v for i, (k, v) in enumerate(vectors(count, seed, prefix=f"p{seed}-").items()) if start <= i < start + 10
        }
        cache.put(MODEL, PREP, chunk)


def test_two_processes_write_at_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write, args=(str(tmp_path), seed, 300)) for seed in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    cache = DiskCache(tmp_path)
    assert len(cache) == 600
    expected = vectors(300, 2, prefix="p2-")
    found = cache.get(MODEL, PREP, expected, DIM)
    assert all(np.array_equal(found[k], v) for k, v in expected.items())


def test_the_least_recently_used_rows_are_evicted_past_the_bound(tmp_path):
    cache = DiskCache(tmp_path, max_bytes=10**9)
    old, recent = vectors(2000, 1, prefix="old"), vectors(2000, 2, prefix="new")
    cache.put(MODEL, PREP, old)
    cache.put(MODEL, PREP, recent)
    cache.get(MODEL, PREP, list(old)[:100], DIM)  # touched: now more recent than the rest of `old`
    full = cache.size_bytes()
    cache.max_bytes = full * 2 // 3
    cache.put(MODEL, PREP, vectors(1, 3, prefix="trigger"))
    assert cache.size_bytes() <= cache.max_bytes
    kept_recent = cache.get(MODEL, PREP, recent, DIM)
    kept_old = cache.get(MODEL, PREP, old, DIM)
    assert len(kept_recent) == 2000  # the newest survive
    assert set(list(old)[:100]) <= set(kept_old)  # and the recently read ones
    assert len(kept_old) < 2000  # the rest of the oldest went


def test_a_corrupt_file_is_moved_aside_and_rebuilt(tmp_path):
    (tmp_path / FILE_NAME).write_bytes(b"this is not a database" * 100)
    cache = DiskCache(tmp_path)
    assert len(cache) == 0
    assert list(tmp_path.glob(f"{FILE_NAME}.broken-*"))
    cache.put(MODEL, PREP, vectors(3))
    assert len(DiskCache(tmp_path).get(MODEL, PREP, vectors(3), DIM)) == 3


def test_rows_of_the_wrong_size_are_dropped_not_trusted(tmp_path):
    cache = DiskCache(tmp_path)
    cache.put(MODEL, PREP, vectors(3))
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute("UPDATE features SET vector = ? WHERE digest = 'd1'", (b"\x00" * 5,))
    found = cache.get(MODEL, PREP, vectors(3), DIM)
    assert set(found) == {"d0", "d2"}
    assert len(cache) == 2


def test_vectors_of_another_dimension_are_misses(tmp_path):
    cache = DiskCache(tmp_path)
    cache.put(MODEL, PREP, vectors(2))
    assert cache.get(MODEL, PREP, vectors(2), DIM * 2) == {}


def test_remembered_files_match_only_their_own_signature(tmp_path):
    cache = DiskCache(tmp_path)
    odd = os.fsencode(os.fsdecode(b"/photos/caf\xe9-latin1.jpg"))  # a name that is not UTF-8
    cache.remember_files({b"/photos/a.jpg": ("1:2:3:4:5:ab", "hash-a", (400, 300)), odd: ("9:9", "h", (1, 1))})
    again = DiskCache(tmp_path)  # another process: the file is what they share
    assert again.known_files({b"/photos/a.jpg": "1:2:3:4:5:ab", odd: "9:9"}) == {
        b"/photos/a.jpg": ("hash-a", (400, 300)),
        odd: ("h", (1, 1)),
    }
    assert again.known_files({b"/photos/a.jpg": "1:2:3:4:5:ac", odd: "9:8", b"/photos/c.jpg": "1"}) == {}


def test_the_least_recently_used_file_hashes_are_forgotten_past_the_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(disk_cache, "MAX_FILES", 10)
    cache = DiskCache(tmp_path)
    cache.remember_files({f"/p/{i}".encode(): (f"s{i}", f"h{i}", (8, 8)) for i in range(10)})
    time.sleep(0.01)
    assert len(cache.known_files({b"/p/0": "s0", b"/p/1": "s1"})) == 2  # used again: kept
    time.sleep(0.01)
    cache.remember_files({b"/p/new": ("s", "h", (8, 8))})
    kept = cache.known_files({f"/p/{i}".encode(): f"s{i}" for i in range(10)} | {b"/p/new": "s"})
    assert {b"/p/0", b"/p/1", b"/p/new"} <= set(kept) and len(kept) == 9


def test_a_file_signature_needs_a_settled_regular_file_and_holds_its_head(tmp_path, monkeypatch):
    path = tmp_path / "fresh.jpg"
    path.write_bytes(b"x" * 100_000)
    assert file_signature(path) is None  # changed just now
    os.utime(path, (time.time() - 60, time.time() - 60))  # an old modification time, but a fresh change time
    assert file_signature(path) is None
    monkeypatch.setattr(iqa.file_signature, "SETTLE_NS", 0)
    signature = file_signature(path)
    assert signature is not None and signature.size == 100_000 and signature.key == os.fsencode(path.resolve())
    info = path.stat()
    head = hashlib.blake2b(b"x" * HEAD_BYTES, digest_size=8).hexdigest()
    assert signature.text == f"{info.st_dev}:{info.st_ino}:100000:{info.st_mtime_ns}:{info.st_ctime_ns}:{head}"
    assert file_signature(tmp_path) is None and file_signature(tmp_path / "missing.jpg") is None
