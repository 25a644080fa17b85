"""The app's settings: `AppConfig`, read from flags and environment variables by `parse_args`."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iqa.cli.option_table import (
    BACKBONE,
    DEVICE,
    MAX_SIDE,
    PRETRAINED,
    WEIGHTS,
    Option,
    add_options,
    env_flag,
    env_list,
)
from iqa.clip.test_backbones import is_test_backbone
from iqa.names import DEFAULT_FILE

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MIB = 1 << 20


HOST = Option(
    "--host",
    "address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network interface)",
    "127.0.0.1",
    env=("IQA_HOST", "GRADIO_SERVER_NAME"),
)
PORT = Option("--port", "port to listen on (default 7860)", 7860, env=("IQA_PORT", "GRADIO_SERVER_PORT"), type=int)
GRMP_CHECKPOINT = Option(
    "--grmp-checkpoint",
    "GRMP-IQA checkpoint stem (repeatable)",
    [],  # argparse appends to a copy
    env=("IQA_GRMP_CHECKPOINT",),
    from_env=env_list,
    extra={"action": "append"},
)
GRMP_OFFICIAL = Option(
    "--grmp-official",
    f"official GRMP-IQA file to convert (once, cached) and show by default: a file name in the Hub repository "
    f"zzhowe/GRMP-IQA or a local .pt path; 'none' for no default model (default: {DEFAULT_FILE}; none with "
    "the test backbone; converted checkpoints are kept in $IQA_CACHE_DIR)",
    env=("IQA_GRMP_OFFICIAL",),
)
LAB_DATASET = Option(
    "--lab-dataset",
    "a labelled set on the server for the Prompt lab, e.g. koniq10k:/data/koniq (csv: the labels file); "
    "its image features are read from (and written to) the disk feature cache in $IQA_CACHE_DIR",
    env=("IQA_LAB_DATASET",),
    extra={"metavar": "NAME:DIR"},
)
TEST_BACKBONE = Option(
    "--test-backbone",
    "use the tiny random test backbone: scores are meaningless (for tests/offline)",
    False,
    env=("IQA_TEST_BACKBONE",),
    from_env=env_flag,
    extra={"action": "store_true"},
)
ALLOW_BACKBONE = Option(
    "--allow-backbone",
    "a backbone uploaded GRMP checkpoints may use, loaded at start (repeatable); uploads may always use "
    "--backbone and those of --grmp-checkpoint, never others",
    [],
    env=("IQA_ALLOW_BACKBONE",),
    from_env=env_list,
    extra={"action": "append", "metavar": "NAME"},
)
MAX_PHOTOS = Option("--max-photos", "photos per session (default 300)", 300, env=("IQA_MAX_PHOTOS",), type=int)
MAX_FILE_SIZE = Option("--max-file-size", "largest uploaded file (default 30mb)", "30mb", env=("IQA_MAX_FILE_SIZE",))
MAX_PIXELS = Option(
    "--max-pixels",
    "largest photo in pixels, checked from the file header before decoding (default 60000000)",
    60_000_000,
    env=("IQA_MAX_PIXELS",),
    type=int,
)
SESSION_MEMORY_MB = Option(
    "--session-memory-mb",
    "memory budget for all sessions' photos together, in MiB; beyond it the least recently used sessions lose "
    "their photos (default 2048)",
    2048,
    env=("IQA_SESSION_MEMORY_MB",),
    type=int,
)
SESSION_TTL = Option(
    "--session-ttl",
    "seconds after a session's last upload or scoring before it is dropped with its files (default 3600)",
    3600.0,
    env=("IQA_SESSION_TTL",),
    type=float,
)
CONCURRENCY = Option(
    "--concurrency",
    "jobs run at once (default 2; 64 more may wait in the queue)",
    2,
    env=("IQA_CONCURRENCY",),
    type=int,
)
APP_OPTIONS = (
    HOST,
    PORT,
    BACKBONE,
    PRETRAINED,
    WEIGHTS,
    GRMP_CHECKPOINT,
    GRMP_OFFICIAL,
    LAB_DATASET,
    DEVICE,
    TEST_BACKBONE,
    ALLOW_BACKBONE,
    MAX_PHOTOS,
    MAX_FILE_SIZE,
    MAX_PIXELS,
    MAX_SIDE,
    SESSION_MEMORY_MB,
    SESSION_TTL,
    CONCURRENCY,
)


@dataclass
class AppConfig:
    """The app's settings; each default is its option's (`APP_OPTIONS`)."""

    host: str = HOST.default
    port: int = PORT.default
    backbone: str = BACKBONE.default
    pretrained: str | None = PRETRAINED.default
    weights: str | None = None
    grmp_checkpoints: list[str] = field(default_factory=list)
    grmp_official: str | None = None  # an official GRMP-IQA file (Hub name or local path), the default model
    lab_dataset: str | None = None  # NAME:DIR, a labelled set on the server for the Prompt lab
    device: str | None = None
    allow_backbones: list[str] = field(default_factory=list)  # backbones uploaded checkpoints may use
    max_photos: int = MAX_PHOTOS.default
    max_file_size: str = MAX_FILE_SIZE.default
    max_pixels: int = MAX_PIXELS.default  # checked from the file header, before decoding
    max_side: int = MAX_SIDE.default  # photos are downsized to this as soon as they are uploaded
    session_memory_mb: int = SESSION_MEMORY_MB.default  # least recently used sessions lose their photos past it
    session_ttl: float = SESSION_TTL.default  # seconds without an upload or a scoring before a session is dropped
    max_grmp_models: int = 4  # GRMP models kept in memory besides the start-up ones (a paper-variant one holds a ViT)
    concurrency: int = CONCURRENCY.default
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "iqa-app")

    @property
    def is_test(self) -> bool:
        return is_test_backbone(self.backbone)


def parse_args(argv: Sequence[str] | None = None) -> AppConfig:
    """The settings from flags, else their environment variables (`--help` names them), else the defaults."""
    parser = argparse.ArgumentParser(
        description="Photo quality app: CLIP-IQA and GRMP-IQA. Serves on 127.0.0.1 (this machine only) unless "
        "--host, IQA_HOST or GRADIO_SERVER_NAME says otherwise (0.0.0.0: every network interface).",
        epilog="Each option's environment variables are in brackets (lists joined by the path separator); flags win.",
    )
    add_options(parser, APP_OPTIONS)
    args = parser.parse_args(argv)
    backbone = "test-tiny-rn" if args.test_backbone and not is_test_backbone(args.backbone) else args.backbone
    official = args.grmp_official or (None if args.test_backbone or is_test_backbone(backbone) else DEFAULT_FILE)
    return AppConfig(
        host=args.host,
        port=args.port,
        backbone=backbone,
        pretrained=args.pretrained,
        weights=args.weights,
        grmp_checkpoints=list(args.grmp_checkpoint),
        device=args.device,
        grmp_official=None if str(official).lower() == "none" else official,
        lab_dataset=args.lab_dataset,
        allow_backbones=list(args.allow_backbone),
        max_photos=args.max_photos,
        max_file_size=args.max_file_size,
        max_pixels=args.max_pixels,
        max_side=args.max_side,
        session_memory_mb=args.session_memory_mb,
        session_ttl=args.session_ttl,
        concurrency=args.concurrency,
    )
