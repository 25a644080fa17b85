"""Command line: `python -m iqa score|filter|train|eval|synth|import-official`.

Exit codes: see EXIT_CODES_HELP (also printed by --help). The parser is built from light modules
only; each command imports what it needs when it runs, so `--help` starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from . import cli_eval, cli_grmp, cli_lab, cli_map
from .cli_options import add_scoring_options, open_scorers
from .errors import IQAError, UsageError
from .filtering import (
    OutputError,
    check_destination,
    plan_transfer,
    remove_partials,
    split_by_threshold,
    transfer,
    unscored,
)
from .results import ScoreResult, results_to_csv, results_to_json

if TYPE_CHECKING:
    from .photos import Photo

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_WEIGHTS, EXIT_WRITE = 0, 1, 2, 3, 4
EXIT_CODES_HELP = """exit codes:
  0  done
  1  done, but some paths or photos could not be used (each is named on stderr; the rest is scored)
  2  bad input: nothing could be scored, a bad prompt file, weights or checkpoint, bad options
  3  model weights unavailable (no such --weights path, or no download: offline, unknown name or tag)
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
    score.add_argument("--out", help="with --engine ray: a folder or object-store URI (s3://...) for Parquet files")
    score.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="ray: a Ray Data job (pip install 'ray[data]')"
    )
    score.add_argument("--ray-address", help="with --engine ray: a cluster (auto, ray://HOST:10001); default: local")
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
    filt.set_defaults(run=run_filter)
    cli_grmp.add_commands(commands)
    cli_eval.add_commands(commands)
    cli_map.add_commands(commands)
    cli_lab.add_commands(commands)
    return parser


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
    from .backbones import BackboneUnavailable  # loaded by then: only model loading raises it

    return isinstance(err, BackboneUnavailable)


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


def score_paths(args: argparse.Namespace, patterns: Sequence[str]) -> tuple[list[list[ScoreResult]], list[Photo], list]:
    """Find and open the photos, then score them with every scorer.

    Returns (results per scorer, photos, errors): every path or photo that cannot be used is
    reported on stderr by name and the rest is scored; only when nothing is left is it an error.
    """
    from .photos import find_photo_paths, open_photos

    paths, errors = find_photo_paths(patterns, recursive=args.recursive)
    scorers = open_scorers(args)
    photos, unreadable = open_photos(paths)
    errors = [*errors, *unreadable]
    for error in errors:
        print(f"skipped: {error}", file=sys.stderr)
    if not photos:
        raise UsageError(f"nothing to score: no photo could be opened ({len(errors)} paths or files skipped)")
    from tqdm import tqdm

    results = []
    for scorer in scorers.values():
        with tqdm(
            total=len(photos), desc=scorer.label, unit="photo", file=sys.stderr, disable=None, leave=False
        ) as bar:
            results.append(scorer.score(photos, progress=lambda done, total: bar.update(done - bar.n)))
    return results, photos, errors


def run_score(args: argparse.Namespace) -> int:
    if args.engine == "ray":  # a Ray Data job; Ray is imported only then
        from .ray_engine import run_cli

        return run_cli(args)
    results, _, errors = score_paths(args, args.paths)
    print(format_table(results))
    flat = [r for per_method in results for r in per_method]
    if args.csv:
        write_output(args.csv, results_to_csv(flat))
    if args.json:
        write_output(
            args.json, results_to_json(flat, backbone=args.backbone, pairs=args.pairs, errors=[str(e) for e in errors])
        )
    return EXIT_PARTIAL if errors else EXIT_OK


def write_output(path: Path, text: str) -> None:
    """Write a result file; an operating-system error becomes one line naming the file (exit 4)."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise OutputError(err.errno or 0, f"could not write {path}: {err.strerror or err}") from err


def format_table(results: list[list[ScoreResult]]) -> str:
    """Photos ranked by the first method's score, one score column per method, worst last."""
    methods = [per_method[0].label for per_method in results]
    by_name = [{r.name: r for r in per_method} for per_method in results]
    ranked = sorted(results[0], key=lambda r: r.score, reverse=True)
    width = max(len(r.name) for r in ranked)
    lines = ["  ".join([f"{'rank':>4}", *(f"{m:>9}" for m in methods), "photo".ljust(width), "notes"])]
    for rank, result in enumerate(ranked, 1):
        scores = [f"{table[result.name].score:9.4f}" for table in by_name]
        lines.append("  ".join([f"{rank:>4}", *scores, result.name.ljust(width), "; ".join(result.notes)]).rstrip())
    return "\n".join(lines)


def run_filter(args: argparse.Namespace) -> int:
    if args.method == "both":
        raise UsageError("filter needs one method: --method clipiqa or --method grmp")
    destination = args.move_to or args.copy_to
    if destination:
        _refuse_source_as_destination(args, destination)
    results, photos, errors = score_paths(args, [args.folder])
    paths = {photo.name: Path(photo.path) for photo in photos if photo.path is not None}  # all opened from files
    kept, rejected = split_by_threshold(results[0], args.threshold)
    no_score = unscored(results[0])
    print(f"{len(rejected)} of {len(kept) + len(rejected)} photos score below {args.threshold}:")
    for result in rejected:
        print(f"  {result.score:.4f}  {paths[result.name]}")
    for result in no_score:
        print(f"skipped: {result.name}: no finite score", file=sys.stderr)
    total = len(photos) + len(errors)
    print(
        f"{total} photos: {len(kept)} kept, {len(rejected)} rejected, "
        f"{len(errors) + len(no_score)} unscored (unreadable, or no finite score)"
    )
    if destination:
        _transfer_rejected(args, [paths[r.name] for r in rejected], destination)
    return EXIT_PARTIAL if errors or no_score else EXIT_OK


def _refuse_source_as_destination(args: argparse.Namespace, destination: Path) -> None:
    from .photos import find_photo_paths

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
    transfer(plan, verb)
    print(f"{'moved' if verb == 'move' else 'copied'} {len(plan)} photos to {destination}")
