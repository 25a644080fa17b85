"""The on-disk feature cache: hits across instances, two writing processes, eviction, corrupt files."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

import iqa.photos.signature
from iqa.cli.main import EXIT_INPUT, EXIT_OK, main
from iqa.engine import disk_cache
from iqa.engine.disk_cache import CHECK_BYTES, FILE_NAME, CacheFolderError, DiskCache, row_check
from iqa.photos.signature import HEAD_BYTES, file_signature

MODEL, PREP, DIM = "RN50|openai|fp32", "native<=1024", 8


def vectors(n: int, seed: int = 0, prefix: str = "d") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{prefix}{i}": unit(rng.standard_normal(DIM)) for i in range(n)}


def unit(vector: np.ndarray) -> np.ndarray:
    """An image feature is L2-normalised (the cache refuses any other)."""
    return (vector / np.linalg.norm(vector)).astype(np.float32)


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
    monkeypatch.setattr(iqa.photos.signature, "SETTLE_NS", 0)
    signature = file_signature(path)
    assert signature is not None and signature.size == 100_000 and signature.key == os.fsencode(path.resolve())
    info = path.stat()
    head = hashlib.blake2b(b"x" * HEAD_BYTES, digest_size=8).hexdigest()
    assert signature.text == f"{info.st_dev}:{info.st_ino}:100000:{info.st_mtime_ns}:{info.st_ctime_ns}:{head}"
    assert file_signature(tmp_path) is None and file_signature(tmp_path / "missing.jpg") is None


def test_rows_that_are_not_image_features_are_dropped_counted_and_deleted(tmp_path):
    cache = DiskCache(tmp_path)
    good = vectors(7)
    cache.put(MODEL, PREP, good)

    def stored(digest: str, values: np.ndarray) -> bytes:  # as `put` would store it, checksum and all
        data = values.astype("<f4").tobytes()
        return data + row_check(MODEL, PREP, digest, data)

    hostile = {
        "d0": np.zeros(DIM, np.float32).tobytes(),  # the length of a bare vector
        "d1": stored("d1", np.zeros(DIM)),
        "d2": stored("d2", np.full(DIM, 1e30)),
        "d3": stored("d3", np.full(DIM, np.nan)),
        "d4": stored("d4", np.full(DIM, np.inf)),
        "d5": stored("d6", good["d6"]),  # another photo's row
    }
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        for digest, blob in hostile.items():
            db.execute("UPDATE features SET vector = ? WHERE digest = ?", (blob, digest))
    found = cache.get(MODEL, PREP, good, DIM)
    assert set(found) == {"d6"} and np.array_equal(found["d6"], good["d6"])
    assert cache.dropped == 6 and len(cache) == 1


def test_vectors_that_are_not_image_features_are_not_stored(tmp_path):
    cache = DiskCache(tmp_path)
    cache.put(MODEL, PREP, {"zero": np.zeros(DIM), "nan": np.full(DIM, np.nan), **vectors(1)})
    assert len(cache) == 1


HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=" + sys.argv[2])
db.execute("BEGIN EXCLUSIVE")
db.execute("CREATE TABLE IF NOT EXISTS other (x)")
db.execute("INSERT INTO other VALUES (1)")
print("locked", flush=True)
sys.stdin.read()
db.execute("COMMIT")
print("committed", flush=True)
"""


@pytest.mark.parametrize("journal", ["DELETE", "WAL"])
def test_a_locked_cache_is_waited_for_then_bypassed_never_moved_aside(tmp_path, journal):
    written = vectors(3)
    first = DiskCache(tmp_path)
    first.put(MODEL, PREP, written)
    first.close()
    if journal == "DELETE":  # a rollback journal: the other process's exclusive lock keeps readers out too
        with sqlite3.connect(tmp_path / FILE_NAME) as db:
            db.execute("PRAGMA journal_mode=DELETE")
    command = [sys.executable, "-c", HOLDER, str(tmp_path / FILE_NAME), journal]
    holder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        cache = DiskCache(tmp_path, lock_wait_s=0.3)
        found = cache.get(MODEL, PREP, written, DIM)
        cache.put(MODEL, PREP, vectors(2, 9, prefix="new"))
        cache.remember_files({b"/p/a.jpg": ("sig", "hash", (8, 8))})
    finally:
        out, _ = holder.communicate("", timeout=30)
    assert holder.returncode == 0 and out.strip() == "committed"  # the other process's transaction stands
    assert not list(tmp_path.glob(f"{FILE_NAME}.broken-*"))
    assert not cache.writable and len(cache.notices) == 1
    assert f"feature cache {tmp_path / FILE_NAME} is locked by another process (waited 0.3 s)" in cache.notices[0]
    if journal == "WAL":  # readers are let in: the run reads the cache and only writes nothing
        assert set(found) == set(written) and cache.readable and "read but not written" in cache.notices[0]
    else:
        assert found == {} and not cache.readable and "goes on without the feature cache" in cache.notices[0]
    assert set(DiskCache(tmp_path).get(MODEL, PREP, written, DIM)) == set(written)  # nothing was lost


@pytest.fixture
def read_only(tmp_path):
    """Make a file read-only for this process (as root, only the immutable attribute does); undone after."""
    made: list = []

    def make(path):
        if os.geteuid() == 0:
            if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode:
                pytest.skip("running as root without chattr +i: no way to make a file read-only")
        else:
            path.chmod(0o444)
        made.append(path)

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)])
        path.chmod(0o644)


