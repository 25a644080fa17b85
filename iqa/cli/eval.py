"""Command line for evaluation and labelled sets: `python -m iqa eval|synth`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from iqa.cli.options import add_backbone_options, add_method_options, open_scorers
from iqa.errors import UsageError
from iqa.labels.datasets import DATASETS, LabelledImage, load_dataset
from iqa.labels.distortions import DISTORTIONS, make_distorted_set
from iqa.methods import registry


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register eval and synth on the main parser's sub-commands."""
    _add_eval(commands)
    synth = commands.add_parser("synth", help="turn a folder of good photos into a labelled distortion set")
    synth.add_argument("source", help="folder (or glob) of good photos")
    synth.add_argument("out", type=Path, help="output folder (images + labels.csv)")
    synth.add_argument("--types", nargs="+", default=list(DISTORTIONS), choices=list(DISTORTIONS))
    synth.add_argument("--max-side", type=int, default=512)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(run=run_synth)


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """--dataset, --root and --limit: a labelled set (also for `train`)."""
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="labelled set's layout")
    parser.add_argument("--root", required=True, type=Path, help="the data set's folder (or CSV file for csv)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")


def _add_eval(commands: argparse._SubParsersAction) -> None:
    ev = commands.add_parser("eval", help="SRCC / PLCC / KRCC of a scorer on a labelled set")
    add_dataset_options(ev)
    add_backbone_options(ev)
    add_method_options(ev)
    ev.add_argument("--json", type=Path, help="also write the metrics and predictions as JSON")
    ev.set_defaults(run=run_eval)


def read_dataset(args: argparse.Namespace) -> list[LabelledImage]:
    """The labelled images of --dataset/--root, the first --limit of them."""
    images = load_dataset(args.dataset, args.root)
    return images[: args.limit] if args.limit else images


def run_eval(args: argparse.Namespace) -> int:
    from iqa.lab.evaluate import evaluate

    if len(registry.from_option(args.method)) != 1:
        raise UsageError(f"eval scores one method at a time, not --method {args.method}")
    images = read_dataset(args)
    scorer = next(iter(open_scorers(args).values()))
    metrics = evaluate(scorer, images, batch_size=args.batch_size)
    print(
        f"{scorer.label} on {args.dataset} ({metrics['n']} images): SRCC {metrics['srcc']:.4f}  "
        f"PLCC {metrics['plcc']:.4f}  KRCC {metrics['krcc']:.4f}"
    )
    for skipped in metrics["skipped"]:
        print(f"skipped: {skipped}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({k: _plain(v) for k, v in metrics.items()}, indent=2), encoding="utf-8")
    return 1 if metrics["skipped"] else 0


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else value


def run_synth(args: argparse.Namespace) -> int:
    from iqa.photos.photo import collect_photo_paths

    sources = collect_photo_paths([args.source])
    records = make_distorted_set(sources, args.out, types=args.types, max_side=args.max_side, seed=args.seed)
    print(f"wrote {len(records)} labelled images of {len(sources)} photos to {args.out} (labels.csv)")
    return 0
