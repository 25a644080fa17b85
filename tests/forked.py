"""A forked worker that takes its call and its arguments through a queue, as ZeroGPU's worker does.

Everything crosses pickled (multiprocessing's `ForkingPickler`, as `spaces` sends them): a test that
hands arguments to `Process(args=...)` instead passes them by fork, unpickled, and would not see an
argument that cannot make the trip.
"""

from __future__ import annotations

import inspect
import multiprocessing
from collections.abc import Callable

import torch


def run_forked(call: Callable, *args):
    """`call(*args)` in a forked process (a generator's yields as a list); its error is raised here."""
    context = multiprocessing.get_context("fork")
    jobs, results = context.SimpleQueue(), context.SimpleQueue()
    worker = context.Process(target=_serve, args=(jobs, results), daemon=True)
    worker.start()
    try:
        jobs.put((call, args))
        out = results.get()
    finally:
        jobs.put("received")  # the worker stays until then: tensors travel as shared memory it hands over
        worker.join(timeout=60)
    assert worker.exitcode == 0, f"the worker ended with {worker.exitcode}"
    if isinstance(out, BaseException):
        raise out
    return out


def _serve(jobs, results) -> None:
    torch.set_num_threads(1)  # the parent's thread pool does not survive fork
    call, args = jobs.get()
    try:
        out = call(*args)
        results.put(list(out) if inspect.isgenerator(out) else out)
    except Exception as err:  # noqa: BLE001 - handed to the test, which raises it
        results.put(err)
    jobs.get()
