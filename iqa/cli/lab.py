"""Command line for prompt design on a labelled set: `python -m iqa lab`.

Image features come from the disk cache (`iqa.engine.disk_cache`), so after the first run on a set only
the prompt texts are encoded: trying a new pair on KonIQ-10k costs text encodings and a matrix
product, not 10,000 decodes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from iqa.cli.eval import add_dataset_options, read_dataset
from iqa.cli.option_table import PAIRS, TEMPERATURE, add_options
from iqa.cli.options import add_backbone_options, add_cache_size_option
from iqa.cli.search import add_search_options, run_fit_weights, run_search
from iqa.clip.test_backbones import TEST_BACKBONE_WARNING

if TYPE_CHECKING:
    from iqa.lab.prompt_lab import LabReport


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register `lab` on the main parser's sub-commands."""
    lab = commands.add_parser("lab", help="rank prompt pairs by SRCC / PLCC against a labelled set")
    add_dataset_options(lab)
    add_backbone_options(lab)
    add_options(lab, (PAIRS, TEMPERATURE))
    cache = lab.add_mutually_exclusive_group()
    cache.add_argument("--cache-dir", type=Path, default=None, help="feature cache folder (default: ~/.cache/iqa)")
    cache.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    add_cache_size_option(lab)
    add_search_options(lab)
    lab.set_defaults(run=run_lab)


def run_lab(args: argparse.Namespace) -> int:
    from iqa.cli.options import scorer_spec
    from iqa.engine.disk_cache import DiskCache
    from iqa.lab.prompt_lab import labelled_features, rank_pairs
    from iqa.methods.prompts import load_pairs
    from iqa.methods.scoring import feature_store

    images = read_dataset(args)
    pairs = load_pairs(args.pairs)
    store = feature_store(scorer_spec(args))
    if store.backbone.is_test:
        print(f"warning: {TEST_BACKBONE_WARNING}", file=sys.stderr)
    cache = None if args.no_cache else DiskCache(args.cache_dir, args.cache_size)
    labelled = labelled_features(images, store, cache)
    for skipped in labelled.skipped:
        print(f"skipped: {skipped}", file=sys.stderr)
    if cache is not None:
        cache.close()
        for notice in cache.take_notices():
            print(f"warning: {notice}", file=sys.stderr)
        if cache.dropped:
            print(f"warning: {cache.dropped_notice()}", file=sys.stderr)
    print(f"{labelled.from_cache} photos' features from the cache, {labelled.encoded} encoded", file=sys.stderr)
    if args.search or args.fit_weights:
        run = run_search if args.search else run_fit_weights
        return max(run(args, store, labelled, pairs), 1 if labelled.skipped else 0)
    report = rank_pairs(store, pairs, labelled, args.temperature)
    print(format_report(report, args.dataset))
    for invalid in report.invalid:
        print(f"left out: {invalid}", file=sys.stderr)
    return 1 if labelled.skipped or report.invalid else 0


def format_report(report: LabReport, dataset: str) -> str:
    """Pairs best first (SRCC, PLCC, on/off), then the mean of the enabled pairs."""
    lines = [f"{'rank':>4}  {'SRCC':>7}  {'PLCC':>7}  on   pair"]
    for rank, r in enumerate(report.ranks, 1):
        on = "yes" if r.pair.enabled else "no"
        lines.append(f"{rank:>4}  {r.srcc:7.4f}  {r.plcc:7.4f}  {on:<3}  {r.pair.positive} / {r.pair.negative}")
    lines.append(
        f"mean of the enabled pairs on {dataset} ({report.n} photos, t = {report.temperature:g}): "
        f"SRCC {report.chosen_srcc:.4f}  PLCC {report.chosen_plcc:.4f}"
    )
    return "\n".join(lines)