def test_a_read_only_cache_is_read_not_written_and_never_moved(tmp_path, read_only):
    written = vectors(3)
    DiskCache(tmp_path).put(MODEL, PREP, written)
    read_only(tmp_path / FILE_NAME)
    cache = DiskCache(tmp_path)
    assert set(cache.get(MODEL, PREP, written, DIM)) == set(written)
    cache.put(MODEL, PREP, vectors(2, 9, prefix="new"))
    assert not cache.writable and cache.readable
    assert len(cache.notices) == 1 and "is read-only" in cache.notices[0]
    assert not list(tmp_path.glob(f"{FILE_NAME}.broken-*")) and len(cache) == 3


def test_a_cache_folder_that_is_a_file_is_refused_by_name(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CacheFolderError, match=r"feature cache folder .*file is a file, not a folder.*--cache-dir"):
        DiskCache(tmp_path / "file")
    with pytest.raises(CacheFolderError, match="a file is in the way"):
        DiskCache(tmp_path / "file" / "below")


@pytest.mark.parametrize("fill", [0.0, 1e30, np.nan, np.inf])
def test_cache_rows_that_are_not_image_features_never_give_a_score(album, tmp_path, capsys, fill):
    cache = tmp_path / "cache"
    command = ["score", str(album), "--backbone", "test-tiny-rn", "--workers", "0", "--cache-dir", str(cache)]
    assert main(command) == EXIT_OK
    expected = capsys.readouterr().out
    with sqlite3.connect(cache / FILE_NAME) as db:
        for model, prep, digest, blob in db.execute(
            "SELECT model, preprocess, digest, vector FROM features"
        ).fetchall():
            data = np.full((len(blob) - CHECK_BYTES) // 4, fill, dtype="<f4").tobytes()
            db.execute(
                "UPDATE features SET vector = ? WHERE model = ? AND preprocess = ? AND digest = ?",
                (data + row_check(model, prep, digest, data), model, prep, digest),
            )
    assert main(command) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == expected  # the scores of a fresh run, not of the rows
    assert "summary: 3 scored, 0 skipped, 0 from the feature cache (not decoded), 3 cached features failed" in err
    assert f"3 rows of the feature cache {cache / FILE_NAME} failed their check" in err and "--no-cache" in err
    assert main(command) == EXIT_OK  # encoded again and stored: the cache is healthy again
    out, err = capsys.readouterr()
    assert out == expected and "3 from the feature cache" in err and "failed their check" not in err


@pytest.mark.parametrize("journal", ["DELETE", "WAL"])
def test_score_with_a_locked_cache_scores_without_writing_it(album, tmp_path, capsys, monkeypatch, journal):
    cache = tmp_path / "cache"
    command = ["score", str(album), "--backbone", "test-tiny-rn", "--workers", "0", "--cache-dir", str(cache)]
    assert main(command) == EXIT_OK
    expected = capsys.readouterr().out
    if journal == "DELETE":
        with sqlite3.connect(cache / FILE_NAME) as db:
            db.execute("PRAGMA journal_mode=DELETE")
    monkeypatch.setattr(disk_cache, "LOCK_WAIT_S", 0.3)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(cache / FILE_NAME), journal],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code = main(command)
    finally:
        committed, _ = holder.communicate("", timeout=30)
    out, err = capsys.readouterr()
    assert code == EXIT_OK and out == expected
    warnings = [line for line in err.splitlines() if line.startswith("warning: feature cache")]
    assert len(warnings) == 1 and "is locked by another process (waited 0.3 s)" in warnings[0]
    assert holder.returncode == 0 and committed.strip() == "committed"
    assert not list(cache.glob(f"{FILE_NAME}.broken-*")) and len(DiskCache(cache)) == 3


def test_score_with_a_read_only_cache_reads_it_and_says_so(album, tmp_path, capsys, read_only):
    cache = tmp_path / "cache"
    command = ["score", str(album), "--backbone", "test-tiny-rn", "--workers", "0", "--cache-dir", str(cache)]
    assert main(command) == EXIT_OK
    expected = capsys.readouterr().out
    read_only(cache / FILE_NAME)
    assert main(command) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == expected and "3 from the feature cache" in err
    warnings = [line for line in err.splitlines() if line.startswith("warning: feature cache")]
    assert len(warnings) == 1 and f"{cache / FILE_NAME} is read-only" in warnings[0]
    assert not list(cache.glob(f"{FILE_NAME}.broken-*"))


def test_a_cache_dir_that_is_a_file_is_one_line_naming_the_option(album, tmp_path, capsys):
    (tmp_path / "c5file").write_text("")
    command = ["score", str(album), "--backbone", "test-tiny-rn", "--cache-dir", str(tmp_path / "c5file")]
    assert main(command) == EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err == f"error: feature cache folder {tmp_path / 'c5file'} is a file, not a folder: choose another --cache-dir"
    )


def test_a_sound_database_of_another_kind_is_left_alone_not_moved_aside(tmp_path):
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute("CREATE TABLE features (something TEXT)")
        db.execute("INSERT INTO features VALUES ('kept')")
    cache = DiskCache(tmp_path)
    assert not cache.readable and not cache.writable
    assert cache.get(MODEL, PREP, ["d0"], DIM) == {} and len(cache) == 0
    cache.put(MODEL, PREP, vectors(1))
    assert len(cache.notices) == 1 and "no such column" in cache.notices[0]
    assert cache.notices[0].endswith("this run goes on without the feature cache")
    assert not list(tmp_path.glob(f"{FILE_NAME}.broken-*"))
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        assert db.execute("SELECT something FROM features").fetchall() == [("kept",)]
