"""What one browser session holds (`Session`), and the server-wide memory budget and idle expiry of
all sessions (`SessionBudget`)."""

from __future__ import annotations

import base64
import ctypes
import io
import shutil
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iqa.app.config import MIB
from iqa.app.models import CheckpointRef
from iqa.photos.photo import Photo
from iqa.report.compare import ComparedPhoto


@dataclass
class Session:
    """What one browser session holds: its photos, last results and its own checkpoints."""

    photos: list[Photo] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)  # files already added (an upload re-sends earlier ones)
    uploads: dict[str, str] = field(default_factory=dict)  # uploaded file -> the photo it added (its x removes it)
    thumbnails: dict[str, str] = field(default_factory=dict)  # name -> small JPEG file
    icons: dict[str, str] = field(default_factory=dict)  # name -> tiny data URI
    digests: dict[str, str] = field(default_factory=dict)  # content digest -> name: a photo is kept once
    rows: list[ComparedPhoto] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)  # the methods chosen when `rows` were scored (their columns)
    axes: tuple[str | None, str | None] = (None, None)  # the scatter's two methods, as last chosen on the page
    settings: dict[str, object] = field(default_factory=dict)  # how `rows` were scored, for the CSV
    attributes: bool = False  # `rows` were scored with attribute prompts: no quality score (iqa.methods.prompts)
    custom_table: Any = None  # the prompt table as last edited (kept when a preset is chosen)
    told_custom_kept: bool = False  # "your edited table is kept" was said (once is enough)
    checkpoints: dict[str, CheckpointRef] = field(default_factory=dict)  # label -> its own (uploaded, adapted)
    map_open: bool = False  # the quality map was asked for: it follows the chosen photo, pair and table
    stop_adapting: bool = False  # "Stop" was pressed: the running adaptation ends at its next step
    folder: str = ""
    notice: str = ""  # why the server dropped this session's photos, told at its next request

    @property
    def nbytes(self) -> int:
        """Memory the session's photos take: their (bounded) pixels and the ranking table's icons."""
        return sum(p.image.width * p.image.height * 3 for p in self.photos) + sum(map(len, self.icons.values()))

    def drop_photos(self, notice: str = "") -> None:
        """Forget the photos and results (checkpoint choices stay); thumbnails go with them."""
        self.photos, self.rows, self.thumbnails, self.icons, self.sources = [], [], {}, {}, set()
        self.digests, self.settings, self.uploads = {}, {}, {}
        self.notice = notice
        if self.folder:
            shutil.rmtree(Path(self.folder) / "thumbnails", ignore_errors=True)

    def forget_upload(self, file: str) -> None:
        """A file taken out of the upload box: the photo it added goes, with its results."""
        self.sources.discard(file)
        name = self.uploads.pop(file, None)
        if name is None:  # refused, or the same as another photo: it added none
            return
        self.photos = [p for p in self.photos if p.name != name]
        self.rows = [r for r in self.rows if r.name != name]
        self.digests = {d: n for d, n in self.digests.items() if n != name}
        self.icons.pop(name, None)
        thumb = self.thumbnails.pop(name, None)
        if thumb:
            Path(thumb).unlink(missing_ok=True)

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


def icon_html(data_uri: str) -> str:
    return f'<img src="{data_uri}" alt="" style="height:36px;border-radius:4px">' if data_uri else ""
