"""Options and scorer building shared by the command line's sub-commands (no torch at import)."""

from __future__ import annotations

import argparse
import math
import sys

from iqa.cli.option_table import BACKBONE_OPTIONS, add_options, method_options
from iqa.clip.test_backbones import TEST_BACKBONE_WARNING
from iqa.methods import registry
from iqa.methods.clipiqa.method import CLIP_IQA_METHOD
from iqa.methods.scoring import Scorer, ScorerSpec, build_scorers


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    """Which backbone, where its weights come from, and how photos are fed to it."""
    add_options(parser.add_argument_group("backbone"), BACKBONE_OPTIONS)


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """The backbone options, and the method and prompts of `score` and `filter`."""
    add_backbone_options(parser)
    group = parser.add_argument_group("scoring")
    add_method_options(group)
    group.add_argument("--recursive", action="store_true", help="look into sub-folders too")


def add_method_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--method, and the options of the methods that take some (each method's registry entry names
    those it reads: `Method.arguments`)."""
    add_options(parser, method_options())


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """How `score` and `filter` feed photos: decoding workers, draft decoding, the feature cache on disk."""
    group = parser.add_argument_group("pipeline")
    group.add_argument(
        "--workers", type=int, default=None, help="decoding processes (default: one per core, at most 8; 0: none)"
    )
    group.add_argument(
        "--no-draft",
        dest="draft",
        action="store_false",
        help="decode JPEGs at full size before resizing (default: the smallest DCT scale that covers the input size)",
    )
    group.add_argument(
        "--cache-dir",
        default=None,
        help="folder of the image-feature cache kept between runs (default: $IQA_CACHE_DIR, else ~/.cache/iqa)",
    )
    group.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache on disk")
    add_cache_size_option(group)


def add_cache_size_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--cache-size",
        type=cache_size,
        default=None,
        metavar="GIB",
        help="bound of the feature cache on disk in GiB, least recently used features evicted past it (default: 2)",
    )


MAX_CACHE_GIB = 1024**2  # 1 PiB: past any disk, and well inside a 64-bit byte count


def cache_size(text: str) -> int:
    """`--cache-size` in GiB (a decimal number) as bytes; refused unless positive and at most `MAX_CACHE_GIB`."""
    try:
        gib = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of GiB: {text!r}") from None
    if not math.isfinite(gib) or gib <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of GiB, not {text!r}")
    if gib > MAX_CACHE_GIB:
        raise argparse.ArgumentTypeError(f"at most {MAX_CACHE_GIB} GiB (1 PiB), not {text!r}")
    return max(1, int(gib * 1024**3))


def scorer_spec(args: argparse.Namespace) -> ScorerSpec:
    """The scorers the backbone and scoring options ask for."""
    methods = registry.from_option(getattr(args, "method", CLIP_IQA_METHOD.option))
    return ScorerSpec(
        methods=methods,
        backbone=args.backbone,
        pretrained=args.pretrained,
        weights=args.weights,
        device=args.device,
        dtype=args.dtype,
        max_side=args.max_side,
        batch_size=args.batch_size,
        options={name: method_arguments(args, name) for name in methods},
    )


def method_arguments(args: argparse.Namespace, method: str) -> dict[str, object]:
    """The options `method` reads (`Method.arguments`) that the command line has and were given."""
    wanted = registry.method(method).arguments
    return {name: getattr(args, name) for name in wanted if getattr(args, name, None) is not None}


def open_scorers(args: argparse.Namespace) -> dict[str, Scorer]:
    """Build the scorers, warning once on stderr when a test backbone makes the scores meaningless."""
    scorers = build_scorers(scorer_spec(args))
    if any(scorer.backbone.is_test for scorer in scorers.values()):
        print(f"warning: {TEST_BACKBONE_WARNING}", file=sys.stderr)
    return scorers
