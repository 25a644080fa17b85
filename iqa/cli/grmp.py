"""Command line for GRMP-IQA models: `python -m iqa train|import-official`."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from iqa.cli.eval import add_dataset_options, read_dataset
from iqa.cli.option_table import DEVICE
from iqa.cli.options import add_backbone_options
from iqa.clip.test_backbones import TEST_BACKBONE_WARNING
from iqa.errors import UsageError
from iqa.names import DEFAULT_FILE, GRMP_VARIANTS, HUB_REPO, REGULARIZERS

if TYPE_CHECKING:
    from iqa.labels.datasets import LabelledImage
    from iqa.methods.grmp.model import GRMPConfig
    from iqa.methods.grmp.train import FinetuneProtocol, TrainConfig

META_SOURCES = ("none", "synthetic", "kadid10k", "tid2013")
PRESET_TAG = "preset"


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register train and import-official on the main parser's sub-commands."""
    _add_train(commands)
    official = commands.add_parser("import-official", help="convert an official GRMP-IQA release checkpoint")
    official.add_argument(
        "source",
        nargs="?",
        default=DEFAULT_FILE,
        help=f"a local .pt file, or a file name in the Hub repository {HUB_REPO} (default {DEFAULT_FILE})",
    )
    official.add_argument("--out", type=Path, required=True, help="checkpoint path (.safetensors + .json)")
    official.add_argument(
        "--backbone",
        default=None,
        help="architecture to load it into (default: the one its tensors describe, ViT-B-16-quickgelu for the release)",
    )
    DEVICE.add_to(official)
    official.set_defaults(run=run_import_official)


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="meta-pre-train and fine-tune a GRMP-IQA model")
    add_dataset_options(train)
    add_backbone_options(train)
    train.set_defaults(backbone=None, pretrained=PRESET_TAG)  # by default the variant's preset backbone
    model = train.add_argument_group("model")
    model.add_argument("--variant", choices=GRMP_VARIANTS, default="seed")
    model.add_argument("--n-ctx", type=int, default=4)
    model.add_argument("--ctx-init", default=None, help="initialise the context from this text")
    model.add_argument("--train-last-blocks", type=int, default=None, help="paper variant: blocks trained per tower")
    model.add_argument("--vpt-tokens", type=int, default=None, help="paper variant: visual prompt tokens")
    protocol = train.add_argument_group("protocol")
    protocol.add_argument("--rounds", type=int, default=10)
    protocol.add_argument("--shots", type=_shots, default=50, help="training images per round: N, a fraction, or all")
    protocol.add_argument("--val-size", type=_count_or_fraction, default=0.2)
    protocol.add_argument("--test-fraction", type=float, default=0.2)
    protocol.add_argument("--group-by-ref", action="store_true", help="keep versions of one photo on one side")
    optim = train.add_argument_group("optimisation (defaults: the variant's preset)")
    optim.add_argument("--steps", type=int)
    optim.add_argument("--batch", type=int, dest="train_batch")
    optim.add_argument("--lr", type=float)
    optim.add_argument("--regularizer", choices=REGULARIZERS)
    optim.add_argument("--lam", type=float, help="regularizer strength (lambda)")
    optim.add_argument("--seed", type=int, default=0)
    meta = train.add_argument_group("meta-prompt pre-training")
    meta.add_argument(
        "--meta",
        choices=META_SOURCES,
        default="none",
        help="tasks: synthetic distortions of --meta-root photos, or a KADID-10k/TID2013 folder",
    )
    meta.add_argument("--meta-root", type=Path)
    meta.add_argument("--meta-epochs", type=int, default=50)
    out = train.add_argument_group("output")
    out.add_argument("--out", type=Path, required=True, help="checkpoint path (writes .safetensors + .json)")
    out.add_argument("--state-dir", type=Path, help="resumable training state; run again to continue")
    out.add_argument("--checkpoint-every", type=int, default=0)
    train.set_defaults(run=run_train)


def _shots(value: str) -> int | float | None:
    return None if value == "all" else _count_or_fraction(value)


def _count_or_fraction(value: str) -> int | float:
    number = float(value)
    return int(number) if number >= 1 and number.is_integer() else number


