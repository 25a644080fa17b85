"""Gradio app: find low-quality photos with CLIP-IQA and GRMP-IQA.

`python app.py` serves it locally (see `--help`); on Hugging Face Spaces the README front matter
and requirements.txt are enough. The app only wires components to functions in `iqa/`; every
handler lives in `Handlers` so tests can call it directly. Models load once, at start or on
first use, and are shared by all sessions; each session keeps its own photos and results in a
`gr.State`.
"""

from __future__ import annotations

try:  # ZeroGPU on Hugging Face Spaces; imported before torch, which it patches. A plain call elsewhere.
    from spaces import GPU as gpu
except ImportError:

    def gpu(fn=None, **_):
        return fn if fn is not None else (lambda f: f)


import argparse
import base64
import ctypes
import functools
import inspect
import io
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image
from starlette.middleware import Middleware

from iqa import charts
from iqa.backbones import DEFAULT_BACKBONE, DEFAULT_PRETRAINED, BackboneUnavailable, CheckpointMismatch, load_backbone
from iqa.clipiqa import CLIPIQA
from iqa.compare import (
    CLIP_IQA,
    GRMP_IQA,
    METHODS,
    CachedScorer,
    ComparedPhoto,
    compare,
    ranked,
    rows_to_csv,
    split,
    unique_name,
    zip_photos,
)
from iqa.features import FeatureStore, ProgressFn
from iqa.grmp.checkpoint import (
    CheckpointError,
    check_checkpoint,
    checkpoint_paths,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from iqa.grmp.model import GRMPConfig, GRMPModel, GRMPScorer
from iqa.grmp.official import DEFAULT_DESCRIPTION, DEFAULT_FILE, converted_official
from iqa.grmp.train import adapt_seed
from iqa.photos import Photo, PhotoError, open_photo
from iqa.preprocess import DEFAULT_MAX_SIDE
from iqa.prompt_lab import LabelledPhotos, load_labelled_folder, load_labelled_uploads, rank_pairs
from iqa.prompts import DEFAULT_PRESET, PRESETS, PromptError, PromptPair, check_pairs, load_pairs, save_pairs
from iqa.tiny_backbones import TEST_BACKBONE_WARNING, TEST_BACKBONES, is_test_backbone

ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"
MIB = 1 << 20
EXAMPLE_PHOTOS = [
    f"{ref}{suffix}.jpg"
    for ref in ("astronaut", "chelsea", "coffee", "rocket")
    for suffix in ("", "_gaussian_blur_L5", "_gaussian_noise_L3")
]
REAL_BACKBONES = ("RN50-quickgelu", "ViT-B-16-quickgelu", "ViT-L-14-quickgelu")
TEMPERATURES = {"checkpoint's logit scale": None, "t = 1 (the seed's formula)": 1.0}
PROMPT_COLUMNS = ["on", "positive", "negative", "weight", "status"]
RANK_COLUMNS = ["rank", "photo", "name", CLIP_IQA, GRMP_IQA, "decision"]
LAB_COLUMNS = ["rank", "positive", "negative", "on", "SRCC", "PLCC"]
BUNDLED_SET = "bundled synthetic set (examples/)"
UPLOADED_SET = "uploaded photos + CSV"
NO_GRMP = ""


@dataclass
class AppConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    backbone: str = DEFAULT_BACKBONE
    pretrained: str | None = DEFAULT_PRETRAINED
    weights: str | None = None
    grmp_checkpoints: list[str] = field(default_factory=list)
    grmp_official: str | None = None  # an official GRMP-IQA file (Hub name or local path), the default model
    device: str | None = None
    allow_backbones: list[str] = field(default_factory=list)  # backbones uploaded checkpoints may use
    max_photos: int = 300
    max_file_size: str = "30mb"
    max_pixels: int = 60_000_000  # checked from the file header, before decoding
    max_side: int = DEFAULT_MAX_SIDE  # photos are downsized to this as soon as they are uploaded
    session_memory_mb: int = 2048  # all sessions' photos together; least recently used sessions lose theirs
    session_ttl: float = 3600.0  # seconds without an upload or a scoring before a session is dropped
    max_grmp_models: int = 4  # GRMP models kept in memory (a paper-variant model holds a whole ViT)
    concurrency: int = 2
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "iqa-app")

    @property
    def is_test(self) -> bool:
        return is_test_backbone(self.backbone)


