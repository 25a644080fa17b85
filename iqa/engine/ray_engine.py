"""`score --engine ray`: the scoring pipeline as a Ray Data job, on one machine or a cluster.

read files (`ray.data.read_binary_files`: local folders, or object-store URIs through pyarrow's
file systems) -> decode on CPU tasks (`iqa.engine.ray_decode.DecodeBatch`: content hash, the checks of
`iqa.photos.photo`, EXIF orientation, JPEG draft) -> score on an autoscaling actor pool (`ScoreBatch`:
each actor loads the backbone once and scores through `iqa.methods.scoring.build_scorers`, so CLIP-IQA
and GRMP-IQA give what the local engine gives) -> the driver, which writes Parquet parts
(`iqa.engine.ray_output`) as results arrive.

How the cluster is used (`plan_resources`): decode tasks and scoring actors each ask for half a
CPU, so a CPU runs one of each at a time and a node left alone after a failure can still both
decode and score; one actor per GPU where there are GPUs, else up to one per CPU, less what a lost
node would leave too few of. Decoding stays a separate stage on every node (Ray Data would
otherwise fuse it into the actors). A lost node's tasks are retried and its actors restarted on
the others by Ray; a job that scores nothing for `stall_timeout` seconds is stopped with one line
saying what it waited for, and the parts written so far stay (a re-run into the same destination
scores the rest).

Without an address a local Ray is started on this machine (no dashboard, listening on 127.0.0.1
only); with one (`auto`, `HOST:6379`, `ray://HOST:10001`) the job runs on that cluster, and this
package is shipped to the workers with the job (`runtime_env` `py_modules`); the workers need its
dependencies installed. Ray is an optional extra, imported only here and only when a job runs.
"""

from __future__ import annotations

import _thread
import ipaddress
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iqa.errors import IQAError, Unavailable, UsageError
from iqa.methods import registry
from iqa.photos.photo import SUPPORTED_EXTENSIONS, find_photo_paths

if TYPE_CHECKING:
    from iqa.engine.ray_decode import DecodeBatch
    from iqa.methods.scoring import ScorerSpec

RAY_MISSING = 'the Ray engine needs Ray: pip install "ray[data]" (or pip install ".[ray]" for this package)'
CLIENT_MISSING = 'Ray Client (ray://) needs its extra: pip install "ray[client]" (or pip install ".[ray]")'
NODE_COLUMN = "node"  # the decode task's node; counted for the summary, not written

# Read by Ray when it is imported: "0" makes a node use 127.0.0.1 instead of the machine's address.
LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_HELP = "the head's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"

DEFAULT_STALL_TIMEOUT = 300.0  # seconds without a scored photo; loading a large backbone fits in it
CONNECT_TIMEOUT = 10.0  # seconds to open a TCP connection to the cluster's address
DECODE_CPUS = 0.5  # per decode task
ACTOR_CPUS = 0.5  # per scoring actor


class RayUnavailable(IQAError, ImportError):
    """Ray is not installed (it is the optional `ray` extra)."""


class RayConnectionError(Unavailable):
    """The cluster cannot be reached or refused this driver (address, token, Ray Client)."""


class RayStalled(Unavailable):
    """The job scored nothing for its stall timeout, or Ray gave up on it (a lost node, an object)."""


def import_ray() -> Any:
    """ray, with ray.data loaded; a one-line RayUnavailable saying how to install it when missing."""
    try:
        import ray
        import ray.data  # noqa: F401 - loads the Data library onto `ray`
    except ImportError:
        raise RayUnavailable(RAY_MISSING) from None
    return ray


@dataclass
class RayJob:
    """What to score and where the Parquet goes; `address` None starts a local Ray."""

    sources: list[str]
    dest: str
    spec: ScorerSpec
    address: str | None = None
    num_cpus: int | None = None  # local Ray only; default: every core
    recursive: bool = False
    draft: bool = True
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    on_rows: Callable[[int], None] | None = None  # called with each result block's row count as it arrives


@dataclass
class Summary:
    scored: int
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), sources included
    already: int = 0  # rows of an earlier run in the destination (those files were not read again)
    nodes: int = 0  # nodes whose CPUs decoded photos


@dataclass(frozen=True)
class Plan:
    """Resource requests and pool sizes for a cluster (see `plan_resources`)."""

    actors: int  # the most scoring actors; the pool starts at one and grows while they lag
    actor_gpus: int  # 1 on a cluster with GPUs, else 0
    decode_tasks: int  # the most decode tasks at once: every half-CPU slot


