"""Options declared once: flag, default, environment variables and help, for the command line and
the app alike, so that neither can drift from the other.

An option's environment variables (the first one set wins) replace its default; a flag given on
the command line wins over both. `--help` names the variables of each option.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iqa.methods import registry
from iqa.methods.clipiqa.method import CLIP_IQA_METHOD
from iqa.methods.prompts import DEFAULT_PRESET, PRESETS
from iqa.names import CLIP_IQA_PLUS, DEFAULT_BACKBONE, DEFAULT_MAX_SIDE, DEFAULT_PRETRAINED, GRMP_IQA, QUALICLIP

Parser = argparse.ArgumentParser | argparse._ArgumentGroup


def optional_tag(value: str) -> str | None:
    """A pretrained tag; "none" (or nothing) for random weights."""
    return None if value.lower() in ("", "none") else value


def env_flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def env_list(text: str) -> list[str]:
    """A list in one environment variable, joined by the path separator."""
    return [part for part in text.split(os.pathsep) if part]


@dataclass(frozen=True)
class Option:
    """One option: `flag`, its `default`, the environment variables that replace the default,
    how their text is read (`from_env`, else `type`, else as text), and the rest of argparse's
    keywords (`extra`: action, metavar, ...)."""

    flag: str
    help: str
    default: Any = None
    env: tuple[str, ...] = ()
    type: Callable[[str], Any] | None = None
    from_env: Callable[[str], Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def value(self) -> Any:
        """The default as the environment sets it."""
        for name in self.env:
            text = os.environ.get(name)
            if text:
                read = self.from_env or self.type
                return read(text) if read else text
        return self.default

    def add_to(self, parser: Parser) -> None:
        where = f" [{', '.join('$' + name for name in self.env)}]" if self.env else ""
        typed: dict[str, Any] = {"type": self.type} if self.type else {}
        parser.add_argument(self.flag, default=self.value(), help=self.help + where, **typed, **self.extra)


def add_options(parser: Parser, options: Iterable[Option]) -> None:
    for option in options:
        option.add_to(parser)


BACKBONE = Option(
    "--backbone",
    "open_clip model name, or test-tiny-rn / test-tiny-vit (meaningless scores)",
    DEFAULT_BACKBONE,
    env=("IQA_BACKBONE",),
)
PRETRAINED = Option(
    "--pretrained",
    "open_clip pretrained tag ('none': random weights, for benchmarks)",
    DEFAULT_PRETRAINED,
    env=("IQA_PRETRAINED",),
    type=optional_tag,
)
WEIGHTS = Option(
    "--weights",
    "local checkpoint file or folder for the backbone (instead of downloading)",
    env=("IQA_WEIGHTS",),
)
DEVICE = Option("--device", "cuda, mps or cpu (default: best available)", env=("IQA_DEVICE",))
DTYPE = Option("--dtype", "fp32, fp16 or bf16 (default: fp16 on GPU, fp32 on CPU)", env=("IQA_DTYPE",))
MAX_SIDE = Option(
    "--max-side",
    f"longest side photos are scored at (default {DEFAULT_MAX_SIDE}): RN50 feeds them at their own size up "
    "to it and downsizes larger ones (the output says so; the app does it on upload); 0 = never downsize, "
    "as the reference library (pyiqa) feeds them, at the cost of memory on big photos",
    DEFAULT_MAX_SIDE,
    env=("IQA_MAX_SIDE",),
    type=int,
)
BATCH_SIZE = Option("--batch-size", "photos encoded at once (default 16)", 16, env=("IQA_BATCH_SIZE",), type=int)

# Which backbone, where its weights come from, and how photos are fed to it.
BACKBONE_OPTIONS = (BACKBONE, PRETRAINED, WEIGHTS, DEVICE, DTYPE, MAX_SIDE, BATCH_SIZE)


def _method_option() -> Option:
    choices, default = ", ".join(registry.option_choices()), CLIP_IQA_METHOD.option
    return Option("--method", f"{choices}, or several separated by commas (default: {default})", default)


PAIRS = Option("--pairs", f"prompt pairs: a preset ({', '.join(PRESETS)}) or a JSON/CSV file", DEFAULT_PRESET)
TEMPERATURE = Option(
    "--temperature",
    "softmax temperature t (default: the checkpoint's logit scale; 1 = the seed's formula)",
    type=float,
)
CHECKPOINT = Option("--checkpoint", f"{GRMP_IQA} checkpoint (for --method grmp)")
CLIPIQA_PLUS_PROMPTS = Option(
    "--clipiqa-plus-prompts",
    f"{CLIP_IQA_PLUS}'s learned context, a local copy of pyiqa's CLIP-IQA+_learned_prompts-603f3273.pth "
    "(for --method clipiqa+; default: downloaded from the Hugging Face Hub once)",
    env=("IQA_CLIPIQA_PLUS_PROMPTS",),
    extra={"metavar": "PATH"},
)
QUALICLIP_WEIGHTS = Option(
    "--qualiclip-weights",
    f"{QUALICLIP}'s fine-tuned RN50, a local copy of pyiqa's QualiCLIP.pth "
    "(for --method qualiclip; default: downloaded from the Hugging Face Hub once)",
    env=("IQA_QUALICLIP_WEIGHTS",),
    extra={"metavar": "PATH"},
)


def method_options() -> tuple[Option, ...]:
    """--method (its choices from the registry, read when a parser is built), and the options the
    built-in methods read (`Method.arguments`)."""
    return (_method_option(), PAIRS, TEMPERATURE, CHECKPOINT, CLIPIQA_PLUS_PROMPTS, QUALICLIP_WEIGHTS)