class Models:
    """Backbones with their feature caches, and GRMP scorers, loaded once and shared by all sessions."""

    def __init__(self, config: AppConfig):
        self.config = config
        self._lock = threading.Lock()
        self._stores: dict[str, FeatureStore] = {}
        self._grmp: OrderedDict[str, CachedScorer] = OrderedDict()  # least recently used first
        self._trusted: set[str] = set()  # checkpoints the operator or the server made (not uploads)
        for name in dict.fromkeys([config.backbone, *config.allow_backbones]):
            self.store(name)
        self.startup_checkpoints: dict[str, str] = {}
        self.grmp_note = ""  # one line for the page: which GRMP-IQA model is the default, or why there is none
        if config.grmp_official:
            self._load_official(config.grmp_official)
        for path in config.grmp_checkpoints:
            self.trust(path)
            self.grmp(path)
            self.startup_checkpoints[Path(path).name] = str(path)
        # fixed at start: an upload never loads a backbone
        self.upload_backbones = tuple(
            dict.fromkeys([*self._stores, *(cached.scorer.model.config.backbone for cached in self._grmp.values())])
        )
        if not self.startup_checkpoints and not self.grmp_note:
            self.grmp_note = (
                "No GRMP-IQA model loaded, so its column is empty: upload a checkpoint below, adapt "
                "one on the Adapt tab, or start the app with --grmp-official FILE or "
                "--grmp-checkpoint PATH."
            )

    @property
    def default_checkpoint(self) -> str:
        """The GRMP-IQA checkpoint chosen when a page opens: the official model, else the first given."""
        return next(iter(self.startup_checkpoints.values()), NO_GRMP)

    def _load_official(self, source: str) -> None:
        """Convert (once, cached on disk) and load an official GRMP-IQA file; say in one line if it cannot be had."""
        try:
            stem = converted_official(source)
            self.trust(str(stem))
            scorer = self.grmp(str(stem))
        except (OSError, ValueError) as err:  # OfficialCheckpointError, CheckpointMismatch, a full disk ...
            reason = str(err).splitlines()[0]
            self.grmp_note = (
                f"No GRMP-IQA model, so its column is empty: the official checkpoint {source} could "
                f"not be loaded ({reason}). Upload a checkpoint below, adapt one on the Adapt tab, or "
                "start the app with --grmp-official PATH (a local copy) or --grmp-checkpoint PATH."
            )
            return
        about = f": {DEFAULT_DESCRIPTION}" if Path(source).name == DEFAULT_FILE else ""
        self.startup_checkpoints[f"official: {Path(source).stem}"] = str(stem)
        self.grmp_note = (
            f"GRMP-IQA: the official model {Path(source).name}{about}; on {scorer.scorer.model.description}."
        )

    @property
    def backbone_choices(self) -> list[str]:
        others = sorted(TEST_BACKBONES) if self.config.is_test else REAL_BACKBONES
        return list(dict.fromkeys([self.config.backbone, *others]))

    def store(self, name: str) -> FeatureStore:
        """The feature store of backbone `name`, loading the backbone on first use."""
        with self._lock:
            if name not in self._stores:
                start = name == self.config.backbone
                self._stores[name] = FeatureStore(
                    load_backbone(
                        name,
                        pretrained=self.config.pretrained if start else DEFAULT_PRETRAINED,
                        checkpoint=self.config.weights if start else None,
                        device=self.config.device,
                    )
                )
            return self._stores[name]

    def grmp(self, path: str) -> CachedScorer:
        """A GRMP scorer for a checkpoint (results cached per photo), sharing CLIP-IQA's features when it can.

        An untrusted checkpoint (an upload) is validated against its tensors before anything is
        built, and may only use a backbone the server started with.
        """
        path = _stem(path)
        with self._lock:
            if path in self._grmp:
                self._grmp.move_to_end(path)
                return self._grmp[path]
        config = read_config(path) if path in self._trusted else self.check_upload(path)
        if config.variant == "paper" and config.pretrained is None:  # carries its whole backbone
            return self.register(path, GRMPScorer(load_checkpoint(path, device=self.config.device)))
        store = self.store(config.backbone)
        model = load_checkpoint(path, backbone=store.backbone)
        return self.register(path, GRMPScorer(model, store))

    def check_upload(self, path: str) -> GRMPConfig:
        """The config of an uploaded checkpoint, refused (CheckpointError) unless its backbone is loaded
        already, since it was named at start."""
        config = check_checkpoint(path)
        if config.backbone not in self.upload_backbones:
            raise CheckpointError(
                f"{Path(path).name}.json needs backbone {config.backbone!r}; uploaded checkpoints may only use "
                f"the backbones this server was started with: {', '.join(self.upload_backbones)} (an operator "
                f"can allow more with --allow-backbone)"
            )
        return config

    def trust(self, path: str) -> None:
        """Mark a checkpoint as the operator's or the server's own (it may load its backbone)."""
        self._trusted.add(_stem(path))

    def register(self, path: str, scorer: GRMPScorer) -> CachedScorer:
        """Keep a scorer for the checkpoint at `path` (a stem), e.g. one just adapted."""
        self.trust(path)
        with self._lock:
            cached = self._grmp.setdefault(path, CachedScorer(scorer))
            while len(self._grmp) > self.config.max_grmp_models:
                self._grmp.popitem(last=False)  # loaded again from its files when next chosen
            return cached

    @property
    def description(self) -> str:
        return self.store(self.config.backbone).backbone.description


def _stem(path: str) -> str:
    return str(checkpoint_paths(path)[0].with_suffix(""))


@dataclass
class Session:
    """What one browser session holds: its photos, last results and its own checkpoints."""

    photos: list[Photo] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)  # files already added (an upload re-sends earlier ones)
    thumbnails: dict[str, str] = field(default_factory=dict)  # name -> small JPEG file
    icons: dict[str, str] = field(default_factory=dict)  # name -> tiny data URI
    rows: list[ComparedPhoto] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)
    folder: str = ""
    notice: str = ""  # why the server dropped this session's photos, told at its next request

    @property
    def nbytes(self) -> int:
        """Memory the session's photos take: their (bounded) pixels and the ranking table's icons."""
        return sum(p.image.width * p.image.height * 3 for p in self.photos) + sum(map(len, self.icons.values()))

    def drop_photos(self, notice: str = "") -> None:
        """Forget the photos and results (checkpoint choices stay); thumbnails go with them."""
        self.photos, self.rows, self.thumbnails, self.icons, self.sources = [], [], {}, {}, set()
        self.notice = notice
        if self.folder:
            shutil.rmtree(Path(self.folder) / "thumbnails", ignore_errors=True)

    def remove_files(self) -> None:
        """Delete the session's folder (thumbnails, downloads, checkpoints) when Gradio drops the session."""
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def end(self, notice: str = "") -> None:
        """Forget everything, files included: the session starts afresh if it comes back."""
        self.drop_photos(notice)
        self.checkpoints = {}
        self.remove_files()

    def directory(self, root: Path) -> Path:
        if not self.folder:
            self.folder = str(root / uuid.uuid4().hex)
        path = Path(self.folder)
        path.mkdir(parents=True, exist_ok=True)
        return path


