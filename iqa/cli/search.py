"""`iqa lab --search` and `iqa lab --fit-weights`: pairs suggested and weights learned from a labelled set.

Both print cross-validated figures (mean ± spread over stratified, seeded folds) beside the
table's (`--pairs`) and the `pyiqa` preset's, and write the result with `--save-pairs` as a
prompt file `score --pairs` reads.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from iqa.lab.folds import DEFAULT_FOLDS, DEFAULT_SEED
from iqa.lab.search import DEFAULT_MAX_PAIRS, DEFAULT_POOL, METRICS
from iqa.methods.prompts import DEFAULT_PRESET

if TYPE_CHECKING:
    from iqa.clip.features import FeatureStore
    from iqa.lab.folds import CrossValidated
    from iqa.lab.prompt_lab import LabelledFeatures
    from iqa.lab.search import Metric, SearchReport, Target
    from iqa.lab.weights import WeightReport
    from iqa.methods.prompts import PromptPair


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """The options of `lab` for searching pairs and fitting weights."""
    group = parser.add_argument_group("pair search and learned weights")
    what = group.add_mutually_exclusive_group()
    what.add_argument("--search", action="store_true", help="suggest pairs from the vocabulary (and --vocabulary)")
    what.add_argument("--fit-weights", action="store_true", help="fit non-negative weights for the --pairs table")
    group.add_argument("--vocabulary", default=None, help="a file of extra words, one 'good / bad' a line")
    group.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="cross-validation folds (default: 5)")
    group.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the folds' seed (default: 0)")
    group.add_argument("--max-pairs", type=int, default=DEFAULT_MAX_PAIRS, help="pairs to select at most")
    group.add_argument(
        "--metric",
        choices=METRICS,
        default=None,
        help="srcc (scores) or auc (keep/reject labels; default if every photo has one)",
    )
    group.add_argument("--top", type=int, default=20, help="ranked candidates to print (default: 20)")
    group.add_argument("--save-pairs", default=None, help="write the selected or weighted pairs here (.json or .csv)")


def run_search(
    args: argparse.Namespace, store: FeatureStore, labelled: LabelledFeatures, pairs: list[PromptPair]
) -> int:
    from iqa.lab.search import as_table, search_pairs
    from iqa.lab.vocabulary import VOCABULARY, candidate_pairs, read_words

    target = _target(args, labelled)
    words = [*VOCABULARY, *(read_words(args.vocabulary) if args.vocabulary else [])]
    candidates = candidate_pairs(words)
    report = search_pairs(
        store, labelled.features, target, candidates, _baselines(args, pairs), args.temperature, args.max_pairs
    )
    print(format_search(report, args.top))
    for left_out in report.left_out:
        print(f"left out: {left_out}", file=sys.stderr)
    _save(args, as_table(report.selected))
    return 0


def run_fit_weights(
    args: argparse.Namespace, store: FeatureStore, labelled: LabelledFeatures, pairs: list[PromptPair]
) -> int:
    from iqa.lab.weights import learn_weights

    report = learn_weights(store, labelled.features, pairs, _target(args, labelled), args.temperature)
    print(format_weights(report))
    _save(args, report.pairs)
    return 0


def _target(args: argparse.Namespace, labelled: LabelledFeatures) -> Target:
    from iqa.lab.search import make_target

    labels = labelled.keep or [None] * len(labelled.scores)
    metric: Metric = args.metric or ("auc" if all(label is not None for label in labels) else "srcc")
    return make_target(labelled.scores, labels, metric, args.folds, args.seed)


def _baselines(args: argparse.Namespace, pairs: list[PromptPair]) -> dict[str, list[PromptPair]]:
    from iqa.methods.prompts import preset

    if args.pairs == DEFAULT_PRESET:
        return {f"the table ({DEFAULT_PRESET} preset)": pairs}
    return {f"the table ({args.pairs})": pairs, f"{DEFAULT_PRESET} preset": preset(DEFAULT_PRESET)}


def _save(args: argparse.Namespace, pairs: list[PromptPair]) -> None:
    from pathlib import Path

    from iqa.cli.calibrate import write_output
    from iqa.methods.prompts import save_pairs

    if args.save_pairs:
        write_output(Path(args.save_pairs), lambda path: save_pairs(pairs, path))
        print(f"wrote {len(pairs)} pairs to {args.save_pairs} (for score --pairs)", file=sys.stderr)


def format_search(report: SearchReport, top: int) -> str:
    """The best candidates, the selected set step by step, and the cross-validated comparison."""
    name = report.metric.upper()
    lines = [f"{'rank':>4}  {name:>7}  {'tag':<9}  pair"]
    for rank, c in enumerate(report.ranking[:top], 1):
        lines.append(f"{rank:>4}  {c.figure:7.4f}  {c.tag:<9}  {c.pair.positive} / {c.pair.negative}")
    lines.append(f"({len(report.ranking)} candidates; selection among the {DEFAULT_POOL} best)")
    lines.append(f"selected ({name} of the mean of the pairs so far, on all photos):")
    for step, c in enumerate(report.selected, 1):
        lines.append(f"{step:>4}  {c.figure:7.4f}  {c.pair.positive} / {c.pair.negative}")
    lines += _compared(name, report.counts, [report.selection, *report.baselines])
    return "\n".join(lines)


def format_weights(report: WeightReport) -> str:
    """The fitted weights, and their cross-validated figure beside the table's weights."""
    lines = [f"{'weight':>6}  pair"]
    lines += [f"{p.weight:6.3f}  {p.positive} / {p.negative}" for p in report.pairs]
    compared = [report.fitted] + ([report.table] if report.table is not None else [])
    return "\n".join(lines + _compared(report.metric.upper(), report.counts, compared))


def _compared(name: str, counts: str, figures: list[CrossValidated]) -> list[str]:
    width = max(len(f.name) for f in figures)
    lines = [f"cross-validated {name} (mean ± spread over the held-out folds; {counts}):"]
    return lines + [f"  {f.name:<{width}}  {f.text()}" for f in figures]
