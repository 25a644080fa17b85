"""`iqa calibrate`: where to put a filter's threshold, from a set with keep/reject labels.

For each method (and each CLIP-IQA pair): ROC AUC and average precision of finding the bad
photos, and the threshold that meets the target with what it does ("rejects 46 of 50 bad photos,
loses 3 of 150 good ones"). The threshold printed is the one `filter --threshold` takes; `--out`
writes the ROC and precision-recall curves as an HTML page.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from iqa.cli.eval import add_dataset_options, read_dataset
from iqa.cli.options import add_backbone_options, add_cache_size_option, add_method_options

if TYPE_CHECKING:
    from iqa.lab.calibration import Calibration, OperatingPoint, TargetKind
    from iqa.methods.results import ScoreResult


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `calibrate` on the main parser's sub-commands."""
    parser = commands.add_parser("calibrate", help="the filter threshold for a target, from keep/reject labels")
    add_dataset_options(parser)
    add_backbone_options(parser)
    add_method_options(parser)
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--target-precision", type=float, help="reject precision to reach (share of rejects that are bad)"
    )
    target.add_argument("--target-recall", type=float, help="share of the bad photos to reject")
    target.add_argument("--best-f1", action="store_true", help="the threshold of the best F1 (the default)")
    parser.add_argument("--out", type=Path, default=None, help="write the ROC and precision-recall curves (.html)")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", type=Path, default=None, help="feature cache folder (default: ~/.cache/iqa)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    add_cache_size_option(parser)
    parser.set_defaults(run=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from iqa.cli.options import open_scorers
    from iqa.engine.disk_cache import DiskCache
    from iqa.errors import UsageError
    from iqa.lab.calibration import calibrate, choose_point
    from iqa.lab.prompt_lab import labelled_features
    from iqa.labels.keep import require_labels

    if args.out is not None and args.out.suffix.lower() != ".html":
        raise UsageError(f"--out {args.out}: the curves are written as .html")
    kind, value = _target(args)
    images = read_dataset(args)
    cache = None if args.no_cache else DiskCache(args.cache_dir, args.cache_size)
    methods, skipped = [], {}
    for scorer in open_scorers(args).values():
        labelled = labelled_features(images, scorer.store, cache)
        skipped.update(dict.fromkeys(labelled.skipped))
        keep = require_labels(labelled.keep)
        results = scorer.score_features(labelled.features, labelled.names)
        method = calibrate(scorer.label, [r.score for r in results], keep)
        point = choose_point(method.curves, kind, value)
        methods.append((method, point))
        print(format_calibration(method, point, _per_pair(results, keep), kind, value))
    for item in skipped:
        print(f"skipped: {item}", file=sys.stderr)
    if cache is not None:
        cache.close()
        for notice in cache.take_notices():
            print(f"warning: {notice}", file=sys.stderr)
    if args.out is not None:
        from iqa.report.lab_charts import curves_html

        page = curves_html([m for m, _ in methods], methods[0][1])
        write_output(args.out, lambda path: path.write_text(page, encoding="utf-8"))
        print(f"wrote the curves to {args.out}", file=sys.stderr)
    return 1 if skipped else 0


def write_output(path: Path, write: Callable[[Path], object]) -> None:
    """Write an output file; an operating-system error becomes one line naming the file (exit 4)."""
    from iqa.report.filtering import OutputError

    try:
        write(path)
    except OSError as err:
        raise OutputError(err.errno or 0, f"could not write {path}: {err.strerror or err}") from err


def _per_pair(results: list[ScoreResult], keep: list[bool]) -> list[Calibration | str]:
    """Each pair's p calibrated on its own, or why it cannot be (a pair whose p never changes)."""
    from iqa.lab.calibration import CalibrationError, calibrate

    out: list[Calibration | str] = []
    for j, pair in enumerate(results[0].pairs if results else []):
        name = f"{pair.positive} / {pair.negative}"
        try:
            out.append(calibrate(name, [r.pairs[j].p for r in results], keep))
        except CalibrationError as err:
            out.append(str(err))
    return out


def _target(args: argparse.Namespace) -> tuple[TargetKind, float | None]:
    if args.target_precision is not None:
        return "precision", args.target_precision
    if args.target_recall is not None:
        return "recall", args.target_recall
    return "f1", None


def format_calibration(
    method: Calibration, point: OperatingPoint, pairs: list[Calibration | str], kind: TargetKind, value: float | None
) -> str:
    """The method's figures, the threshold for the target and its counts, then each pair's figures."""
    from iqa.lab.calibration import describe, exact

    wanted = "the best F1" if kind == "f1" else f"reject {kind} >= {value:g}"
    lines = [
        describe(method),
        f"  for {wanted}: {point.sentence()} (precision {point.precision:.3f}, recall {point.recall:.3f})",
    ]
    for pair in pairs:
        if isinstance(pair, str):  # why it cannot be calibrated, the pair named first
            lines.append(f"  pair {pair}")
        else:
            lines.append(f"  pair {pair.name}: ROC AUC {pair.auc:.4f}  average precision {pair.average_precision:.4f}")
    lines.append(f"threshold ({method.name}): {exact(point.threshold)}")
    return "\n".join(lines)
