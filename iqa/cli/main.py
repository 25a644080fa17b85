"""Command line: `python -m iqa score|filter|train|eval|synth|import-official`.

Exit codes: see EXIT_CODES_HELP (also printed by --help). The parser is built from light modules
only; each command imports what it needs when it runs, so `--help` starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import gc
import io
import logging
import sys
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from iqa.cli import calibrate as calibrate_command
from iqa.cli import eval as eval_command
from iqa.cli import grmp as grmp_commands
from iqa.cli import lab as lab_command
from iqa.cli import map as map_command
from iqa.cli.options import add_pipeline_options, add_scoring_options, open_scorers
from iqa.errors import IQAError, OutputError, Unavailable, UsageError
from iqa.methods import registry
from iqa.methods.results import ScoreResult, results_to_csv, results_to_json
from iqa.report.filtering import (
    check_destination,
    plan_transfer,
    remove_partials,
    split_by_threshold,
    transfer,
    unscored,
)

if TYPE_CHECKING:
    from iqa.engine.disk_cache import DiskCache
    from iqa.engine.pipeline import Pipeline, PipelineOptions, RunCounts
    from iqa.engine.result_files import ResultFile

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_WEIGHTS, EXIT_WRITE = 0, 1, 2, 3, 4
EXIT_CODES_HELP = """exit codes:
  0  done
  1  done, but some paths or photos could not be used (each is named on stderr; the rest is scored)
  2  bad input: nothing could be scored, a bad prompt file, weights or checkpoint, bad options
  3  model weights unavailable (no such --weights path, or no download: offline, unknown name or tag),
     or the Ray cluster (unreachable, refused, or its job stalled)
  4  could not write the output (read-only or full disk, a destination that is a file, ...)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m iqa",
        description="Find low-quality photos with CLIP.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="say on stderr which device, backbone and checkpoint files are used, and why",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser(
        "score",
        help="score photos and print a table",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("paths", nargs="+", help="photo files, folders or globs")
    add_scoring_options(score)
    score.add_argument("--csv", type=Path, help="also write the results with the per-pair breakdown as CSV")
    score.add_argument("--json", type=Path, help="also write the results as JSON")
    score.add_argument(
        "--out",
        help="results.csv, .jsonl or .parquet: one row per photo, written batch by batch; re-running with the "
        "same --out resumes (photos already there are not opened again). With --engine ray: a folder or "
        "object-store URI (s3://...) for Parquet files",
    )
    score.add_argument(
        "--rescore",
        action="store_true",
        help="where --out holds results of other settings (method, prompt pairs, backbone, preprocessing) or "
        "cannot be resumed, score into a new file beside it (NAME-1.csv, ...) instead of refusing",
    )
    score.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="ray: a Ray Data job (pip install 'ray[data]')"
    )
    score.add_argument(
        "--ray-address", help="with --engine ray: a cluster (auto, HOST:6379, ray://HOST:10001); default: local"
    )
    score.add_argument(
        "--stall-timeout",
        type=float,
        metavar="SECONDS",
        help="with --engine ray: stop the job when no photo is scored for this long (default 300)",
    )
    add_pipeline_options(score)
    score.set_defaults(run=run_score)

    filt = commands.add_parser(
        "filter",
        help="list (and move or copy) the photos below a threshold",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    filt.add_argument("folder", help="folder (or glob) of photos")
    filt.add_argument("--threshold", type=float, required=True, help="photos scoring below this are rejected")
    add_scoring_options(filt)
    where = filt.add_mutually_exclusive_group()
    where.add_argument("--move-to", type=Path, help="move the rejected photos into this folder")
    where.add_argument("--copy-to", type=Path, help="copy the rejected photos into this folder")
    filt.add_argument("--apply", action="store_true", help="really move/copy (default: a dry run)")
    add_pipeline_options(filt)
    filt.set_defaults(run=run_filter)
    grmp_commands.add_commands(commands)
    eval_command.add_commands(commands)
    map_command.add_commands(commands)
    lab_command.add_commands(commands)
    calibrate_command.add_commands(commands)
    return parser


def entry_point() -> None:
    """`python -m iqa` and the `iqa` script: `main`, then exit without the last garbage collection.

    torch, torchvision and open_clip leave about a million objects, and the interpreter's final
    collection over them took 0.5 s of a 2.5 s re-run from the disk cache. Frozen objects are left
    to the end of the process instead; output files and the cache are closed before this point.
    """
    if isinstance(sys.stdout, io.TextIOWrapper):  # a photo's name that is not UTF-8 is printed as its own bytes
        sys.stdout.reconfigure(errors="surrogateescape")  # (stderr keeps escaping what it cannot encode)
    code = main()
    gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; bad input (an `IQAError`) is one line on stderr and an exit code, a bug a traceback."""
    args = build_parser().parse_args(argv)
    with _log_to_stderr(args.verbose):
        try:
            return int(args.run(args))
        except IQAError as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            return EXIT_WEIGHTS if _is_weights_error(err) else EXIT_INPUT
        except FileNotFoundError as err:  # an input path that does not exist
            print(f"error: {one_line(err)}", file=sys.stderr)
            return EXIT_INPUT
        except OSError as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            return EXIT_WRITE


def _is_weights_error(err: IQAError) -> bool:
    from iqa.clip.backbones import BackboneUnavailable  # loaded by then: only model loading raises it

    return isinstance(err, (BackboneUnavailable, Unavailable))


@contextmanager
def _log_to_stderr(verbose: bool) -> Iterator[None]:
    """With -v, the library's INFO messages (`iqa.*` loggers) on stderr; the library itself stays silent."""
    if not verbose:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger = logging.getLogger("iqa")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def one_line(err: BaseException) -> str:
    """The message on one line; an OSError names its file and reason without the [Errno n] prefix."""
    if isinstance(err, OSError) and not isinstance(err, OutputError) and err.strerror:
        text = f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


@dataclass
class Ranked:
    """What the final table needs of a photo: no pixels, no per-pair breakdown."""

    name: str
    path: str
    scores: dict[str, float]  # by method label
    notes: str = ""


@dataclass
class Run:
    """A streaming run's outcome: one `Ranked` per scored photo, what was skipped, and the counts."""

    ranked: list[Ranked] = field(default_factory=list)
    results: list[ScoreResult] = field(default_factory=list)  # only when --csv/--json asks for them
    errors: list = field(default_factory=list)
    counts: RunCounts | None = None
    already_done: int = 0
    dropped: int = 0  # feature-cache rows that failed their check


def open_pipeline(args: argparse.Namespace) -> Pipeline:
    """The scorers the options ask for, in a streaming pipeline with the options' workers and cache."""
    from iqa.engine.pipeline import Pipeline

    scorers = open_scorers(args)
    return Pipeline(list(scorers.values()), pipeline_options(args))


def score_paths(
    args: argparse.Namespace,
    pipeline: Pipeline,
    patterns: Sequence[str],
    out: ResultFile | None = None,
    keep_results: bool = False,
) -> Run:
    """Find the photos and score them in bounded batches with every scorer (`iqa.engine.pipeline`).

    Photos already in `out` are not opened at all (a resumed run); each batch's rows are written to
    it as they come. Every path or photo that cannot be used is reported on stderr by name and the
    rest is scored; only when nothing is left is it an error.
    """
    from tqdm import tqdm

    from iqa.photos.photo import find_photo_paths

    paths, errors = find_photo_paths(patterns, recursive=args.recursive)
    for error in errors:
        print(f"skipped: {error}", file=sys.stderr)
    done: Container[str] = out.done if out else ()
    todo = [path for path in paths if str(path) not in done]
    run = Run(errors=list(errors), already_done=len(paths) - len(todo))
    with tqdm(total=len(todo), unit="photo", file=sys.stderr, disable=None, leave=False, smoothing=0.1) as bar:
        for batch in pipeline.run(todo):
            for error in pipeline.counts.skipped[len(run.errors) - len(errors) :]:
                print(f"skipped: {error}", file=sys.stderr)
                run.errors.append(error)
            if out:
                out.write(batch)
            for photo in batch:
                notes = dict.fromkeys(note for r in photo.results for note in r.notes)
                run.ranked.append(
                    Ranked(photo.name, photo.path, {r.label: r.score for r in photo.results}, "; ".join(notes))
                )
                if keep_results:
                    run.results.extend(photo.results)
            bar.update(pipeline.counts.scored + len(pipeline.counts.skipped) - bar.n)
    run.counts = pipeline.counts
    cache = pipeline.options.cache
    if cache is not None:
        cache.close()
    _report_cache(cache)
    if cache is not None and cache.dropped:
        run.dropped = cache.dropped
        print(f"warning: {cache.dropped_notice()}", file=sys.stderr)
    return run


def pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    """The pipeline's workers, draft decoding and disk cache from the command line's options."""
    from iqa.engine.disk_cache import DiskCache
    from iqa.engine.pipeline import PipelineOptions, default_workers, weights_fingerprint

    cache = None
    if not args.no_cache:
        cache = DiskCache(args.cache_dir, args.cache_size)
        _report_cache(cache)
    return PipelineOptions(
        workers=default_workers() if args.workers is None else args.workers,
        draft=args.draft,
        cache=cache,
        weights_fingerprint=weights_fingerprint(args.weights),
        channels_last=True,  # the command line's backbone is its own
    )


def _report_cache(cache: DiskCache | None) -> None:
    """The feature cache's new notices on stderr, one line each (a lock, a read-only or corrupt file)."""
    if cache is not None:
        for notice in cache.take_notices():
            print(f"warning: {notice}", file=sys.stderr)


def _summary(run: Run, out: Path | None = None) -> str:
    from iqa.engine.pipeline import RunCounts

    counts = run.counts or RunCounts()
    reasons: dict[str, int] = {}
    for error in run.errors:
        reason = getattr(error, "reason", str(error))
        reasons[reason] = reasons.get(reason, 0) + 1
    skipped = f"{len(run.errors)} skipped" + (
        " (" + "; ".join(f"{n} {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])) + ")"
        if reasons
        else ""
    )
    parts = [f"{counts.scored} scored", skipped, f"{counts.cached} from the feature cache (not decoded)"]
    if run.dropped:
        parts.append(f"{run.dropped} cached features failed their check (encoded again)")
    if run.already_done:
        parts.append(f"{run.already_done} already in {out}")
    return "summary: " + ", ".join(parts)


def run_score(args: argparse.Namespace) -> int:
    if args.engine == "ray":  # a Ray Data job; Ray is imported only then
        from iqa.cli.ray import run_ray

        return run_ray(args)
    pipeline = open_pipeline(args)
    out = _result_file(args, pipeline) if args.out else None
    try:
        run = score_paths(args, pipeline, args.paths, out, keep_results=bool(args.csv or args.json))
    finally:
        if out:
            out.close()
    if out:
        known = {r.name for r in run.ranked}
        earlier = [Ranked(name, name, scores, notes) for name, (scores, notes) in out.done.items() if name not in known]
        run.ranked[:0] = earlier
    if not run.ranked:
        raise UsageError(f"nothing to score: no photo could be opened ({len(run.errors)} paths or files skipped)")
    print(format_ranking(run.ranked))
    print(_summary(run, out.path if out else None), file=sys.stderr)
    if args.csv:
        write_output(args.csv, results_to_csv(run.results))
    if args.json:
        write_output(
            args.json,
            results_to_json(run.results, backbone=args.backbone, pairs=args.pairs, errors=[str(e) for e in run.errors]),
        )
    return EXIT_PARTIAL if run.errors else EXIT_OK


def _result_file(args: argparse.Namespace, pipeline: Pipeline) -> ResultFile:
    """--out, resumed if it holds this run's settings; refused, or with --rescore a new file, if not."""
    from iqa.engine.result_files import ResultFile

    out, notice = ResultFile.resume(Path(args.out), pipeline.settings(), rescore=args.rescore)
    if notice:
        print(notice, file=sys.stderr)
    return out


def write_output(path: Path, text: str) -> None:
    """Write a result file; an operating-system error becomes one line naming the file (exit 4)."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise OutputError(err.errno or 0, f"could not write {path}: {err.strerror or err}") from err


def format_table(results: list[list[ScoreResult]]) -> str:
    """Photos ranked by the first method's score, one score column per method, worst last."""
    ranked = {r.name: Ranked(r.name, r.name, {}, "; ".join(r.notes)) for r in results[0]}
    for per_method in results:
        for result in per_method:
            ranked[result.name].scores[result.label] = result.score
    return format_ranking(list(ranked.values()))


def format_ranking(photos: list[Ranked]) -> str:
    """Photos ranked by the first method's score, one score column per method, worst last."""
    methods = list(photos[0].scores)
    ranked = sorted(photos, key=lambda r: r.scores[methods[0]], reverse=True)
    width = max(len(r.name) for r in ranked)
    lines = ["  ".join([f"{'rank':>4}", *(f"{m:>9}" for m in methods), "photo".ljust(width), "notes"])]
    for rank, photo in enumerate(ranked, 1):
        scores = [f"{photo.scores.get(m, float('nan')):9.4f}" for m in methods]
        lines.append("  ".join([f"{rank:>4}", *scores, photo.name.ljust(width), photo.notes]).rstrip())
    return "\n".join(lines)


def run_filter(args: argparse.Namespace) -> int:
    if len(registry.from_option(args.method)) != 1:
        raise UsageError(f"filter decides by one method, not --method {args.method}")
    destination = args.move_to or args.copy_to
    if destination:
        _refuse_source_as_destination(args, destination)
    run = score_paths(args, open_pipeline(args), [args.folder])
    if not run.ranked:
        raise UsageError(f"nothing to score: no photo could be opened ({len(run.errors)} paths or files skipped)")
    label = next(iter(run.ranked[0].scores))
    scored = [ScoreResult(r.name, r.scores[label], [], label) for r in run.ranked]
    paths = {r.name: Path(r.path) for r in run.ranked}
    kept, rejected = split_by_threshold(scored, args.threshold)
    no_score = unscored(scored)
    print(f"{len(rejected)} of {len(kept) + len(rejected)} photos score below {args.threshold}:")
    for result in rejected:
        print(f"  {result.score:.4f}  {paths[result.name]}")
    for result in no_score:
        print(f"skipped: {result.name}: no finite score", file=sys.stderr)
    total = len(run.ranked) + len(run.errors)
    print(
        f"{total} photos: {len(kept)} kept, {len(rejected)} rejected, "
        f"{len(run.errors) + len(no_score)} unscored (unreadable, or no finite score)"
    )
    print(_summary(run), file=sys.stderr)
    if destination:
        _transfer_rejected(args, [paths[r.name] for r in rejected], destination)
    return EXIT_PARTIAL if run.errors or no_score else EXIT_OK


def _refuse_source_as_destination(args: argparse.Namespace, destination: Path) -> None:
    from iqa.photos.photo import find_photo_paths

    folder = Path(args.folder)
    if folder.is_dir():
        sources = [folder]
    else:
        sources = [path.parent for path in find_photo_paths([args.folder], args.recursive)[0]]
    problem = check_destination(destination, sources, args.recursive)
    if problem:
        raise UsageError(f"refused: {problem}")


def _transfer_rejected(args: argparse.Namespace, rejected: list[Path], destination: Path) -> None:
    verb = "move" if args.move_to else "copy"
    if not args.apply:
        plan = plan_transfer(rejected, destination)
        print(f"dry run: would {verb} {len(plan)} photos to {destination} (add --apply to do it)")
        return
    for leftover in remove_partials(destination):
        print(f"removed {leftover.name}, left by an interrupted run", file=sys.stderr)
    plan = plan_transfer(rejected, destination)
    links = {source: source.resolve() for source, _ in plan if verb == "move" and source.is_symlink()}
    transfer(plan, verb)
    print(f"{'moved' if verb == 'move' else 'copied'} {len(plan)} photos to {destination}")
    for link, photo in links.items():
        print(f"note: {link} was a symbolic link: its photo was copied and the link removed; {photo} was kept")
