"""ZeroGPU on a machine without a GPU, for the tests: the real `spaces` package in its ZeroGPU mode,
with only its calls to the GPU scheduler and its copy of the weights onto a real GPU replaced.

Python imports this module at start-up when its folder is on PYTHONPATH (the served-app test puts
it there). The scheduler's answers are recorded, one JSON line per call, in IQA_ZEROGPU_LOG. The
copy onto "the GPU" restores the weights `spaces` packed at launch onto the CPU, as the aliases of
the tensors registered as CUDA ones, and keeps ZeroGPU's CUDA emulation on in every thread of the
worker: the worker computes real scores, in the precision the app chose for CUDA, on the CPU.
Outside a GPU function CUDA raises, exactly as on ZeroGPU.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time

os.environ["SPACES_ZERO_GPU"] = "true"
os.environ.setdefault("SPACES_ZERO_DEVICE_API_URL", "http://127.0.0.1:9/")  # never called: replaced below

import spaces  # noqa: E402,F401 - ZeroGPU patches torch here, before the app imports it
import torch  # noqa: E402
from spaces.zero import client  # noqa: E402
from spaces.zero import torch as zero_torch  # noqa: E402
from spaces.zero.api import ScheduleResponse  # noqa: E402
from spaces.zero.torch import patching  # noqa: E402

_idle = itertools.cycle([False, True])  # a fresh worker, then the same one again: both of ZeroGPU's paths


def _record(event: str, **fields) -> None:
    path = os.environ.get("IQA_ZEROGPU_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields}) + "\n")


def schedule(task_id, request=None, duration=None, gpu_size=None, _first_attempt=True) -> ScheduleResponse:
    seconds = duration.total_seconds() if duration is not None else None
    _record("schedule", task=task_id, duration=seconds, request=request is not None)
    return ScheduleResponse(idle=next(_idle), nvidiaIndex=0, nvidiaUUID="emulated", allowToken="emulated")


def release(allow_token, *, fail=False, allow_404=False) -> None:
    _record("release", fail=fail)


def duration_warning() -> None:
    _record("duration_warning")


def move(callback=None) -> None:
    """Instead of copying the packed weights onto a GPU: read them back onto the CPU as the data
    behind their CUDA placeholders, and compute under ZeroGPU's emulation in every thread."""
    for pack in patching.tensor_packs:
        with open(pack.path(), "rb") as file:
            for meta, size, aligned in [*itertools.chain.from_iterable(pack.batches), *pack.big_tensors]:
                data = bytearray(file.read(aligned)[:size])
                storage = torch.frombuffer(data, dtype=torch.uint8).untyped_storage()
                tensor = torch.empty(0, dtype=meta.dtype).set_(storage, 0, meta.shape, meta.stride())
                for fake in pack.fakes[meta]:
                    patching.cuda_aliases[fake] = tensor
    patching.patch()
    run = threading.Thread.run

    def run_emulated(self) -> None:
        patching.enter_mode()
        run(self)

    threading.Thread.run = run_emulated  # type: ignore[method-assign]
    # An optimizer step asks CUDA whether a graph is being captured, which only a real GPU answers:
    # nothing here captures one.
    torch.optim.Optimizer._accelerator_graph_capture_health_check = lambda self: None  # type: ignore[method-assign]


client.schedule = schedule
client.release = release
client.allow = lambda token: None
client.startup_report = lambda: None
client.duration_warning = duration_warning
zero_torch.init = lambda nvidia_uuid: None
zero_torch.move = move
