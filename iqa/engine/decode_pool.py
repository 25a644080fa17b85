"""The pipeline's decoding processes, and what happens when one of them dies.

A decoder that crashes (a segfault in a C library on a hostile file) kills its worker process,
which no exception handler sees, and the pool loses every decode in flight with it. `DecodePool`
then starts a new pool for the photos to come and decodes the lost ones one at a time in a pool
of one, so that a file that crashes the decoder again is named and skipped and the others are
decoded. A new pool that cannot run a task at all (workers that cannot start: a script without a
`__main__` guard, a broken install) is not a file's fault: that is raised, not blamed on photos.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext

import torch

from iqa.photos.decode import Decoded, DecodeOptions
from iqa.photos.photo import PhotoError

logger = logging.getLogger(__name__)

Decoder = Callable[[str, str, DecodeOptions, tuple[bool, ...]], "Decoded | PhotoError"]
CRASHED = "the decoder crashed on this file (its process died); not scored"
POLL_S = 1.0  # how often a wait for a decode looks whether the pool broke
STRAY_WAIT_S = 5.0  # how long a broken pool's jobs get to be failed by it; any left after are lost too
PARENT_POLL_S = 0.5  # where there is no pidfd: how often a worker looks whether its run's process is alive


def default_workers() -> int:
    """Decoding processes: one per core this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


@dataclass
class DecodeJob:
    """One photo sent to be decoded; `future` is replaced when the pool it was sent to died."""

    path: str
    name: str
    wanted: tuple[bool, ...]
    future: Future = field(default_factory=Future)


class DecodePool:
    """Decodes photos in `workers` processes (0: in this process) and survives a worker that dies."""

    def __init__(self, workers: int, decoder: Decoder, options: DecodeOptions):
        self.workers, self.decoder, self.options = workers, decoder, options
        self._pool = executor(workers)
        self._jobs: list[DecodeJob] = []  # sent, result not taken yet

    def submit(self, path: str, name: str, wanted: tuple[bool, ...]) -> DecodeJob:
        job = DecodeJob(path, name, wanted)
        try:
            job.future = self._send(self._pool, job)
        except BrokenProcessPool:  # a worker died since the last photo was sent
            self._recover()
            job.future = self._send(self._pool, job)
        self._jobs.append(job)
        return job

    def result(self, job: DecodeJob) -> Decoded | PhotoError:
        """The decoded photo, or its PhotoError (a crash of the decoder on it included)."""
        while not wait([job.future], timeout=POLL_S).done:
            if getattr(self._pool, "_broken", False):  # a job the breaking pool never failed (see `abandon`)
                self._recover()
        try:
            outcome = job.future.result()
        except BrokenProcessPool:
            self._recover()
            outcome = job.future.result()
        self._jobs.remove(job)
        return outcome

    def shutdown(self) -> None:
        self._pool.shutdown(cancel_futures=True)

    def _send(self, pool: Executor, job: DecodeJob) -> Future:
        return pool.submit(self.decoder, job.path, job.name, self.options, job.wanted)

    def _recover(self) -> None:
        """Decode the photos lost with the dead pool one at a time; a new pool for the rest."""
        abandon(self._pool)
        wait([job.future for job in self._jobs], timeout=STRAY_WAIT_S)
        lost = [job for job in self._jobs if _lost(job.future)]
        logger.warning("a decoding worker died; decoding %d photos one at a time to find the file", len(lost))
        self._pool = _started(self.workers)
        single = _started(1)
        try:
            for job in lost:
                try:
                    outcome = self._send(single, job).result()
                except BrokenProcessPool:
                    outcome = PhotoError(job.name, CRASHED)
                    abandon(single)
                    single = _started(1)
                job.future = Future()
                job.future.set_result(outcome)
        finally:
            single.shutdown()


def executor(workers: int) -> Executor:
    """Decoding processes, started by a fork server (or spawned): never forked from a process running
    torch's threads. The fork server imports `iqa.photos.decode` (and so torch, for `iqa.photos.resample`) once,
    so that its workers share those pages, and each worker runs torch on one thread: the pool is
    sized to the cores. (Where the fork server was started before, by other code, or where there is
    none (Windows), each worker imports torch itself.)"""
    if workers <= 0:
        return _InProcess()
    context: BaseContext = multiprocessing.get_context("spawn")
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(["iqa.photos.decode"])  # only read when the fork server starts
    return ProcessPoolExecutor(workers, mp_context=context, initializer=worker_start, initargs=(os.getpid(),))


def worker_start(owner: int) -> None:
    """A decoding worker's start: torch on one thread, and an end when `owner` (the process whose
    pool this is) ends, however it ends.

    A pool's worker waits for jobs on a queue whose writing end it holds itself, so it never sees
    its owner go; and the fork server that started it lives as long as any of its children do. A
    run killed with SIGKILL (which no handler sees) left both behind, with the resource tracker,
    for good. The worker's parent is the fork server, not the owner, so a parent-death signal
    cannot tell; a thread waits on the owner's pidfd (readable once it has ended) instead, and
    the fork server and the resource tracker end by themselves once the workers are gone.
    """
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with, args=(owner,), name="iqa-owner-watch", daemon=True).start()


def _exit_with(owner: int) -> None:
    """Exit this process as soon as process `owner` has ended (a pidfd; else polled)."""
    try:
        pidfd = os.pidfd_open(owner)
    except ProcessLookupError:  # ended already
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd here (not Linux 5.3+): look every PARENT_POLL_S
        while _alive(owner):
            time.sleep(PARENT_POLL_S)
        os._exit(1)
    select.select([pidfd], [], [])
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but another user's: the owner's pid was reused
        return False
    return True


def _lost(future: Future) -> bool:
    """Whether a job sent to a broken pool has no result: failed, cancelled or never finished."""
    if not future.done() or future.cancelled():
        return True
    return isinstance(future.exception(), BrokenProcessPool)


def _started(workers: int) -> Executor:
    """A new pool that has run a task: one that cannot is raised, not blamed on a photo."""
    pool = executor(workers)
    try:
        pool.submit(os.getpid).result()
    except BrokenProcessPool as error:
        abandon(pool)
        raise BrokenProcessPool(f"decoding workers cannot start ({error}); no photo is at fault") from error
    return pool


def abandon(pool: Executor) -> None:
    """Kill what is left of a broken pool's workers, then let it go.

    CPython's pool (3.11) can be sent a photo while it breaks, as its manager thread fails the jobs
    in flight and terminates the workers: that job is never failed, and a worker left running
    blocks sending its result to a queue no one reads while the manager thread (joined when the
    interpreter exits) waits for it forever. Reads the pool's private `_processes` (as `result`
    reads `_broken`): there is no public way.
    """
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


class _InProcess(Executor):
    """An executor that runs each call at once, in this process (workers=0: tests, debugging)."""

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to whoever waits, as a pool would
            future.set_exception(error)
        return future