class SessionBudget:
    """A server-wide cap on the memory sessions' photos take, and the expiry of idle sessions.

    Every handler that gets a session calls `use`; when all sessions together hold more than
    `limit` bytes, the least recently used other sessions lose their photos (they are told why at
    their next request), and sessions idle for longer than `ttl` seconds are ended, files included.
    A background thread sweeps for idle sessions even when no request comes: Gradio's own state
    expiry, which this backs up, keeps a closed tab's state for an hour and runs in a task that
    stops for good at its first error. Sessions are held by weak reference: a session Gradio drops
    is not kept alive here.
    """

    def __init__(self, limit: int, ttl: float):
        self.limit, self.ttl = limit, ttl
        self._lock = threading.Lock()
        self._sessions: OrderedDict[int, tuple[weakref.ref, float]] = OrderedDict()  # least recently used first
        sweeper = threading.Thread(target=self._sweep_forever, name="session-expiry", daemon=True)
        sweeper.start()

    def _sweep_forever(self) -> None:
        while True:
            time.sleep(min(max(self.ttl / 4, 0.5), 60))
            with self._lock:
                dropped = self._expire_idle()
            if dropped:
                release_memory()

    def use(self, session: Session) -> None:
        with self._lock:
            self._sessions[id(session)] = (weakref.ref(session), time.monotonic())
            self._sessions.move_to_end(id(session))
            dropped = self._expire_idle() + self._evict_beyond_limit(session)
        if dropped:
            release_memory()

    def forget(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(id(session), None)

    def room(self, session: Session) -> int:
        """Bytes `session` may still add: the whole budget, less what it holds (others give way)."""
        return self.limit - session.nbytes

    @property
    def total(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._live())

    def _live(self) -> list[Session]:
        return [s for s in (ref() for ref, _ in self._sessions.values()) if s is not None]

    def _expire_idle(self) -> int:
        """End the sessions idle for longer than `ttl` (files included); returns how many it ended."""
        now, dropped = time.monotonic(), 0
        for key, (ref, last) in list(self._sessions.items()):
            session = ref()
            if session is None or now - last > self.ttl:
                del self._sessions[key]
                if session is not None and (session.photos or session.folder):
                    session.end(
                        f"this session was idle for more than {self.ttl:g} s, so the server dropped its "
                        "photos and checkpoints; add them again"
                    )
                    dropped += 1
        return dropped

    def _evict_beyond_limit(self, keep: Session) -> int:
        """Drop the photos of the least recently used sessions but `keep` until the rest fit the limit."""
        total, dropped = sum(s.nbytes for s in self._live()), 0
        for key, (ref, _) in list(self._sessions.items()):
            session = ref()
            if total <= self.limit:
                break
            if session is None or session is keep:
                continue
            total -= session.nbytes
            session.drop_photos(
                "the server needed the memory for newer sessions, so it dropped this session's "
                "photos (least recently used first); add them again"
            )
            del self._sessions[key]
            dropped += 1
        return dropped


def return_freed_memory_promptly() -> None:
    """Make glibc serve allocations over 1 MiB from their own mappings, given back when freed.

    By default glibc raises that threshold (up to 32 MiB) after large blocks are freed, so the
    full-size decodes of an upload burst would stay in the heap long after their sessions ended.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, MIB)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def release_memory() -> None:
    """Give freed heap memory back to the operating system (glibc keeps it otherwise; elsewhere a no-op)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def bounded_copy(photo: Photo, max_side: int) -> Photo:
    """The photo downsized (bicubic, as the scorers resize) so that neither side exceeds `max_side`:
    a session keeps no more pixels than scoring uses. The original file stays for downloads."""
    width, height = photo.image.size
    if max(width, height) <= max_side:
        return photo
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return Photo(photo.name, photo.image.resize(size, Image.BICUBIC), photo.path)


def parse_table(table: pd.DataFrame | None, tokenizer=None) -> tuple[list[PromptPair | None], list[str]]:
    """The prompt table's rows as pairs (None where a row cannot be read) and each row's status:
    "ok", "off", or "invalid: <reason>"."""
    pairs, status = [], []
    for row in [] if table is None else table.fillna("").to_dict("records"):
        weight, on = row.get("weight"), row.get("on")
        try:
            weight = float(weight) if weight not in ("", None) else 1.0
        except (TypeError, ValueError):
            pairs.append(None)
            status.append(f"invalid: weight {weight!r} is not a number")
            continue
        enabled = on.strip().lower() in ("true", "1", "yes", "on") if isinstance(on, str) else bool(on)
        pairs.append(
            PromptPair(str(row.get("positive", "")).strip(), str(row.get("negative", "")).strip(), weight, enabled)
        )
        status.append("")
    reasons = iter(check_pairs([p for p in pairs if p is not None], tokenizer))
    for i, pair in enumerate(pairs):
        if pair is not None:
            reason = next(reasons)
            status[i] = f"invalid: {reason}" if reason else ("ok" if pair.enabled else "off")
    return pairs, status


def pairs_table(pairs: Sequence[PromptPair]) -> pd.DataFrame:
    return pd.DataFrame(
        [[p.enabled, p.positive, p.negative, p.weight, "ok" if p.enabled else "off"] for p in pairs],
        columns=PROMPT_COLUMNS,
    )


def thumbnail(photo: Photo, folder: Path, size: int = 256) -> tuple[str, str]:
    """A small JPEG of the photo in `folder` (for galleries) and a tiny data URI (for the ranking table)."""
    image = photo.image.copy()
    image.thumbnail((size, size))
    path = folder / f"{uuid.uuid4().hex}.jpg"
    image.save(path, quality=85)
    image.thumbnail((72, 72))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return str(path), "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _icon_html(data_uri: str) -> str:
    return f'<img src="{data_uri}" alt="" style="height:48px;border-radius:4px">' if data_uri else ""


def shown_as_message(handler: Callable) -> Callable:
    """Wrap an event handler so that every error reaches the user as its message (gr.Error), never as
    Gradio's generic "Error". Unexpected ones are also logged with their traceback for the operator."""

    def as_message(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if not isinstance(err, (ValueError, OSError)):
            traceback.print_exception(err, file=sys.stderr)
            return gr.Error(f"internal error ({type(err).__name__}: {err}); the server log has the details")
        return gr.Error(str(err) or type(err).__name__)

    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def generator(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except Exception as err:
                raise as_message(err) from err

        return generator

    @functools.wraps(handler)
    def function(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as err:
            raise as_message(err) from err

    return function


class Handlers:
    """Every event handler of the app; `models` is shared, `Session` is per user."""

    def __init__(self, models: Models):
        self.models = models
        self.config = models.config
        self.budget = SessionBudget(self.config.session_memory_mb * MIB, self.config.session_ttl)

    def _use(self, session: Session) -> None:
        """Every request of a session: keep the memory budget, and tell it if its photos were dropped."""
        self.budget.use(session)
        if session.notice:
            gr.Warning(session.notice)
            session.notice = ""

    def end_session(self, session: Session) -> None:
        """Gradio dropped the session (idle expiry, or its tab closed long ago): free its memory and files.

        Never raises: Gradio calls this from the task that expires every session, which an error
        would stop for good.
        """
        try:
            self.budget.forget(session)
            session.end()
            release_memory()
        except Exception:  # noqa: BLE001 - logged; see the docstring
            traceback.print_exc(file=sys.stderr)

    # --- photos -------------------------------------------------------------------------------

    @shown_as_message
    def add_photos(self, files: Sequence[str] | None, session: Session):
        """Open uploaded files into the session, each downsized to the scorers' largest side at once;
        bad ones are reported and skipped."""
        self._use(session)
        messages = []
        taken = {p.name for p in session.photos}
        thumbs = session.directory(self.config.work_dir) / "thumbnails"
        thumbs.mkdir(parents=True, exist_ok=True)
        for file in [f for f in files or [] if str(f) not in session.sources]:
            full = self._photos_full(session)
            if full:
                messages.append(full)
                break
            try:
                photo = bounded_copy(
                    open_photo(file, name=unique_name(Path(file).name, taken), max_pixels=self.config.max_pixels),
                    self.config.max_side,
                )
            except PhotoError as err:
                messages.append(str(err))
                continue
            taken.add(photo.name)
            self.budget.use(session)  # a long upload is not idle, and others give way as it grows
            session.sources.add(str(file))
            session.photos.append(photo)
            session.thumbnails[photo.name], session.icons[photo.name] = thumbnail(photo, thumbs)
        self.budget.use(session)
        for message in messages:
            gr.Warning(message)
        return session, self.gallery(session), self._photo_summary(session, messages)

    def _photos_full(self, session: Session) -> str:
        """Why the session can take no more photos, or "" while it can."""
        if len(session.photos) >= self.config.max_photos:
            return f"only {self.config.max_photos} photos per session; the rest were not added"
        largest = self.config.max_side**2 * 3
        if self.budget.room(session) < largest:
            return (
                f"this session holds {session.nbytes / MIB:.0f} MiB of photos, the server's limit for all "
                f"sessions ({self.config.session_memory_mb} MiB); the rest were not added"
            )
        return ""

    def add_examples(self, session: Session):
        return self.add_photos([str(EXAMPLES / name) for name in EXAMPLE_PHOTOS], session)

    @shown_as_message
    def clear_photos(self, session: Session):
        self._use(session)
        session.drop_photos()
        return session, [], "No photos yet."

    @staticmethod
    def gallery(session: Session) -> list[tuple[str, str]]:
        return [(session.thumbnails[p.name], p.name) for p in session.photos]

    @staticmethod
    def _photo_summary(session: Session, problems: list[str]) -> str:
        text = f"{len(session.photos)} photo(s) ready."
        if problems:
            text += "\n\nNot added:\n" + "\n".join(f"- {m}" for m in problems)
        return text

    # --- prompt table ------------------------------------------------------------------------

    @shown_as_message
    def load_preset(self, name: str) -> pd.DataFrame:
        return pairs_table(PRESETS[name])

    @shown_as_message
    def add_row(self, table: pd.DataFrame) -> pd.DataFrame:
        row = pd.DataFrame([[True, "", "", 1.0, "new: fill in both prompts"]], columns=PROMPT_COLUMNS)
        return pd.concat([table, row], ignore_index=True)

    @shown_as_message
    def delete_row(self, table: pd.DataFrame, row: float | None) -> pd.DataFrame:
        index = self._row_index(table, row)
        return table.drop(index=table.index[index]).reset_index(drop=True)

    def move_row(self, table: pd.DataFrame, row: float | None, step: int):
        """Move row number `row` (1-based) up (step -1) or down (+1); returns the table and new number."""
        index = self._row_index(table, row)
        target = min(max(index + step, 0), len(table) - 1)
        order = list(range(len(table)))
        order.insert(target, order.pop(index))
        return table.iloc[order].reset_index(drop=True), target + 1

    @shown_as_message
    def row_up(self, table: pd.DataFrame, row: float | None):
        return self.move_row(table, row, -1)

    @shown_as_message
    def row_down(self, table: pd.DataFrame, row: float | None):
        return self.move_row(table, row, 1)

    @staticmethod
    def _row_index(table: pd.DataFrame, row: float | None) -> int:
        if row is None or not 1 <= int(row) <= len(table):
            raise gr.Error(f"pick a row number between 1 and {len(table)} (click a row of the table)")
        return int(row) - 1

    @staticmethod
    @shown_as_message
    def select_row(event: gr.SelectData) -> int:
        return event.index[0] + 1

    @shown_as_message
    def save_prompts(self, table: pd.DataFrame, session: Session):
        """Write the table as a JSON prompt set and show it for download."""
        pairs, status = parse_table(table)
        usable = [p for p in pairs if p is not None]
        if len(usable) < len(pairs):
            gr.Warning(f"{len(pairs) - len(usable)} row(s) with an unreadable weight were not saved")
        path = save_pairs(usable, session.directory(self.config.work_dir) / "prompts.json")
        return gr.update(value=str(path), visible=True)

    @shown_as_message
    def load_prompts(self, file: str | None) -> pd.DataFrame:
        if not file:
            raise gr.Error("choose a prompt set file (.json or .csv) first")
        try:
            pairs = load_pairs(file)
        except PromptError as err:
            raise gr.Error(str(err)) from None
        except UnicodeDecodeError:
            raise gr.Error(f"{Path(file).name} is not a text file; a prompt set is JSON or CSV") from None
        return self.check_table(pairs_table(pairs))

    def check_table(self, table: pd.DataFrame) -> pd.DataFrame:
        """The table with its status column filled in: the reason for every invalid row."""
        tokenizer = self.models.store(self.config.backbone).backbone.tokenizer
        return table.assign(status=parse_table(table, tokenizer)[1])

    # --- scoring -----------------------------------------------------------------------------

    @shown_as_message
    def score(
        self,
        session: Session,
        table: pd.DataFrame,
        backbone: str,
        temperature: str,
        checkpoint: str,
        threshold: float,
        method: str,
        progress=gr.Progress(),
    ):
        """Score the session's photos; prompt edits reuse cached image features."""
        self._use(session)
        store = self._store_or_default(backbone)
        pairs, status = parse_table(table, store.backbone.tokenizer)
        table = table.assign(status=status)
        valid = [p for p, s in zip(pairs, status) if s == "ok"]
        if not session.photos:
            gr.Warning("add photos first (upload them, or click 'Add example photos')")
            return (session, table, *self._empty_results(), "No photos to score.")
        if not valid:
            gr.Warning("no usable prompt pair: every row is off or invalid (see the status column)")
            return (session, table, *self._empty_results(), "No usable prompt pair.")
        grmp = self._grmp_or_none(checkpoint, session)
        start = time.perf_counter()
        clip = CLIPIQA(store, valid, TEMPERATURES[temperature])
        session.rows, added = run_compare(
            session.photos, clip, grmp, lambda done, total: progress((done, total), desc="encoding photos")
        )
        store.merge(added)
        elapsed = time.perf_counter() - start
        status = (
            f"Scored {len(session.photos)} photo(s) with {len(valid)} pair(s) in {elapsed:.2f} s on "
            f"{store.backbone.description}; {len(added[0])} image(s) encoded, "
            f"the rest from the feature cache."
        )
        if grmp is not None:
            status += f" GRMP-IQA: {grmp.label} on {grmp.scorer.model.description}."
        return (session, table, *self._results(session, threshold, self._available(session, method)), status)

    def _store_or_default(self, backbone: str) -> FeatureStore:
        try:
            return self.models.store(backbone)
        except (BackboneUnavailable, CheckpointMismatch) as err:
            gr.Warning(f"{err} Scoring with {self.config.backbone} instead.")
            return self.models.store(self.config.backbone)

    def _grmp_or_none(self, checkpoint: str | None, session: Session) -> CachedScorer | None:
        if not checkpoint:
            return None
        if checkpoint not in self.checkpoint_paths(session):  # the API lets a client send any text
            gr.Warning(f"GRMP-IQA checkpoint not used: {checkpoint!r} is not one of this session's checkpoints")
            return None
        try:
            return self.models.grmp(checkpoint)
        except (BackboneUnavailable, ValueError, OSError) as err:  # ValueError: CheckpointError, CheckpointMismatch
            gr.Warning(f"GRMP-IQA checkpoint not used: {err}")
            return None

    def _results(self, session: Session, threshold: float, method: str):
        names = [row.name for row in ranked(session.rows, method)]
        table, csv_path = self.rerank(session, threshold, method)
        return (
            table,
            gr.update(choices=names, value=names[0]),
            self.breakdown(session, names[0]),
            charts.score_scatter(session.rows),
            csv_path,
        )

    @shown_as_message
    def rerank(self, session: Session, threshold: float, method: str):
        """The ranking table and its CSV download, with keep/reject at `threshold` by `method`."""
        if not session.rows:
            return pd.DataFrame(columns=RANK_COLUMNS), None
        method = self._available(session, method)
        kept_names = {row.name for row in split(session.rows, threshold, method)[0]}
        table = pd.DataFrame(
            [
                [
                    i,
                    _icon_html(session.icons.get(row.name, "")),
                    row.name,
                    round(row.clip.score, 4),
                    round(row.grmp.score, 4) if row.grmp else None,
                    "keep" if row.name in kept_names else "reject",
                ]
                for i, row in enumerate(ranked(session.rows, method), 1)
            ],
            columns=RANK_COLUMNS,
        )
        csv_path = session.directory(self.config.work_dir) / "iqa-results.csv"
        csv_path.write_text(rows_to_csv(session.rows, threshold, method), encoding="utf-8")
        return table, str(csv_path)

    @staticmethod
    def _available(session: Session, method: str) -> str:
        """`method`, or CLIP-IQA when GRMP-IQA was asked for but not scored."""
        if method == GRMP_IQA and (not session.rows or session.rows[0].grmp is None):
            return CLIP_IQA
        return method

    @staticmethod
    def _empty_results():
        return (pd.DataFrame(columns=RANK_COLUMNS), gr.update(choices=[], value=None), None, None, None)

    @shown_as_message
    def pick_ranked(self, session: Session, event: gr.SelectData):
        """Clicking a row of the ranking shows that photo's breakdown."""
        name = event.row_value[RANK_COLUMNS.index("name")]
        return gr.update(value=name), self.breakdown(session, name)

    @staticmethod
    @shown_as_message
    def breakdown(session: Session, name: str | None):
        row = next((r for r in session.rows if r.name == name), None)
        return charts.pair_breakdown(row.clip, row.grmp) if row is not None else None

    @shown_as_message
    def upload_checkpoint(self, files: Sequence[str] | None, session: Session):
        """Add an uploaded GRMP checkpoint (its .json and .safetensors) to this session's choices.

        The upload is checked (config, sizes against the tensors, an allowed backbone) before any
        model is built from it; a refused one leaves no files behind.
        """
        self._use(session)
        files = list(files or [])
        by_suffix = {Path(f).suffix.lower(): Path(f) for f in files}
        if len(files) != 2 or set(by_suffix) != {".json", ".safetensors"}:
            raise gr.Error("upload a GRMP-IQA checkpoint as its two files: <name>.json and <name>.safetensors")
        stem = by_suffix[".json"].stem
        folder = session.directory(self.config.work_dir) / "checkpoints" / uuid.uuid4().hex[:8]
        folder.mkdir(parents=True)
        for suffix, path in by_suffix.items():
            shutil.copyfile(path, folder / f"{stem}{suffix}")
        try:
            scorer = self.models.grmp(str(folder / stem))
        except (BackboneUnavailable, ValueError) as err:  # ValueError: CheckpointError, CheckpointMismatch
            shutil.rmtree(folder, ignore_errors=True)
            raise gr.Error(f"{by_suffix['.json'].name}: {err}") from None
        session.checkpoints[f"{stem} (uploaded)"] = str(folder / stem)
        gr.Info(f"{stem}: {scorer.label} on {scorer.scorer.model.description}")
        return session, self.checkpoint_choices(session, str(folder / stem))

    def checkpoint_paths(self, session: Session) -> set[str]:
        """The checkpoints this session may score with: the server's and its own."""
        return {*self.models.startup_checkpoints.values(), *session.checkpoints.values()}

    def checkpoint_choices(self, session: Session, value: str | None = None):
        choices = [("none", NO_GRMP), *self.models.startup_checkpoints.items(), *session.checkpoints.items()]
        return gr.update(choices=choices, value=value if value is not None else NO_GRMP)

    # --- filter ------------------------------------------------------------------------------

    @shown_as_message
    def filter(self, session: Session, threshold: float, method: str):
        """Kept and rejected galleries and the decision list, by `method`'s score against `threshold`."""
        self._use(session)
        if not session.rows:
            return [], [], None, "Score photos on the first tab first."
        method = self._filter_method(session, method)
        kept, rejected = split(session.rows, threshold, method)
        list_path = session.directory(self.config.work_dir) / "iqa-filter.csv"
        list_path.write_text(rows_to_csv(session.rows, threshold, method), encoding="utf-8")

        def gallery(rows):
            return [(session.thumbnails[r.name], f"{r.result(method).score:.3f} {r.name}") for r in rows]

        summary = f"{len(kept)} kept, {len(rejected)} rejected at {method} >= {threshold:.3f}."
        return gallery(kept), gallery(rejected), str(list_path), summary

    @shown_as_message
    def zip_kept(self, session: Session, threshold: float, method: str) -> str:
        """A zip of the kept photos (their original files where there are any)."""
        self._use(session)
        if not session.rows:
            raise gr.Error("score photos on the first tab first")
        kept, _ = split(session.rows, threshold, self._filter_method(session, method))
        by_name = {p.name: p for p in session.photos}
        path = session.directory(self.config.work_dir) / "kept-photos.zip"
        return str(zip_photos([by_name[r.name] for r in kept if r.name in by_name], path))

    def _filter_method(self, session: Session, method: str) -> str:
        if self._available(session, method) != method:
            gr.Warning("no GRMP-IQA scores (no checkpoint chosen); filtering by CLIP-IQA")
        return self._available(session, method)

    # --- prompt lab --------------------------------------------------------------------------

    def labelled_set(self, source: str, csv_file: str | None, files: Sequence[str] | None) -> LabelledPhotos:
        if source == BUNDLED_SET:
            return load_labelled_folder(EXAMPLES / "labels.csv")
        if not csv_file or not files:
            raise gr.Error("upload the photos and a CSV with their scores (columns: path or name, score)")
        try:
            return load_labelled_uploads(csv_file, files)
        except ValueError as err:
            raise gr.Error(str(err)) from None

    @shown_as_message
    def run_lab(
        self,
        source: str,
        csv_file: str | None,
        files: Sequence[str] | None,
        table: pd.DataFrame,
        backbone: str,
        temperature: str,
    ):
        """Rank every valid prompt pair of the table by SRCC/PLCC on a labelled set."""
        labelled = self.labelled_set(source, csv_file, files)
        store = self._store_or_default(backbone)
        pairs = [p for p in parse_table(table)[0] if p is not None]
        try:
            report = rank_pairs(store, pairs, labelled, TEMPERATURES[temperature])
        except ValueError as err:
            raise gr.Error(str(err)) from None
        rows = [
            [i, r.pair.positive, r.pair.negative, r.pair.enabled, round(r.srcc, 4), round(r.plcc, 4)]
            for i, r in enumerate(report.ranks, 1)
        ]
        summary = (
            f"**Mean of the chosen (enabled) pairs:** SRCC {report.chosen_srcc:.3f}, PLCC "
            f"{report.chosen_plcc:.3f} on {report.n} photos (t = {report.temperature:g}, "
            f"{store.backbone.description})."
        )
        notes = [f"left out: {m}" for m in report.invalid] + [f"skipped: {m}" for m in labelled.skipped]
        if notes:
            summary += "\n\n" + "\n".join(f"- {n}" for n in notes)
        return pd.DataFrame(rows, columns=LAB_COLUMNS), charts.pair_ranking(report), summary

    # --- adapt -------------------------------------------------------------------------------

    @shown_as_message
    def adapt(
        self,
        source: str,
        csv_file: str | None,
        files: Sequence[str] | None,
        lam: float,
        steps: float,
        backbone: str,
        session: Session,
        progress=gr.Progress(),
    ):
        """Few-shot adaptation of the seed variant, streaming the loss / validation-SRCC chart.

        Training runs in a worker thread; this generator redraws the chart from its history until
        it ends, then saves the checkpoint and offers it on the first tab and for download.
        """
        self._use(session)
        labelled = self.labelled_set(source, csv_file, files)
        store = self._store_or_default(backbone)
        steps, history = int(steps), []
        with ThreadPoolExecutor(max_workers=1) as pool:
            job = pool.submit(run_adapt, store, labelled.images(), steps, float(lam), history.append)
            while not job.done():
                time.sleep(0.5)
                self.budget.use(session)  # a long adaptation is not idle
                progress((len(history), steps), desc="adapting")
                yield (
                    charts.training_curves(list(history)),
                    f"Step {len(history)} of {steps}…",
                    session,
                    gr.update(),
                    None,
                )
            try:
                model = job.result()
            except ValueError as err:
                raise gr.Error(f"adaptation failed: {err}") from None
        folder = session.directory(self.config.work_dir) / "checkpoints"
        stem = folder / f"seed-adapted-{len(session.checkpoints) + 1}"
        tensors, config = save_checkpoint(model, stem)
        label = f"{stem.name} (adapted, λ={lam:g}, {steps} steps)"
        session.checkpoints[label] = str(stem)
        self.models.register(str(stem), GRMPScorer(model, store))
        record = model.config.training
        status = (
            f"Done: {len(labelled.images())} labelled photos on {store.backbone.description}; best step "
            f"{record['best_step']}, validation SRCC {record['val_srcc']:.3f}, PLCC {record['val_plcc']:.3f}. "
            f"'{label}' is now selectable on the first tab."
        )
        yield (
            charts.training_curves(list(history)),
            status,
            session,
            self.checkpoint_choices(session, str(stem)),
            [str(tensors), str(config)],
        )


@gpu(duration=300)
def run_adapt(store: FeatureStore, images: list, steps: int, lam: float, record) -> GRMPModel:
    """The training part of adaptation, on the GPU under ZeroGPU; `record` gets one dict per step."""

    def on_step(step: int, loss: float, val_srcc: float | None) -> None:
        record({"step": step, "loss": loss, "val_srcc": val_srcc})

    model, _ = adapt_seed(store, images, steps=steps, lam=lam, on_step=on_step)
    return model


@gpu
def run_compare(
    photos: Sequence[Photo], clip: CLIPIQA, grmp: CachedScorer | None, progress: ProgressFn | None = None
) -> tuple[list[ComparedPhoto], tuple[dict, dict]]:
    """The compute-heavy part of scoring, on the GPU under ZeroGPU.

    Also returns the features it added to CLIP-IQA's cache: under ZeroGPU this runs in a forked
    worker, and the caller merges them so that a prompt edit still re-scores without re-encoding.
    """
    mark = clip.store.keys()
    rows = compare(photos, [clip] if grmp is None else [clip, grmp], progress)
    return rows, clip.store.added_since(mark)


ABOUT = r"""
### CLIP-IQA
Zero-shot quality from antonym prompt pairs (Wang, Chan, Loy, *Exploring CLIP for Assessing the Look
and Feel of Images*, AAAI 2023, [arXiv 2207.12396](https://arxiv.org/abs/2207.12396)).
A frozen CLIP compares the photo with a positive and a negative prompt:

$$p = \frac{e^{t\,s_+}}{e^{t\,s_+} + e^{t\,s_-}}, \qquad s_\pm = \cos(f_{image}, f_{prompt_\pm})$$

and the score is the weighted mean of *p* over the enabled pairs, as in the reference library (pyiqa).
Settings that matter: the **temperature** *t* (CLIP's own logit scale, 100 for OpenAI weights; the seed
document's *t* = 1 keeps every *p* near 0.5), the **prompt pairs**, and the **backbone**: the paper uses
OpenAI RN50 at the photo's own resolution (attention-pool positional embedding off), with CLIP's mean/std.

### GRMP-IQA
Few-shot quality assessment with learned prompts and gradient regularization (Li et al.,
[arXiv 2409.05381](https://arxiv.org/abs/2409.05381); ICCV 2025 as *Few-Shot Image Quality Assessment via
Adaptation of Vision-Language Models*). Learned context vectors form "X X X X high quality." /
"X X X X low quality."; the score is p(high quality) under CLIP's logit scale. Meta-prompt pre-training over
distortion tasks, then fine-tuning on a few labelled photos (soft-label cross-entropy), where the quality
gradient $g_q$ loses its component along the semantic (scene) gradient $g_s$ when the two agree:

$$g = g_q - \lambda \frac{\langle g_q, g_s\rangle}{\lVert g_s\rVert^2}\, g_s
\quad \text{if } \langle g_q, g_s\rangle > 0$$

with λ = 5 in the paper. The **seed** variant (this project's source document) keeps both encoders frozen
and trains the prompt plus a small MLP on the two cosines with MSE + λ·mean((Δcos − Δy)²) over photo pairs;
its image features are the cached CLIP-IQA ones, so it adapts within a minute on a CPU (third tab). Settings that
matter: the checkpoint (and the backbone it was trained on), λ and the number of steps.

**The default GRMP-IQA model** is the official release's `clive_50_prompt_lda_5.0.pt`
([zzhowe/GRMP-IQA](https://huggingface.co/zzhowe/GRMP-IQA)): the paper variant (ViT-B/16, 100 visual prompt
tokens per block, the last 4 blocks of both towers fine-tuned) trained on 50 labelled LIVE Challenge photos with
λ = 5 after meta-prompt pre-training on TID2013 and KADID-10k distortions. It is converted once and fed as the
official code feeds it (squashed to 244×244 with OpenCV's bicubic, centre 224 crop, ImageNet statistics); on
weights made for the test, its scores match the official code's to within 1e-6.
"""


def _banner(models: Models) -> None:
    if models.config.is_test:
        gr.Markdown(f"⚠️ **{TEST_BACKBONE_WARNING}**", elem_classes=["test-warning"])


def build_demo(config: AppConfig, models: Models | None = None) -> gr.Blocks:
    """The whole app; models are loaded here unless given."""
    models = models or Models(config)
    h = Handlers(models)
    with gr.Blocks(title="Photo quality: CLIP-IQA and GRMP-IQA", delete_cache=(3600, 86400)) as demo:
        session = gr.State(Session(), time_to_live=config.session_ttl, delete_callback=h.end_session)
        gr.Markdown("# Photo quality with CLIP: CLIP-IQA and GRMP-IQA")
        with gr.Tabs():
            with gr.Tab("Score and compare", id="score"):
                _banner(models)
                with gr.Row():
                    with gr.Column(scale=2):
                        files = gr.File(
                            label="Photos (drop many at once)",
                            file_count="multiple",
                            height=150,
                            elem_id="photo-upload",
                        )
                        with gr.Row():
                            examples = gr.Button("Add example photos", size="sm", elem_id="add-examples")
                            clear = gr.Button("Clear photos", size="sm")
                        photo_info = gr.Markdown("No photos yet.", elem_id="photo-info")
                        gallery = gr.Gallery(label="Photos to score", columns=5, height=230, show_label=True)
                    with gr.Column(scale=3):
                        prompts = gr.Dataframe(
                            pairs_table(PRESETS[DEFAULT_PRESET]),
                            label="Prompt pairs (edit any cell; the status column says why a row is not used)",
                            datatype=["bool", "str", "str", "number", "str"],
                            interactive=True,
                            static_columns=[4],
                            elem_id="prompt-table",
                            wrap=True,
                            column_widths=["9%", "31%", "31%", "11%", "18%"],
                        )
                        with gr.Row():
                            preset = gr.Dropdown(
                                list(PRESETS), value=DEFAULT_PRESET, label="Load preset", scale=3, min_width=120
                            )
                            row_number = gr.Number(
                                label="Row #", value=1, precision=0, minimum=1, scale=2, min_width=90
                            )
                            add = gr.Button("Add row", size="sm", scale=1, min_width=70)
                            up = gr.Button("Up", size="sm", scale=1, min_width=50)
                            down = gr.Button("Down", size="sm", scale=1, min_width=50)
                            delete = gr.Button("Delete", size="sm", scale=1, min_width=60, variant="stop")
                        with gr.Row():
                            prompt_file = gr.UploadButton(
                                "Load prompt set (.json/.csv)", file_types=[".json", ".csv"], size="sm"
                            )
                            save = gr.Button("Save prompt set as JSON", size="sm")
                        saved_prompts = gr.File(label="Saved prompt set", interactive=False, visible=False)
                with gr.Accordion("Settings", open=True):
                    with gr.Row():
                        backbone = gr.Dropdown(
                            models.backbone_choices, value=config.backbone, label="CLIP-IQA backbone"
                        )
                        temperature = gr.Radio(
                            list(TEMPERATURES), value=next(iter(TEMPERATURES)), label="Temperature t"
                        )
                        checkpoint = gr.Dropdown(
                            [("none", NO_GRMP), *models.startup_checkpoints.items()],
                            value=models.default_checkpoint,
                            label="GRMP-IQA checkpoint",
                        )
                        upload_ckpt = gr.UploadButton(
                            "Upload GRMP-IQA checkpoint (.json + .safetensors)",
                            file_count="multiple",
                            file_types=[".json", ".safetensors"],
                            size="sm",
                            min_width=160,
                        )
                gr.Markdown(models.grmp_note, elem_id="grmp-note")
                score = gr.Button("Score photos", variant="primary", elem_id="score-button")
                status = gr.Markdown(elem_id="score-status")
                ranking = gr.Dataframe(
                    headers=RANK_COLUMNS,
                    label="Ranking (best first; keep/reject at the Filter tab's threshold and method)",
                    datatype=["number", "html", "str", "number", "number", "str"],
                    interactive=False,
                    elem_id="ranking",
                    max_height=420,
                    column_widths=["7%", "12%", "39%", "14%", "14%", "14%"],
                )
                with gr.Row():
                    with gr.Column():
                        photo_pick = gr.Dropdown([], label="Breakdown for photo (or click a ranking row)")
                        breakdown = gr.Plot(label="Per-pair softmax breakdown", elem_id="breakdown")
                    scatter = gr.Plot(label="CLIP-IQA against GRMP-IQA", elem_id="scatter")
                results_csv = gr.File(label="Download results (CSV)", interactive=False, height=60)
            with gr.Tab("Prompt lab", id="lab"):
                _banner(models)
                gr.Markdown("Rank every pair of the prompt table (first tab) against quality labels.")
                with gr.Row():
                    lab_source = gr.Radio([BUNDLED_SET, UPLOADED_SET], value=BUNDLED_SET, label="Labelled set")
                    lab_files = gr.File(label="Photos", file_count="multiple")
                    lab_csv = gr.File(label="Scores CSV (path or name, score)", file_types=[".csv"])
                lab_run = gr.Button("Rank prompt pairs", variant="primary")
                lab_summary = gr.Markdown()
                lab_table = gr.Dataframe(headers=LAB_COLUMNS, interactive=False, label="Pairs, best SRCC first")
                lab_chart = gr.Plot(label="SRCC / PLCC per pair")
            with gr.Tab("Adapt GRMP-IQA", id="adapt"):
                _banner(models)
                build_adapt_tab(h, session, checkpoint, backbone)
            with gr.Tab("Filter", id="filter"):
                _banner(models)
                with gr.Row():
                    threshold = gr.Slider(0, 1, value=0.5, step=0.005, label="Threshold (keep when score >= it)")
                    method = gr.Radio(list(METHODS), value=CLIP_IQA, label="Filter by")
                filter_summary = gr.Markdown("Score photos on the first tab first.")
                with gr.Row():
                    kept = gr.Gallery(label="Kept", columns=5, height=300)
                    rejected = gr.Gallery(label="Rejected", columns=5, height=300)
                with gr.Row():
                    filter_list = gr.File(label="Download the list (CSV)", interactive=False)
                    with gr.Column():
                        make_zip = gr.Button("Zip the kept photos", size="sm")
                        kept_zip = gr.File(label="Download the kept photos (zip)", interactive=False)
            with gr.Tab("About", id="about"):
                _banner(models)
                gr.Markdown(
                    ABOUT,
                    latex_delimiters=[
                        {"left": "$$", "right": "$$", "display": True},
                        {"left": "$", "right": "$", "display": False},
                    ],
                )
                gr.Markdown(
                    f"**Loaded:** CLIP-IQA backbone {models.description}. GRMP-IQA checkpoints at "
                    f"start: {', '.join(models.startup_checkpoints) or 'none'}. {models.grmp_note}",
                    elem_id="loaded",
                )

        score_inputs = [session, prompts, backbone, temperature, checkpoint, threshold, method]
        score_outputs = [session, prompts, ranking, photo_pick, breakdown, scatter, results_csv, status]
        filter_outputs = [kept, rejected, filter_list, filter_summary]
        photo_outputs = [session, gallery, photo_info]

        def then_score(event):
            return event.then(h.score, score_inputs, score_outputs, api_visibility="private").then(
                h.filter, [session, threshold, method], filter_outputs, api_visibility="private"
            )

        for event, name in ((threshold.input, "filter"), (method.input, "filter_method")):
            event(
                h.filter, [session, threshold, method], filter_outputs, api_name=name, trigger_mode="always_last"
            ).then(h.rerank, [session, threshold, method], [ranking, results_csv], api_visibility="private")
        make_zip.click(h.zip_kept, [session, threshold, method], kept_zip, api_name="zip_kept")
        score.click(h.score, score_inputs, score_outputs, api_name="score").then(
            h.filter, [session, threshold, method], filter_outputs, api_visibility="private"
        )
        then_score(files.upload(h.add_photos, [files, session], photo_outputs, api_name="add_photos"))
        then_score(examples.click(h.add_examples, [session], photo_outputs, api_name="add_examples"))
        clear.click(h.clear_photos, [session], photo_outputs, api_name="clear_photos")
        files.clear(h.clear_photos, [session], photo_outputs, api_visibility="private")
        then_score(preset.input(h.load_preset, preset, prompts, api_name="load_preset"))
        then_score(prompt_file.upload(h.load_prompts, prompt_file, prompts, api_name="load_prompts"))
        prompts.input(h.score, score_inputs, score_outputs, api_name="rescore", trigger_mode="always_last")
        for setting in (backbone, temperature, checkpoint):
            setting.input(h.score, score_inputs, score_outputs, api_visibility="private")
        prompts.select(h.select_row, None, row_number, api_visibility="private")
        add.click(h.add_row, prompts, prompts, api_name="add_row")
        delete.click(h.delete_row, [prompts, row_number], prompts, api_name="delete_row")
        up.click(h.row_up, [prompts, row_number], [prompts, row_number], api_name="row_up")
        down.click(h.row_down, [prompts, row_number], [prompts, row_number], api_name="row_down")
        save.click(h.save_prompts, [prompts, session], saved_prompts, api_name="save_prompts")
        upload_ckpt.upload(
            h.upload_checkpoint, [upload_ckpt, session], [session, checkpoint], api_name="upload_checkpoint"
        )
        photo_pick.input(h.breakdown, [session, photo_pick], breakdown, api_name="breakdown")
        ranking.select(h.pick_ranked, [session], [photo_pick, breakdown], api_visibility="private")
        lab_run.click(
            h.run_lab,
            [lab_source, lab_csv, lab_files, prompts, backbone, temperature],
            [lab_table, lab_chart, lab_summary],
            api_name="prompt_lab",
        )
    return demo


def build_adapt_tab(h: Handlers, session: gr.State, checkpoint: gr.Dropdown, backbone: gr.Dropdown) -> None:
    gr.Markdown(
        "Few-shot adaptation of GRMP-IQA's **seed** variant on the CLIP-IQA backbone: both encoders "
        "stay frozen, the prompt and the MLP head learn from the labelled photos (MSE + λ·pairwise "
        "regularizer). The new checkpoint becomes selectable on the first tab."
    )
    with gr.Row():
        source = gr.Radio([BUNDLED_SET, UPLOADED_SET], value=BUNDLED_SET, label="Labelled set")
        files = gr.File(label="Photos", file_count="multiple")
        csv_file = gr.File(label="Scores CSV (path or name, score)", file_types=[".csv"])
    with gr.Row():
        lam = gr.Slider(0, 20, value=1.0, step=0.1, label="λ (pairwise regularizer weight)")
        steps = gr.Slider(10, 2000, value=300, step=10, label="Steps")
    run = gr.Button("Adapt", variant="primary", elem_id="adapt-button")
    status = gr.Markdown()
    chart = gr.Plot(label="Training loss and validation SRCC", elem_id="adapt-chart")
    download = gr.File(label="Download the new checkpoint", file_count="multiple", interactive=False)
    run.click(
        h.adapt,
        [source, csv_file, files, lam, steps, backbone, session],
        [chart, status, session, checkpoint, download],
        api_name="adapt",
    )


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
        help=f"photos are downsized to this longest side on upload (default {DEFAULT_MAX_SIDE}, what scoring uses)",
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


THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = ".test-warning {background: #fff3cd; border: 1px solid #e0b100; border-radius: 6px; padding: 4px 12px;}"


class SecurityHeaders:
    """ASGI middleware adding security headers to every HTTP response: no framing by other origins
    (on Hugging Face Spaces the Space page on huggingface.co may frame it) and no MIME sniffing."""

    def __init__(self, app, on_spaces: bool = False):
        self.app = app
        ancestors = "'self' https://huggingface.co" if on_spaces else "'self'"
        self.headers = [
            (b"content-security-policy", f"frame-ancestors {ancestors}".encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if not on_spaces:  # X-Frame-Options cannot name another origin
            self.headers.append((b"x-frame-options", b"SAMEORIGIN"))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                ours = {name for name, _ in self.headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in ours]
                message = {**message, "headers": kept + self.headers}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def example_files() -> list[str]:
    """The bundled photos, one by one: the app serves these and not the folder's scripts or CSV."""
    return sorted(str(path) for path in EXAMPLES.glob("*.jpg"))


def launch(demo: gr.Blocks, config: AppConfig, **kwargs):
    """Queue and serve; extra keyword arguments go to `Blocks.launch` (tests pass prevent_thread_lock)."""
    demo.queue(default_concurrency_limit=config.concurrency, max_size=64)
    middleware = Middleware(SecurityHeaders, on_spaces=bool(os.environ.get("SPACE_ID")))
    return demo.launch(
        server_name=config.host,
        server_port=config.port,
        max_file_size=config.max_file_size,
        allowed_paths=example_files(),
        theme=THEME,
        css=CSS,
        footer_links=["api", "settings"],
        app_kwargs={"middleware": [middleware]},
        **kwargs,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        models = Models(config)
    except (BackboneUnavailable, ValueError) as err:  # ValueError: CheckpointMismatch, CheckpointError, ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    if config.is_test:
        print(f"warning: {TEST_BACKBONE_WARNING}", file=sys.stderr)
    return_freed_memory_promptly()
    launch(build_demo(config, models), config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
