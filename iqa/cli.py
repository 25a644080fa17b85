"""Command line: `python -m iqa score|filter|train|eval|synth|import-official`.

Exit codes: 0 done; 1 done, but some photos could not be read (they are listed); 2 bad usage or
input (no photos, bad prompt file, bad checkpoint); 3 model weights unavailable.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from .backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, BackboneUnavailable, CheckpointMismatch, load_backbone
from .cli_grmp import add_commands as add_grmp_commands
from .clipiqa import CLIPIQA
from .features import FeatureStore
from .grmp.checkpoint import checkpoint_paths, load_checkpoint, read_config
from .grmp.model import GRMPScorer
from .filtering import plan_transfer, split_by_threshold, transfer
from .photos import collect_photo_paths, open_photos
from .prompts import DEFAULT_PRESET, PRESETS, PromptError, load_pairs
from .results import ScoreResult, results_to_csv, results_to_json
from .test_backbone import TEST_BACKBONE_WARNING

EXIT_OK, EXIT_PARTIAL, EXIT_INPUT, EXIT_WEIGHTS = 0, 1, 2, 3


class UsageError(Exception):
    """Bad input the user can fix; the message says how."""


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone")
    group.add_argument("--backbone", default=os.environ.get("IQA_BACKBONE", DEFAULT_BACKBONE),
                       help="open_clip model name, or test-tiny-rn / test-tiny-vit (meaningless scores)")
    group.add_argument("--pretrained", default=DEFAULT_PRETRAINED, type=_optional_tag,
                       help="open_clip pretrained tag ('none': random weights, for benchmarks)")
    group.add_argument("--weights", default=os.environ.get("IQA_WEIGHTS"),
                       help="local checkpoint file or folder for the backbone (instead of downloading)")
    group.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    group.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: fp16 on GPU, fp32 on CPU)")
    group.add_argument("--max-side", type=int, default=1024,
                       help="downsize larger photos to this longest side first (RN50 native resolution)")
    group.add_argument("--batch-size", type=int, default=16)


def _optional_tag(value: str) -> str | None:
    return None if value.lower() in ("", "none") else value


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    add_backbone_options(parser)
    group = parser.add_argument_group("scoring")
    group.add_argument("--method", choices=["clipiqa", "grmp", "both"], default="clipiqa")
    group.add_argument("--pairs", default=DEFAULT_PRESET,
                       help=f"prompt pairs: a preset ({', '.join(PRESETS)}) or a JSON/CSV file")
    group.add_argument("--temperature", type=float, default=None,
                       help="softmax temperature t (default: the checkpoint's logit scale; 1 = the seed's formula)")
    group.add_argument("--checkpoint", default=None, help="GRMP-IQA checkpoint (for --method grmp/both)")
    group.add_argument("--recursive", action="store_true", help="look into sub-folders too")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m iqa", description="Find low-quality photos with CLIP.")
    commands = parser.add_subparsers(dest="command", required=True)

    score = commands.add_parser("score", help="score photos and print a table")
    score.add_argument("paths", nargs="+", help="photo files, folders or globs")
    add_scoring_options(score)
    score.add_argument("--csv", type=Path, help="also write the results with the per-pair breakdown as CSV")
    score.add_argument("--json", type=Path, help="also write the results as JSON")
    score.set_defaults(run=run_score)

    filt = commands.add_parser("filter", help="list (and move or copy) the photos below a threshold")
    filt.add_argument("folder", help="folder (or glob) of photos")
    filt.add_argument("--threshold", type=float, required=True, help="photos scoring below this are rejected")
    add_scoring_options(filt)
    where = filt.add_mutually_exclusive_group()
    where.add_argument("--move-to", type=Path, help="move the rejected photos into this folder")
    where.add_argument("--copy-to", type=Path, help="copy the rejected photos into this folder")
    filt.add_argument("--apply", action="store_true", help="really move/copy (default: a dry run)")
    filt.set_defaults(run=run_filter)
    add_grmp_commands(commands, add_backbone_options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BackboneUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_WEIGHTS
    except (UsageError, PromptError, CheckpointMismatch, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT


def open_backbone(args: argparse.Namespace):
    backbone = load_backbone(args.backbone, args.pretrained, args.weights, args.device, args.dtype)
    if backbone.is_test:
        print(f"warning: {TEST_BACKBONE_WARNING}", file=sys.stderr)
    return backbone


def build_scorers(args: argparse.Namespace) -> list:
    """The scorers --method asks for, sharing one FeatureStore where they share a backbone."""
    scorers = []
    if args.method in ("clipiqa", "both"):
        store = FeatureStore(open_backbone(args), batch_size=args.batch_size, max_side=args.max_side)
        scorers.append(CLIPIQA(store, load_pairs(args.pairs), args.temperature))
    if args.method in ("grmp", "both"):
        scorers.append(_grmp_scorer(args, scorers[0].store if scorers else None))
    return scorers


def _grmp_scorer(args: argparse.Namespace, store: FeatureStore | None):
    """A GRMP scorer; on the CLIP-IQA backbone when the checkpoint was trained on it (shared features)."""
    if not args.checkpoint:
        raise UsageError("--method grmp needs --checkpoint PATH (a GRMP-IQA checkpoint; see `python -m iqa train`)")
    config = read_config(checkpoint_paths(args.checkpoint)[1])
    shared = store is not None and (config.backbone, config.pretrained) == (store.backbone.name, store.backbone.pretrained)
    backbone = store.backbone if shared else None
    model = load_checkpoint(args.checkpoint, backbone=backbone, device=args.device, dtype=args.dtype)
    return GRMPScorer(model, store)


def score_paths(args: argparse.Namespace, patterns: Sequence[str]) -> tuple[list[list[ScoreResult]], list, list]:
    """Open the photos, then score them with every scorer.

    Returns (results per scorer, photos, errors): unreadable photos are reported, not raised.
    """
    paths = collect_photo_paths(patterns, recursive=args.recursive)
    scorers = build_scorers(args)
    photos, errors = open_photos(paths)
    for error in errors:
        print(f"skipped: {error}", file=sys.stderr)
    if not photos:
        raise UsageError("none of the given files could be opened as a photo")
    results = []
    for scorer in scorers:
        with tqdm(total=len(photos), desc=scorer.method, unit="photo", file=sys.stderr,
                  disable=None, leave=False) as bar:
            results.append(scorer.score(photos, progress=lambda done, total: bar.update(done - bar.n)))
    return results, photos, errors


def run_score(args: argparse.Namespace) -> int:
    results, _, errors = score_paths(args, args.paths)
    print(format_table(results))
    flat = [r for per_method in results for r in per_method]
    if args.csv:
        args.csv.write_text(results_to_csv(flat), encoding="utf-8")
    if args.json:
        args.json.write_text(results_to_json(flat, backbone=args.backbone, pairs=args.pairs,
                                             errors=[str(e) for e in errors]), encoding="utf-8")
    return EXIT_PARTIAL if errors else EXIT_OK


def format_table(results: list[list[ScoreResult]]) -> str:
    """Photos ranked by the first method's score, one score column per method, worst last."""
    methods = [per_method[0].method for per_method in results]
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
    results, photos, errors = score_paths(args, [args.folder])
    paths = {photo.name: photo.path for photo in photos}
    kept, rejected = split_by_threshold(results[0], args.threshold)
    print(f"{len(rejected)} of {len(kept) + len(rejected)} photos score below {args.threshold}:")
    for result in rejected:
        print(f"  {result.score:.4f}  {paths[result.name]}")
    destination = args.move_to or args.copy_to
    if destination:
        plan = plan_transfer([paths[r.name] for r in rejected], destination)
        verb = "move" if args.move_to else "copy"
        if not args.apply:
            print(f"dry run: would {verb} {len(plan)} photos to {destination} (add --apply to do it)")
        else:
            transfer(plan, verb)
            print(f"{'moved' if verb == 'move' else 'copied'} {len(plan)} photos to {destination}")
    return EXIT_PARTIAL if errors else EXIT_OK