def plan_resources(node_cpus: list[float], gpus: int) -> Plan:
    """Pool sizes for nodes of `node_cpus` CPUs and `gpus` GPUs in all.

    With GPUs: one actor per GPU. Without: one per CPU, but never more than leaves a decode slot
    free once the largest node is lost (its actors are restarted on the rest), or the surviving
    CPUs would all hold idle actors while the lost photos wait to be read and decoded again.
    """
    cpus = sum(node_cpus)
    decode_tasks = max(2, math.floor(cpus / DECODE_CPUS))
    if gpus:
        return Plan(actors=gpus, actor_gpus=1, decode_tasks=decode_tasks)
    survivors = cpus - max(node_cpus) if len(node_cpus) > 1 else cpus
    room = math.floor(survivors / ACTOR_CPUS) - 1 if len(node_cpus) > 1 else math.floor(cpus)
    return Plan(actors=max(1, min(math.floor(cpus), room)), actor_gpus=0, decode_tasks=decode_tasks)


def cluster_plan(ray: Any) -> Plan:
    """`plan_resources` for the nodes alive now."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    cpus = [resources.get("CPU", 0.0) for resources in nodes if resources.get("CPU", 0.0) > 0]
    return plan_resources(cpus or [1.0], int(sum(resources.get("GPU", 0) for resources in nodes)))


def run_job(job: RayJob) -> Summary:
    """Run the job; Parquet parts go into `job.dest` (a folder, made if needed) as results arrive.

    Files whose rows an earlier run left in `job.dest` are skipped. Raises `RayStalled` when no
    photo is scored for `job.stall_timeout` seconds (the parts written so far stay)."""
    from iqa.engine.ray_output import PartWriter, done_paths, is_uri

    ray = import_ray()
    done, columns = done_paths(job.dest)
    local = [s for s in job.sources if not is_uri(s)]
    found, path_errors = find_photo_paths(local, recursive=job.recursive) if local else ([], [])
    errors = [(e.name, e.reason) for e in path_errors]
    paths = [str(p.absolute()) for p in found]
    uris = [s for s in job.sources if is_uri(s)]
    todo = [p for p in paths if p not in done]
    if not paths and not uris:
        raise UsageError(f"nothing to score: no photo found ({len(errors)} paths skipped)")
    if not todo and not uris:
        return Summary(0, errors, already=len(paths))
    started = connect(job.address, job.num_cpus)
    try:
        writer = PartWriter(job.dest, columns)
        summary = Summary(0, errors, already=len(paths) - len(todo))
        nodes: set[str] = set()
        try:
            for table in _results(ray, _pipeline(ray, job, todo, uris, done), job.stall_timeout, summary):
                nodes.update(table.column(NODE_COLUMN).to_pylist())
                table = table.drop_columns([NODE_COLUMN])
                _count(table, summary)
                writer.add(table)
                if job.on_rows:
                    job.on_rows(table.num_rows)
        finally:
            writer.flush()
        summary.nodes = len(nodes)
        return summary
    finally:
        if started:
            ray.shutdown()


def _count(table: Any, summary: Summary) -> None:
    errors = [(path, error) for path, error in zip(table["path"].to_pylist(), table["error"].to_pylist()) if error]
    summary.errors += errors
    summary.scored += table.num_rows - len(errors)


def _results(ray: Any, dataset: Any, stall_timeout: float, summary: Summary) -> Iterator[Any]:
    """The job's result blocks as they arrive; `RayStalled` when none comes for `stall_timeout` s.

    Ray Data's iterator waits without a bound (a lost node whose work cannot be rescheduled waits
    for ever), so a watchdog thread interrupts the wait (as Ctrl-C would: Ray Data then stops the
    job's tasks and actors itself). That takes the main thread, where the command line runs; from
    another thread the job has no stall timeout."""
    watchdog = _Watchdog(stall_timeout) if threading.current_thread() is threading.main_thread() else None
    blocks = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
    try:
        while True:
            with watchdog or nullcontext():
                table = next(blocks, None)
            if table is None:
                return
            yield table
    except KeyboardInterrupt:
        if watchdog and watchdog.fired:
            raise RayStalled(_stall_message(ray, stall_timeout, summary)) from None
        raise
    except ray.exceptions.RayError as err:
        if isinstance(err, ray.exceptions.RayTaskError):
            raise  # a bug in the job's own code: its traceback
        raise _job_failure(err) from None
    finally:
        blocks.close()
        if watchdog:
            watchdog.close()


class _Watchdog:
    """Interrupts the main thread when a wait (the `with` block) lasts `timeout` s; one thread
    for the whole job, checking about once a second."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.fired = False
        self._since: float | None = None  # when the current wait began
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._watch, name="iqa-ray-stall-watchdog", daemon=True).start()

    def __enter__(self) -> _Watchdog:
        with self._lock:
            self._since = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._since = None

    def close(self) -> None:
        self._closed.set()

    def _watch(self) -> None:
        while not self._closed.wait(min(1.0, self.timeout / 10)):
            with self._lock:
                if self._since is not None and time.monotonic() - self._since >= self.timeout:
                    self.fired = True
                    _interrupt_main()
                    return


