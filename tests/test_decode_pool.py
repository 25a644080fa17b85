"""Decoding processes that die: the photo that crashes a worker is named, the others decoded; a pool
that cannot start at all is raised, not blamed on photos."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import pytest

from iqa.engine import decode_pool
from iqa.engine.decode_pool import CRASHED, DecodeJob, DecodePool
from iqa.photos.decode import Decoded, DecodeOptions, ResizePlan
from iqa.photos.photo import PhotoError
from tests.crashing_decoder import decode_or_crash

EXAMPLES = sorted(Path(__file__).resolve().parents[1].joinpath("examples").glob("*.jpg"))
OPTIONS = DecodeOptions((ResizePlan("native", max_side=256),))


def test_a_pool_found_broken_when_a_photo_is_sent_recovers_and_names_the_file(tmp_path):
    crash = tmp_path / "crash.jpg"
    crash.write_bytes(EXAMPLES[0].read_bytes())
    pool = DecodePool(2, decode_or_crash, OPTIONS)
    try:
        crashed = pool.submit(str(crash), "crash.jpg", (True,))
        wait([crashed.future])  # the worker is dead, and the pool knows it
        good = pool.submit(str(EXAMPLES[1]), "good.jpg", (True,))  # sent to the broken pool first
        assert isinstance(pool.result(good), Decoded)
        outcome = pool.result(crashed)
        assert isinstance(outcome, PhotoError) and outcome.reason == CRASHED and outcome.name == "crash.jpg"
        assert isinstance(pool.result(pool.submit(str(EXAMPLES[2]), "after.jpg", (True,))), Decoded)
    finally:
        pool.shutdown()


def _dead_on_arrival(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max(workers, 1), mp_context=get_context("forkserver"), initializer=os._exit, initargs=(3,)
    )


def test_a_pool_whose_workers_cannot_start_is_raised_not_blamed_on_the_photos(monkeypatch):
    monkeypatch.setattr(decode_pool, "executor", _dead_on_arrival)
    pool = DecodePool(2, decode_or_crash, OPTIONS)
    try:
        job = pool.submit(str(EXAMPLES[0]), "good.jpg", (True,))
        with pytest.raises(BrokenProcessPool, match="no photo is at fault"):
            pool.result(job)
    finally:
        pool.shutdown()


def test_an_abandoned_pool_leaves_no_worker_or_thread_behind():
    """A worker left running by a pool that broke (CPython can start one while it breaks) would make
    the interpreter wait for it forever at exit: abandoning the pool kills it."""
    pool = decode_pool.executor(1)
    pool.submit(time.sleep, 600)
    manager = pool._executor_manager_thread  # type: ignore[attr-defined]
    worker = next(iter(pool._processes.values()))  # type: ignore[attr-defined]
    decode_pool.abandon(pool)
    manager.join(timeout=20)
    assert not manager.is_alive() and not worker.is_alive()


def test_a_job_the_breaking_pool_never_failed_is_decoded_again_not_waited_for(tmp_path, monkeypatch):
    """CPython's pool can take a job as it breaks and never fail it; waiting for it would never end."""
    monkeypatch.setattr(decode_pool, "POLL_S", 0.1)
    monkeypatch.setattr(decode_pool, "STRAY_WAIT_S", 0.5)
    crash = tmp_path / "crash.jpg"
    crash.write_bytes(EXAMPLES[0].read_bytes())
    pool = DecodePool(2, decode_or_crash, OPTIONS)
    try:
        stray = DecodeJob(str(EXAMPLES[1]), "stray.jpg", (True,))  # as sent in that moment: never finished
        pool._jobs.append(stray)
        crashed = pool.submit(str(crash), "crash.jpg", (True,))
        wait([crashed.future])
        assert isinstance(pool.result(stray), Decoded)  # seen broken while waiting: decoded alone
        outcome = pool.result(crashed)
        assert isinstance(outcome, PhotoError) and outcome.reason == CRASHED
    finally:
        pool.shutdown()
