"""`score --engine ray`: the scoring pipeline as a Ray Data job, on one machine or a cluster.

read files (`ray.data.read_binary_files`: local folders, or object-store URIs through pyarrow's
file systems) -> decode on CPU tasks (`iqa.ray_decode.DecodeBatch`: content hash, the checks of
`iqa.photos`, EXIF orientation, JPEG draft) -> score on an actor pool (`ScoreBatch`: each actor
loads the backbone once, one GPU each when the cluster has GPUs, and scores through
`iqa.scoring.build_scorers`, so CLIP-IQA and GRMP-IQA give what the local engine gives) -> Parquet.

Without an address a local Ray is started on this machine (no dashboard, listening on 127.0.0.1
only); with one (`auto`, `ray://HOST:10001`, ...) the job runs on that cluster, and this package
is shipped to the workers with the job (`runtime_env` `py_modules`); the workers need its
dependencies installed. Ray is an optional extra, imported only here and only when a job runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import IQAError, UsageError
from .names import CLIP_IQA, GRMP_IQA
from .photos import SUPPORTED_EXTENSIONS, find_photo_paths
from .tiny_backbones import TEST_BACKBONE_WARNING, is_test_backbone

if TYPE_CHECKING:
    from .scoring import ScorerSpec

RAY_MISSING = 'the Ray engine needs Ray: pip install "ray[data]" (or pip install ".[ray]" for this package)'
SCORE_COLUMNS = {CLIP_IQA: "clip_iqa", GRMP_IQA: "grmp_iqa"}


# Read by Ray when it is imported: "0" makes a node use 127.0.0.1 instead of the machine's address.
LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayUnavailable(IQAError, ImportError):
    """Ray is not installed (it is the optional `ray` extra)."""


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


@dataclass
class Summary:
    scored: int
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), sources included


def is_uri(source: str) -> bool:
    return "://" in source


def run_job(job: RayJob) -> Summary:
    """Run the job and write its Parquet files into `job.dest` (a folder, made if needed)."""
    ray = import_ray()
    _refuse_written_destination(job.dest)
    local = [s for s in job.sources if not is_uri(s)]
    paths, path_errors = find_photo_paths(local, recursive=job.recursive) if local else ([], [])
    errors = [(e.name, e.reason) for e in path_errors]
    uris = [s for s in job.sources if is_uri(s)]
    if not paths and not uris:
        raise UsageError(f"nothing to score: no photo found ({len(errors)} paths skipped)")
    started = connect(job.address, job.num_cpus)
    try:
        scored = _pipeline(ray, job, [str(p.absolute()) for p in paths], uris).materialize()
        scored.write_parquet(_absolute(job.dest))
        bad = scored.select_columns(["path", "error"]).filter(lambda row: row["error"] is not None).take_all()
        return Summary(scored.count() - len(bad), errors + [(row["path"], row["error"]) for row in bad])
    finally:
        if started:
            ray.shutdown()


def _pipeline(ray: Any, job: RayJob, paths: list[str], uris: list[str]) -> Any:
    from .ray_decode import DecodeBatch

    reads = []
    if paths:
        reads.append(ray.data.read_binary_files(paths, include_paths=True))
    if uris:
        extensions = [e.lstrip(".") for e in SUPPORTED_EXTENSIONS]
        extensions += [e.upper() for e in extensions]
        reads.append(ray.data.read_binary_files(uris, include_paths=True, file_extensions=extensions))
    files = reads[0].union(*reads[1:]) if len(reads) > 1 else reads[0]
    batch = job.spec.batch_size
    decoded = files.map_batches(DecodeBatch(job.spec.max_side, job.draft), batch_size=batch, batch_format="numpy")
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return decoded.map_batches(
        ScoreBatch,
        fn_constructor_args=(job.spec,),
        concurrency=max(1, gpus),
        num_gpus=1 if gpus else 0,
        batch_size=batch,
        batch_format="numpy",
    )


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address`, or start a local Ray of `num_cpus` (default: every core);
    True when this call started or joined it (the job then shuts it down).

    A Ray already initialised in this process (a notebook, a test) is used as it is. The package
    travels with the job (`py_modules`), so workers need only its dependencies installed. A local
    Ray talks over the loopback address only: Ray otherwise advertises the machine's network
    address even for a single node, and the variable below is its (oddly named) switch for that.
    """
    if not address:
        os.environ.setdefault(LOCAL_ONLY_VARIABLE, "0")
    ray = import_ray()
    if ray.is_initialized():
        return False
    import iqa

    runtime_env = {"py_modules": [str(Path(iqa.__file__).parent)]}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            runtime_env=runtime_env,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    return True