def _interrupt_main() -> None:
    """KeyboardInterrupt in the main thread. A real SIGINT where Python's own handler is in place:
    it also ends a blocking system call, which `_thread.interrupt_main` alone does not."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler and hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
    else:
        _thread.interrupt_main()


def _stall_message(ray: Any, stall_timeout: float, summary: Summary) -> str:
    nodes = ray.nodes()
    alive = sum(1 for node in nodes if node.get("Alive"))
    total, free = ray.cluster_resources(), ray.available_resources()
    resources = ", ".join(
        f"{free.get(key, 0):g} of {total[key]:g} {key} free" for key in ("CPU", "GPU") if total.get(key)
    )
    return (
        f"the Ray job stalled: no photo scored for {stall_timeout:g} s ({summary.scored + len(summary.errors)} "
        f"done this run; {alive} of {len(nodes)} nodes alive, {resources or 'no CPU or GPU left'}); "
        "stopped, the rows written stay and a re-run with the same --out scores the rest"
    )


def _job_failure(err: BaseException) -> RayStalled:
    """Ray giving up on the job (a lost object, a dead node or actor) as one line."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return RayStalled(
        f"the Ray job failed: {first}; the rows written stay and a re-run with the same --out scores the rest"
    )


def _pipeline(ray: Any, job: RayJob, paths: list[str], uris: list[str], done: set[str]) -> Any:
    """read -> decode (tasks) -> score (actors), sized by `cluster_plan`.

    Decoding stays a stage of its own because its task pool's size (every half-CPU slot) differs
    from the actor pool's largest size: Ray Data fuses a task stage into the actors that follow it
    only when the two match (and their resource requests agree)."""
    from iqa.engine.ray_decode import DecodeBatch

    plan = cluster_plan(ray)
    read_args = {"include_paths": True, "num_cpus": DECODE_CPUS, "concurrency": plan.decode_tasks}
    reads = []
    if paths:
        reads.append(ray.data.read_binary_files(paths, **read_args))
    if uris:
        extensions = [e.lstrip(".") for e in SUPPORTED_EXTENSIONS]
        extensions += [e.upper() for e in extensions]
        read = ray.data.read_binary_files(uris, file_extensions=extensions, **read_args)
        reads.append(read.filter(lambda row: row["path"] not in done) if done else read)
    files = reads[0].union(*reads[1:]) if len(reads) > 1 else reads[0]
    batch = job.spec.batch_size
    decoded = files.map_batches(
        DecodeOnNode(DecodeBatch(job.spec.max_side, job.draft)),
        batch_size=None,  # a read block at a time (a few files): fused into the read task
        batch_format="numpy",
        num_cpus=DECODE_CPUS,
        compute=ray.data.TaskPoolStrategy(size=plan.decode_tasks),
    )
    return decoded.map_batches(
        ScoreBatch,
        fn_constructor_args=(job.spec, [registry.method(name) for name in job.spec.methods]),
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=plan.actors),
        num_cpus=ACTOR_CPUS,
        num_gpus=plan.actor_gpus,
        batch_size=batch,
        batch_format="numpy",
    )


