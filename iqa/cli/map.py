"""Command line for the quality map: `python -m iqa map PHOTO [--out map.png|map.html|map.json]`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from iqa.cli.option_table import PAIRS, TEMPERATURE, add_options
from iqa.cli.options import add_backbone_options, open_scorers
from iqa.errors import UsageError
from iqa.names import CLIP_IQA, MAP_WINDOW_LIMIT

OUTPUT_SUFFIXES = (".png", ".html", ".json")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `map` on the main parser's sub-commands."""
    parser = commands.add_parser(
        "map",
        help="CLIP-IQA on overlapping windows of one photo: where it is poor",
        description="Scores overlapping windows of PHOTO with CLIP-IQA and prints the grid of values "
        "(rows top to bottom); --out writes the heat map over the photo (.png, .html) or the numbers (.json).",
    )
    parser.add_argument("photo", type=Path, help="one photo file")
    add_backbone_options(parser)
    add_options(parser, (PAIRS, TEMPERATURE))
    parser.add_argument(
        "--pair", type=int, default=None, help="show pair N's p(positive) (1 = the first pair; default: overall)"
    )
    parser.add_argument("--window", type=int, default=None, help="window side in pixels (default: chosen)")
    parser.add_argument("--stride", type=int, default=None, help="stride in pixels (default: half a window)")
    parser.add_argument(
        "--max-windows",
        type=int,
        default=64,
        help=f"at most this many windows (default 64, at most {MAP_WINDOW_LIMIT})",
    )
    parser.add_argument("--out", type=Path, default=None, help="write map.png, map.html (the figure) or map.json")
    parser.add_argument("--dark", action="store_true", help="dark theme for the .html figure")
    parser.set_defaults(run=run_map)


def run_map(args: argparse.Namespace) -> int:
    from iqa.methods.clipiqa.quality_map import quality_map
    from iqa.methods.clipiqa.scorer import CLIPIQA
    from iqa.photos.photo import open_photo

    if args.out is not None and args.out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--out {args.out}: the file name must end in {', '.join(OUTPUT_SUFFIXES)}")
    pair = None if args.pair is None else args.pair - 1
    photo = open_photo(args.photo)
    scorer = open_scorers(args)[CLIP_IQA]
    assert isinstance(scorer, CLIPIQA)  # what build_scorers makes for CLIP-IQA
    qmap = quality_map(photo, scorer, window=args.window, stride=args.stride, max_windows=args.max_windows)
    values = qmap.values(pair)
    print(
        f"{qmap.name}: {qmap.title(pair)} on {qmap.rows}x{qmap.cols} windows of {qmap.window} px, stride {qmap.stride}"
    )
    for note in qmap.notes:
        print(f"note: {note}")
    for row in values:
        print("  ".join(f"{value:.4f}" for value in row))
    if args.out is not None:
        _write(args.out, _writer(args.out.suffix.lower(), qmap, photo, pair, args.dark))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _writer(suffix: str, qmap, photo, pair: int | None, dark: bool) -> Callable[[Path], None]:
    if suffix == ".json":
        text = json.dumps(qmap.to_dict(), indent=2)

        def write_json(path: Path) -> None:
            path.write_text(text, encoding="utf-8")

        return write_json
    if suffix == ".png":
        from iqa.methods.clipiqa.quality_map import overlay_image

        image = overlay_image(qmap, photo.image, pair)
        return lambda path: image.save(path, format="PNG")
    from iqa.report.charts import quality_map_chart

    figure = quality_map_chart(qmap, photo.image, pair=pair, dark=dark)
    return lambda path: figure.write_html(path, include_plotlyjs=True)


def _write(path: Path, write: Callable[[Path], None]) -> None:
    """Write an output file; an operating-system error becomes one line naming the file (exit 4)."""
    from iqa.errors import OutputError

    try:
        write(path)
    except OSError as err:
        raise OutputError(err.errno or 0, f"could not write {path}: {err.strerror or err}") from err
