"""The app's settings: `AppConfig`, read from flags and environment variables by `parse_args`."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iqa.clip.test_backbones import is_test_backbone
from iqa.names import DEFAULT_BACKBONE, DEFAULT_FILE, DEFAULT_MAX_SIDE, DEFAULT_PRETRAINED

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MIB = 1 << 20


@dataclass
class AppConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    backbone: str = DEFAULT_BACKBONE
    pretrained: str | None = DEFAULT_PRETRAINED
    weights: str | None = None
    grmp_checkpoints: list[str] = field(default_factory=list)
    grmp_official: str | None = None  # an official GRMP-IQA file (Hub name or local path), the default model
    lab_dataset: str | None = None  # NAME:DIR, a labelled set on the server for the Prompt lab
    device: str | None = None
    allow_backbones: list[str] = field(default_factory=list)  # backbones uploaded checkpoints may use
    max_photos: int = 300
    max_file_size: str = "30mb"
    max_pixels: int = 60_000_000  # checked from the file header, before decoding
    max_side: int = DEFAULT_MAX_SIDE  # photos are downsized to this as soon as they are uploaded
    session_memory_mb: int = 2048  # all sessions' photos together; least recently used sessions lose theirs
    session_ttl: float = 3600.0  # seconds without an upload or a scoring before a session is dropped
    max_grmp_models: int = 4  # GRMP models kept in memory besides the start-up ones (a paper-variant one holds a ViT)
    concurrency: int = 2
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "iqa-app")

    @property
    def is_test(self) -> bool:
        return is_test_backbone(self.backbone)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: Sequence[str] | None = None) -> AppConfig:
    """Flags win over environment variables (IQA_HOST, IQA_PORT, IQA_BACKBONE, ...)."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description="Photo quality app: CLIP-IQA and GRMP-IQA. Serves on 127.0.0.1 (this machine only) unless "
        "--host, IQA_HOST or GRADIO_SERVER_NAME says otherwise (0.0.0.0: every network interface).",
        epilog="Environment: IQA_HOST (or GRADIO_SERVER_NAME), IQA_PORT (or GRADIO_SERVER_PORT), IQA_BACKBONE, "
        "IQA_PRETRAINED, IQA_WEIGHTS, IQA_GRMP_CHECKPOINT and IQA_ALLOW_BACKBONE (lists joined by the path "
        "separator), IQA_GRMP_OFFICIAL, IQA_CACHE_DIR (converted checkpoints), IQA_DEVICE, "
        "IQA_TEST_BACKBONE=1, IQA_MAX_PHOTOS, IQA_MAX_FILE_SIZE, IQA_MAX_PIXELS, IQA_MAX_SIDE, "
        "IQA_SESSION_MEMORY_MB, IQA_SESSION_TTL, IQA_CONCURRENCY; flags win.",
    )
    parser.add_argument(
        "--host",
        default=env("IQA_HOST", env("GRADIO_SERVER_NAME", "127.0.0.1")),
        help="address to listen on (default 127.0.0.1)",
    )
    parser.add_argument("--port", type=int, default=int(env("IQA_PORT", env("GRADIO_SERVER_PORT", "7860"))))
    parser.add_argument(
        "--backbone",
        default=env("IQA_BACKBONE", DEFAULT_BACKBONE),
        help="open_clip model name, or test-tiny-rn / test-tiny-vit",
    )
    parser.add_argument(
        "--pretrained",
        default=env("IQA_PRETRAINED", DEFAULT_PRETRAINED),
        help="open_clip pretrained tag ('none' for random weights)",
    )
    parser.add_argument("--weights", default=env("IQA_WEIGHTS"), help="local CLIP weights file or folder")
    parser.add_argument(
        "--grmp-checkpoint",
        action="append",
        default=_env_list("IQA_GRMP_CHECKPOINT"),
        help="GRMP-IQA checkpoint stem (repeatable)",
    )
    parser.add_argument(
        "--grmp-official",
        default=env("IQA_GRMP_OFFICIAL"),
        help=f"official GRMP-IQA file to convert (once, cached) and show by default: a file name in "
        f"the Hub repository zzhowe/GRMP-IQA or a local .pt path; 'none' for no default model "
        f"(default: {DEFAULT_FILE}; none with the test backbone)",
    )
    parser.add_argument(
        "--lab-dataset",
        default=env("IQA_LAB_DATASET"),
        metavar="NAME:DIR",
        help="a labelled set on the server for the Prompt lab, e.g. koniq10k:/data/koniq (csv: the labels file); "
        "its image features are read from (and written to) the disk feature cache in IQA_CACHE_DIR",
    )
    parser.add_argument("--device", default=env("IQA_DEVICE"), help="cuda, mps or cpu (default: best available)")
    parser.add_argument(
        "--test-backbone",
        action="store_true",
        default=_env_flag("IQA_TEST_BACKBONE"),
        help="use the tiny random test backbone: scores are meaningless (for tests/offline)",
    )
    parser.add_argument(
        "--allow-backbone",
        action="append",
        default=_env_list("IQA_ALLOW_BACKBONE"),
        metavar="NAME",
        help="a backbone uploaded GRMP checkpoints may use, loaded at start "
        "(repeatable); uploads may always use --backbone and those of --grmp-checkpoint, never others",
    )
    parser.add_argument(
        "--max-photos", type=int, default=int(env("IQA_MAX_PHOTOS", "300")), help="photos per session (default 300)"
    )
    parser.add_argument(
        "--max-file-size", default=env("IQA_MAX_FILE_SIZE", "30mb"), help="largest uploaded file (default 30mb)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=int(env("IQA_MAX_PIXELS", "60000000")),
        help="largest photo in pixels, checked before decoding (default 60000000)",
    )
    parser.add_argument(
        "--max-side",
        type=int,
        default=int(env("IQA_MAX_SIDE", str(DEFAULT_MAX_SIDE))),
        help=f"photos are downsized to this longest side on upload, and scored at it (default {DEFAULT_MAX_SIDE}; "
        "0: no downsizing, within --max-pixels and the session memory budget)",
    )
    parser.add_argument(
        "--session-memory-mb",
        type=int,
        default=int(env("IQA_SESSION_MEMORY_MB", "2048")),
        help="memory budget for all sessions' photos together, in MiB; beyond it the least "
        "recently used sessions lose their photos (default 2048)",
    )
    parser.add_argument(
        "--session-ttl",
        type=float,
        default=float(env("IQA_SESSION_TTL", "3600")),
        help="seconds after a session's last upload or scoring before it is dropped with its files (default 3600)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(env("IQA_CONCURRENCY", "2")),
        help="jobs run at once (default 2; 64 more may wait in the queue)",
    )
    args = parser.parse_args(argv)
    backbone = "test-tiny-rn" if args.test_backbone and not is_test_backbone(args.backbone) else args.backbone
    official = args.grmp_official or (None if args.test_backbone or is_test_backbone(backbone) else DEFAULT_FILE)
    return AppConfig(
        host=args.host,
        port=args.port,
        backbone=backbone,
        pretrained=None if str(args.pretrained).lower() == "none" else args.pretrained,
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


def _env_list(name: str) -> list[str]:
    return [p for p in os.environ.get(name, "").split(os.pathsep) if p]