def run_train(args: argparse.Namespace) -> int:
    from iqa.clip.backbones import load_backbone
    from iqa.clip.features import FeatureStore
    from iqa.methods.grmp.meta import MetaConfig, meta_pretrain
    from iqa.methods.grmp.model import PRESETS as MODEL_PRESETS
    from iqa.methods.grmp.model import GRMPModel
    from iqa.methods.grmp.train import run_protocol

    preset = MODEL_PRESETS[args.variant]
    name = args.backbone or preset.backbone
    tag = preset.pretrained if args.pretrained == PRESET_TAG else args.pretrained
    backbone = load_backbone(name, tag, args.weights, args.device, args.dtype)
    if backbone.is_test:
        print(f"warning: {TEST_BACKBONE_WARNING}", file=sys.stderr)
    try:
        model = GRMPModel(_model_config(args, preset, name, backbone.pretrained), backbone)
    except ValueError as err:  # GRMPConfig's checks of --n-ctx, --vpt-tokens, ...
        raise UsageError(str(err)) from None
    store = FeatureStore(backbone, batch_size=args.batch_size, max_side=args.max_side)
    if args.meta != "none":
        tasks = _meta_tasks(args)
        history = meta_pretrain(model, tasks, MetaConfig(epochs=args.meta_epochs, seed=args.seed), store=store)
        print(
            f"meta-pre-training: {len(tasks)} tasks, {len(history)} epochs, last query loss {history[-1]['loss']:.4f}"
        )
    result = run_protocol(
        model,
        read_dataset(args),
        _protocol(args),
        _train_config(args),
        store=store,
        checkpoint_dir=args.state_dir,
        save_to=args.out,
    )
    for r in result.rounds:
        print(
            f"round {r.round + 1}: train {r.n_train}, val {r.n_val}, test {r.n_test}: "
            f"SRCC {_metric(r.test['srcc'])}  PLCC {_metric(r.test['plcc'])}"
        )
        if math.isnan(r.test["srcc"]) or math.isnan(r.test["plcc"]):
            print(
                f"round {r.round + 1}: no test correlation: its test part ({r.n_test} photos) is too small "
                "(under 3) or its labels or predictions are all equal; use more labelled photos, or fewer --shots",
                file=sys.stderr,
            )
    summary = {key: _metric(value) for key, value in result.summary().items()}
    print(
        "mean SRCC {mean_srcc}  median SRCC {median_srcc}  mean PLCC {mean_plcc}  median PLCC {median_plcc}".format(
            **summary
        )
    )
    assert result.checkpoint is not None  # run_protocol saves to save_to
    print(f"checkpoint: {result.checkpoint[0]} (+ {result.checkpoint[1].name})")
    for skipped in result.skipped:
        print(f"skipped: {skipped}", file=sys.stderr)
    return 1 if result.skipped else 0


def _model_config(args: argparse.Namespace, preset: GRMPConfig, name: str, tag: str | None) -> GRMPConfig:
    overrides = {
        "variant": args.variant,
        "backbone": name,
        "pretrained": tag,
        "n_ctx": args.n_ctx,
        "ctx_init": args.ctx_init,
        "seed": args.seed,
    }
    if args.train_last_blocks is not None:
        overrides["train_last_blocks"] = args.train_last_blocks
    if args.vpt_tokens is not None:
        overrides["vpt_tokens"] = args.vpt_tokens
    return replace(preset, **overrides, training={})


def _protocol(args: argparse.Namespace) -> FinetuneProtocol:
    from iqa.methods.grmp.train import FinetuneProtocol

    return FinetuneProtocol(
        rounds=args.rounds,
        test_fraction=args.test_fraction,
        shots=args.shots,
        val_size=args.val_size,
        group_by_ref=args.group_by_ref,
        seed=args.seed,
    )


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from iqa.methods.grmp.train import TrainConfig

    names = {"steps": "steps", "train_batch": "batch_size", "lr": "lr", "regularizer": "regularizer", "lam": "lam"}
    overrides = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    return TrainConfig.for_variant(args.variant, seed=args.seed, checkpoint_every=args.checkpoint_every, **overrides)


def _meta_tasks(args: argparse.Namespace) -> dict[str, list[LabelledImage]]:
    from iqa.labels.datasets import load_dataset
    from iqa.labels.distortions import make_distorted_set, task_list
    from iqa.photos.photo import collect_photo_paths

    if args.meta_root is None:
        raise UsageError("--meta needs --meta-root (good photos for synthetic, else the data set's folder)")
    if args.meta == "synthetic":
        folder = (args.state_dir or args.out.parent) / "meta-synthetic"
        records = make_distorted_set(collect_photo_paths([args.meta_root]), folder, max_side=256, seed=args.seed)
    else:
        records = load_dataset(args.meta, args.meta_root)
    return task_list(records)


def run_import_official(args: argparse.Namespace) -> int:
    from iqa.clip.backbones import CheckpointMismatch, load_backbone
    from iqa.methods.grmp.checkpoint import save_checkpoint
    from iqa.methods.grmp.official import OfficialCheckpointError, import_official

    source = Path(args.source)
    path = source if source.is_file() else _download_official(args.source)
    backbone = load_backbone(args.backbone, None, device=args.device) if args.backbone else None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: noise
            warnings.simplefilter("ignore", UserWarning)
            model = import_official(path, backbone=backbone, device=args.device)
    except (OfficialCheckpointError, CheckpointMismatch) as err:
        message = " ".join(str(err).split())
        raise type(err)(message if path.name in message else f"{path}: {message}") from None
    tensors, config = save_checkpoint(model, args.out)
    print(f"imported {path.name} as {tensors} (+ {config.name}); score with --method grmp --checkpoint {args.out}")
    return 0


def _download_official(name: str) -> Path:
    """The Hub file, or BackboneUnavailable (exit 3: weights unavailable) when it cannot be had."""
    from iqa.clip.backbones import BackboneUnavailable
    from iqa.methods.grmp.official import OfficialCheckpointError, download_official

    try:
        return download_official(name)
    except OfficialCheckpointError as err:
        raise BackboneUnavailable(str(err)) from None


def _metric(value: float) -> str:
    """A correlation to 4 places, or n/a where there was none to compute."""
    return "n/a" if math.isnan(value) else f"{value:.4f}"