def _absolute(dest: str) -> str:
    """Local destinations as absolute paths: Ray's workers do not share the driver's directory."""
    return dest if is_uri(dest) else str(Path(dest).expanduser().absolute())


def _refuse_written_destination(dest: str) -> None:
    """A destination that already holds files would mix two runs' rows: refused by name."""
    import pyarrow.fs

    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(_absolute(dest))
        info = filesystem.get_file_info(path)
        if info.type == pyarrow.fs.FileType.File:
            raise UsageError(f"{dest}: is a file; --out needs a folder (or object-store prefix) for Parquet files")
        if info.type == pyarrow.fs.FileType.Directory and filesystem.get_file_info(pyarrow.fs.FileSelector(path)):
            raise UsageError(f"{dest}: already holds files; choose a new folder for this run's Parquet files")
    except (OSError, ValueError) as err:
        raise UsageError(f"{dest}: cannot be used as the output ({err})") from err


class ScoreBatch:
    """The actor: loads the scorers once, then turns decoded rows into one result row each."""

    def __init__(self, spec: ScorerSpec):
        from .scoring import build_scorers

        self.scorers = build_scorers(spec)
        self.pairs = getattr(self.scorers.get(CLIP_IQA), "pairs", [])

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        from .photos import Photo
        from .ray_decode import image_from_row

        n = len(batch["path"])
        errors = list(batch["error"])
        photos = {
            i: Photo(str(batch["path"][i]), image_from_row(batch["pixels"][i], batch["rows"][i], batch["cols"][i]))
            for i in range(n)
            if errors[i] is None
        }
        out: dict[str, Any] = {key: batch[key] for key in ("path", "digest", "width", "height")}
        notes = [[str(note)] if note else [] for note in batch["note"]]
        for method, scorer in self.scorers.items():
            scores = np.full(n, np.nan)
            p = np.full((n, len(self.pairs)), np.nan)
            for i, result in self._score(scorer, photos, errors).items():
                scores[i] = result.score
                notes[i] += [note for note in result.notes if note not in notes[i]]
                if method == CLIP_IQA:
                    p[i] = [pair.p for pair in result.pairs]
            out[SCORE_COLUMNS[method]] = scores
            if method == CLIP_IQA:
                out.update({f"p[{pair.positive} / {pair.negative}]": p[:, j] for j, pair in enumerate(self.pairs)})
        out["notes"] = ["; ".join(n) for n in notes]
        out["error"] = pa.array(errors, pa.string())
        return pa.table(out)

    @staticmethod
    def _score(scorer, photos: dict, errors: list) -> dict:
        """Results by row; a photo the scorer refuses gets its error instead, the rest are scored."""
        from .errors import IQAError

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


def run_cli(args: argparse.Namespace) -> int:
    """`score --engine ray`: the job, then a summary; every unusable photo named on stderr."""
    from .cli_options import scorer_spec

    import_ray()  # before anything else: without Ray, one line saying how to install it
    if not args.out:
        raise UsageError("--engine ray writes Parquet files: give --out DEST (a folder or an object-store URI)")
    if args.csv or args.json:
        raise UsageError("--engine ray writes Parquet only (--out); --csv and --json are for the local engine")
    if is_test_backbone(args.backbone):
        print(f"warning: {TEST_BACKBONE_WARNING}", file=sys.stderr)
    job = RayJob(list(args.paths), args.out, scorer_spec(args), args.ray_address, recursive=args.recursive)
    summary = run_job(job)
    for path, reason in summary.errors:
        print(f"skipped: {path}: {reason}", file=sys.stderr)
    print(f"scored {summary.scored} photos, {len(summary.errors)} unusable; Parquet files in {args.out}")
    return 1 if summary.errors else 0
