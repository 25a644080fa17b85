"""The checkpoints a session may score with: the server's, and those it uploads (first tab,
Settings) or adapts (Adapt tab), for the methods that read a `checkpoint` option."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from iqa.app import calls
from iqa.app.about_tab import loaded_text
from iqa.app.base import AppContext
from iqa.app.events import on
from iqa.app.messages import inform, shown_as_message, warn
from iqa.app.models import NO_CHECKPOINT, CheckpointRef
from iqa.app.outputs import CheckpointOutput
from iqa.app.session import Session
from iqa.clip.backbones import BackboneUnavailable


class CheckpointHandlers:
    """Uploads, the dropdown's choices, and the checkpoint a request names."""

    def __init__(self, app: AppContext):
        self.app = app
        self.models, self.config = app.models, app.config

    @shown_as_message
    def upload_checkpoint(self, upload_ckpt: Sequence[str] | None, session: Session) -> CheckpointOutput:
        """Add an uploaded checkpoint (its .json and .safetensors) to this session's choices.

        The upload is checked (config, sizes against the tensors, an allowed backbone) before any
        model is built from it; a refused one leaves no files behind.
        """
        self.app.use(session)
        files = list(upload_ckpt or [])
        by_suffix = {Path(f).suffix.lower(): Path(f) for f in files}
        if len(files) != 2 or set(by_suffix) != {".json", ".safetensors"}:
            method = self.models.checkpoint_method
            raise gr.Error(f"upload a {method} checkpoint as its two files: <name>.json and <name>.safetensors")
        stem = by_suffix[".json"].stem
        folder = session.directory(self.config.work_dir) / "checkpoints" / uuid.uuid4().hex[:8]
        folder.mkdir(parents=True)
        for suffix, path in by_suffix.items():
            shutil.copyfile(path, folder / f"{stem}{suffix}")
        try:
            info = self.models.check_upload(str(folder / stem))
            ref = CheckpointRef.of(folder / stem)
            description = calls.load_checkpoint(self.models, self.app.caches, ref)
        except (BackboneUnavailable, ValueError, OSError) as err:  # ValueError: CheckpointError, CheckpointMismatch
            shutil.rmtree(folder, ignore_errors=True)
            raise gr.Error(f"{by_suffix['.json'].name}: {err}") from None
        session.checkpoints[f"{stem} (uploaded)"] = ref
        inform(f"{stem}: {info.label} on {description}")
        return CheckpointOutput(session, self.choices(session, ref.id))

    def loaded(self, session: Session) -> str:
        """The About tab's note on what is loaded, with this session's own checkpoints."""
        return loaded_text(self.models, list(session.checkpoints))

    def refs(self, session: Session) -> dict[str, CheckpointRef]:
        """The checkpoints this session may score with, by the value the page chooses them by: the
        server's and its own."""
        refs = [*self.models.startup_checkpoints.values(), *session.checkpoints.values()]
        return {ref.id: ref for ref in refs}

    def chosen(self, checkpoint: str | None, session: Session) -> CheckpointRef | None:
        """The session's chosen checkpoint, or None (said in a warning when it cannot be used)."""
        if not checkpoint:
            return None
        ref = self.refs(session).get(checkpoint)
        if ref is None:  # the API lets a client send any text
            method = self.models.checkpoint_method
            warn(f"{method} checkpoint not used: {checkpoint!r} is not one of this session's checkpoints")
        return ref

    def choices(self, session: Session, value: str | None = None):
        own = {**self.models.startup_checkpoints, **session.checkpoints}
        choices = [("none", NO_CHECKPOINT), *((label, ref.id) for label, ref in own.items())]
        return gr.update(choices=choices, value=value if value is not None else NO_CHECKPOINT)


def wire_checkpoints(h: CheckpointHandlers, ui) -> None:
    """An upload is chosen at once; About names every checkpoint the session has, as it changes."""
    on(ui["upload_ckpt"].upload, h.upload_checkpoint, ui)
    # .change: an uploaded or adapted checkpoint is chosen by the server, and About names it too
    on(ui["checkpoint"].change, h.loaded, ui, out=ui["loaded"])
