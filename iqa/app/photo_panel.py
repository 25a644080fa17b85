"""The photos of a session: uploads and the bundled examples, each downsized at once (first tab)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr

from iqa.app.base import AppContext
from iqa.app.config import EXAMPLES, MIB
from iqa.app.events import Chains, on
from iqa.app.messages import shown_as_message, warn
from iqa.app.outputs import ClearedOutput, PhotosOutput
from iqa.app.session import Session, thumbnail
from iqa.photos.decode import open_bounded
from iqa.photos.photo import Photo, PhotoError
from iqa.report.compare import unique_name

UPLOAD_THREADS = 4  # photos decoded at once per upload
EXAMPLE_PHOTOS = [
    f"{ref}{suffix}.jpg"
    for ref in ("astronaut", "chelsea", "coffee", "rocket")
    for suffix in ("", "_gaussian_blur_L5", "_gaussian_noise_L3")
]


class PhotoHandlers:
    """Adding and removing the session's photos."""

    def __init__(self, app: AppContext):
        self.app = app
        self.models, self.config = app.models, app.config

    @shown_as_message
    def add_photos(self, files: Sequence[str] | None, session: Session) -> PhotosOutput:
        """Open uploaded files into the session, each downsized to the scorers' largest side at once;
        bad ones are reported and skipped."""
        self.app.use(session)
        messages = []
        taken = {p.name for p in session.photos}
        thumbs = session.directory(self.config.work_dir) / "thumbnails"
        thumbs.mkdir(parents=True, exist_ok=True)
        for file, opened in self._opened([f for f in files or [] if str(f) not in session.sources]):
            full = self._photos_full(session)
            if full:
                messages.append(full)
                break
            if isinstance(opened, PhotoError):
                messages.append(str(opened))
                continue
            photo = opened
            photo.name = unique_name(photo.name, taken)
            session.sources.add(str(file))
            if photo.digest in session.digests:
                messages.append(f"{Path(file).name}: the same photo as {session.digests[photo.digest]}, kept once")
                continue
            taken.add(photo.name)
            session.digests[photo.digest] = photo.name
            self.app.budget.use(session)  # a long upload is not idle, and others give way as it grows
            session.photos.append(photo)
            session.uploads[str(file)] = photo.name
            session.thumbnails[photo.name], session.icons[photo.name] = thumbnail(photo, thumbs)
        self.app.budget.use(session)
        for message in messages:
            warn(message)
        return PhotosOutput(session, self.gallery(session), self._photo_summary(session, messages))

    def _opened(self, files: list[str]) -> Iterator[tuple[str, Photo | PhotoError]]:
        """Each file opened and downsized on decoding (`open_bounded`), a few at a time: JPEG decoding
        and the resize release the interpreter, so an upload of many photos uses every core."""
        workers = min(UPLOAD_THREADS, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="iqa-upload") as pool:
            for start in range(0, len(files), 2 * workers):  # a bounded window: the session may fill up
                chunk = files[start : start + 2 * workers]
                yield from zip(chunk, pool.map(self._open, chunk))

    def _open(self, file: str) -> Photo | PhotoError:
        try:
            photo = open_bounded(file, Path(file).name, self.config.max_side, self.config.max_pixels)
        except PhotoError as err:
            return err
        photo.digest  # noqa: B018 - hashed here too, in parallel (a cached property)
        return photo

    def _photos_full(self, session: Session) -> str:
        """Why the session can take no more photos, or "" while it can."""
        if len(session.photos) >= self.config.max_photos:
            return f"only {self.config.max_photos} photos per session; the rest were not added"
        largest = (self.config.max_side**2 if self.config.max_side else self.config.max_pixels) * 3
        if self.app.budget.room(session) < largest:
            return (
                f"this session holds {session.nbytes / MIB:.0f} MiB of photos, the server's limit for all "
                f"sessions ({self.config.session_memory_mb} MiB); the rest were not added"
            )
        return ""

    def add_examples(self, session: Session) -> PhotosOutput:
        return self.add_photos([str(EXAMPLES / name) for name in EXAMPLE_PHOTOS], session)

    @shown_as_message
    def remove_upload(self, session: Session, event: gr.DeletedFileData) -> PhotosOutput:
        """A file's x in the upload box: its photo leaves the session (the re-score that follows unscores it)."""
        self.app.use(session)
        session.forget_upload(event.file.path)
        return PhotosOutput(session, self.gallery(session), self._photo_summary(session, []))

    @shown_as_message
    def clear_photos(self, session: Session) -> ClearedOutput:
        """ "Clear photos": the session's photos and the upload box's files (an upload re-sends the box's)."""
        self.app.use(session)
        session.drop_photos()
        return ClearedOutput(session, [], "No photos yet.")

    @staticmethod
    def gallery(session: Session) -> list[tuple[str, str]]:
        return [(session.thumbnails[p.name], p.name) for p in session.photos]

    @staticmethod
    def _photo_summary(session: Session, problems: list[str]) -> str:
        text = f"{len(session.photos)} photo(s) ready." if session.photos else "No photos yet."
        if problems:
            text += "\n\nNot added:\n" + "\n".join(f"- {m}" for m in problems)
        return text


def build_photo_panel(ui: dict) -> None:
    """The upload box, the example and clear buttons, the summary and the gallery."""
    ui["files"] = gr.File(label="Photos (drop many at once)", file_count="multiple", height=150, elem_id="photo-upload")
    with gr.Row():
        ui["examples"] = gr.Button("Add example photos", size="sm", elem_id="add-examples")
        ui["clear"] = gr.Button("Clear photos", size="sm")
    ui["photo_info"] = gr.Markdown("No photos yet.", elem_id="photo-info")
    ui["gallery"] = gr.Gallery(label="Photos to score", columns=4, height=260, show_label=False, elem_id="gallery")


def wire_photo_panel(h: PhotoHandlers, ui: dict, chains: Chains) -> None:
    """New photos re-score; cleared ones leave no results behind (the upload box emptied too)."""
    chains.rescore(on(ui["files"].upload, h.add_photos, ui))
    chains.rescore(on(ui["examples"].click, h.add_examples, ui))
    for trigger in (ui["clear"].click, ui["files"].clear):
        chains.refilter(on(on(trigger, h.clear_photos, ui).then, chains.scoring.clear_results, ui))
    chains.rescore(on(ui["files"].delete, h.remove_upload, ui))
