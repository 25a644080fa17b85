"""What every tab's handlers share (`AppContext`): the models, the config, the session budget, the
results remembered per method, and the backbone fallback. Each tab's handler class holds one, and
the handlers it needs from other tabs, given to it explicitly (`iqa.app.demo.Handlers`)."""

from __future__ import annotations

import sys
import traceback

from iqa.app.calls import Caches
from iqa.app.config import MIB
from iqa.app.messages import warn
from iqa.app.models import MAX_METHOD_SCORERS, Models
from iqa.app.session import Session, SessionBudget, release_memory
from iqa.app.zerogpu import on_zerogpu
from iqa.clip.backbones import BackboneUnavailable, CheckpointMismatch
from iqa.clip.features import FeatureStore


class AppContext:
    """`models` is shared by all sessions; a `Session` is one user's."""

    def __init__(self, models: Models):
        self.models = models
        self.config = models.config
        self.budget = SessionBudget(self.config.session_memory_mb * MIB, self.config.session_ttl)
        # results of the methods that do not follow the prompt table: per start-up checkpoint, the most
        # recent of the sessions' own, and per method and options of the others
        self.caches = Caches(len(models.startup_checkpoints) + self.config.max_grmp_models + MAX_METHOD_SCORERS)

    def use(self, session: Session) -> None:
        """Every request of a session: keep the memory budget, and tell it if its photos were dropped."""
        self.budget.use(session)
        if session.notice:
            warn(session.notice)
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

    def store_or_default(self, backbone: str) -> FeatureStore:
        """The store of `backbone`, loaded here unless ZeroGPU forbids it (then only those loaded at
        start are offered); the start-up backbone's when it cannot be had, said in a warning."""
        try:
            if on_zerogpu() and backbone not in self.models.backbone_choices:
                raise BackboneUnavailable(f"Backbone {backbone!r} is not one this server loaded at start.")
            return self.models.store(backbone)
        except (BackboneUnavailable, CheckpointMismatch) as err:
            warn(f"{err} Scoring with {self.config.backbone} instead.")
            return self.models.store(self.config.backbone)