@dataclass(frozen=True)
class DecodeOnNode:
    """`DecodeBatch` in a Ray task, its rows marked with the node that decoded them."""

    decode: DecodeBatch

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa
        import ray

        table = self.decode(batch)
        node = ray.get_runtime_context().get_node_id()
        return table.append_column(NODE_COLUMN, pa.array([node] * table.num_rows, pa.string()))


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address`, or start a local Ray of `num_cpus` (default: every core);
    True when this call started or joined it (the job then shuts it down).

    A Ray already initialised in this process (a notebook, a test) is used as it is. The package
    travels with the job (`py_modules`), so workers need only its dependencies installed. A local
    Ray, and a cluster at a loopback address, talk over 127.0.0.1 only: Ray otherwise advertises
    the machine's network address even for a single node, and the variable below is its (oddly
    named) switch for that.
    """
    if not address or _is_loopback(address):
        os.environ.setdefault(LOCAL_ONLY_VARIABLE, "0")
    ray = import_ray()
    if ray.is_initialized():
        return False
    import iqa

    runtime_env = {"py_modules": [str(Path(iqa.__file__).parent)]}
    if address:
        _join(ray, address, runtime_env)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            runtime_env=runtime_env,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    return True


def _join(ray: Any, address: str, runtime_env: dict) -> None:
    """`ray.init(address)`, every failure a one-line `RayConnectionError`.

    Ray's own output while it tries (about twenty lines of retries when a token is refused) is
    held back, shown as it was when the connection succeeds, and read for the cause when not."""
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401 - what `ray[client]` adds and Ray Client needs
        except ImportError:
            raise RayConnectionError(CLIENT_MISSING) from None
    _check_reachable(address)
    with _stderr_held() as held:
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        except Exception as err:  # Ray raises ConnectionError, RuntimeError, ValueError or its own
            raise RayConnectionError(_connection_failure(address, err, held())) from None
        output = held()
    sys.stderr.write(output)


def _check_reachable(address: str) -> None:
    """A TCP connection to `HOST:PORT` first: Ray itself retries an unreachable address for minutes."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # `auto`, or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as err:
        raise RayConnectionError(
            f"cannot reach the Ray cluster at {address}: {err.strerror or err or 'timed out'}"
        ) from None


def _connection_failure(address: str, err: Exception, output: str) -> str:
    text = f"{err} {err.__cause__ or ''} {output}"
    if "no authentication token was found" in text:
        return f"RAY_AUTH_MODE=token is set but no token was found: put {AUTH_HELP}"
    if "InvalidAuthToken" in text or "Unauthenticated" in text:
        if os.environ.get("RAY_AUTH_MODE") != "token":
            return f"the Ray cluster at {address} requires token authentication: set RAY_AUTH_MODE=token, {AUTH_HELP}"
        return f"the Ray cluster at {address} refused this token: put {AUTH_HELP}"
    return f"cannot connect to the Ray cluster at {address}: {' '.join(str(err).split()) or type(err).__name__}"


@contextmanager
def _stderr_held() -> Iterator[Callable[[], str]]:
    """File descriptor 2 into a temporary file for the block (Ray's C++ core writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)

        def text() -> str:
            held.seek(0)
            return held.read().decode(errors="replace")

        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ScoreBatch:
    """The actor: loads the scorers once, then turns decoded rows into one result row each.

    `methods` are the spec's registry entries, registered again in the actor's process: a method
    that a plug-in registered in the driver exists there too.
    """

    def __init__(self, spec: ScorerSpec, methods: Sequence[registry.Method]):
        from iqa.methods.scoring import build_scorers

        for method in methods:
            registry.register(method)
        self.scorers = build_scorers(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        from iqa.engine.ray_decode import image_from_row
        from iqa.photos.photo import Photo

        n = len(batch["path"])
        errors = list(batch["error"])
        photos = {
            i: Photo(str(batch["path"][i]), image_from_row(batch["pixels"][i], batch["rows"][i], batch["cols"][i]))
            for i in range(n)
            if errors[i] is None
        }
        out: dict[str, Any] = {key: batch[key] for key in ("path", "digest", "width", "height")}
        notes = [[str(note)] if note else [] for note in batch["note"]]
        methods = [registry.method(name) for name in self.scorers]
        named = sum(method.follows_prompts for method in methods) > 1  # p columns of two methods: named apart
        for method, scorer in zip(methods, self.scorers.values()):
            out.update(self._columns(method, scorer, photos, errors, notes, named))
        out["notes"] = ["; ".join(n) for n in notes]
        out["error"] = pa.array(errors, pa.string())
        out[NODE_COLUMN] = batch[NODE_COLUMN]
        return pa.table(out)

    def _columns(
        self, method: registry.Method, scorer: Any, photos: dict, errors: list, notes: list[list[str]], named: bool
    ) -> dict[str, np.ndarray]:
        """The method's score column, and for a method whose results follow the prompt table,
        a `p[positive / negative]` column per pair (the same pairs in every row); `named`: when
        several methods follow it (CLIP-IQA and MA-CLIP), `p[METHOD: positive / negative]`, as in
        `--out` files."""
        n = len(errors)
        pairs = getattr(scorer, "pairs", []) if method.follows_prompts else []
        scores, p = np.full(n, np.nan), np.full((n, len(pairs)), np.nan)
        for i, result in self._score(scorer, photos, errors).items():
            scores[i] = result.score
            notes[i] += [note for note in result.notes if note not in notes[i]]
            if pairs:
                p[i] = [pair.p for pair in result.pairs]
        columns = {method.column: scores}
        prefix = f"{method.name}: " if named else ""
        columns.update({f"p[{prefix}{pair.positive} / {pair.negative}]": p[:, j] for j, pair in enumerate(pairs)})
        return columns

    @staticmethod
    def _score(scorer, photos: dict, errors: list) -> dict:
        """Results by row; a photo the scorer refuses gets its error instead, the rest are scored."""
        from iqa.errors import IQAError

        todo = {i: photo for i, photo in photos.items() if errors[i] is None}
        try:
            return dict(zip(todo, scorer.score(list(todo.values()))))
        except IQAError:
            results = {}
            for i, photo in todo.items():
                try:
                    results[i] = scorer.score([photo])[0]
                except IQAError as err:
                    errors[i] = str(err).removeprefix(f"{photo.name}: ")
            return results
