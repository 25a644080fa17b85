"""Backbones with their feature caches, and GRMP-IQA scorers: loaded once, shared by all sessions.

GRMP-IQA scorers are built by `iqa.scoring.grmp_scorer`, which holds the one rule for when a
checkpoint shares CLIP-IQA's backbone and cached features; this module only decides which
checkpoints may be loaded (an upload is validated first and may only use a backbone the server
started with) and keeps a bounded number of them in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from ..backbones import load_backbone
from ..compare import CachedScorer
from ..features import FeatureStore
from ..grmp.checkpoint import CheckpointError, check_checkpoint, checkpoint_paths, read_config
from ..grmp.model import GRMPConfig, GRMPModel, GRMPScorer
from ..grmp.official import DEFAULT_DESCRIPTION, DEFAULT_FILE, converted_official
from ..names import DEFAULT_PRETRAINED
from ..prompt_lab import LabelledFeatures
from ..scoring import grmp_scorer
from ..tiny_backbones import TEST_BACKBONES
from .config import AppConfig

REAL_BACKBONES = ("RN50-quickgelu", "ViT-B-16-quickgelu", "ViT-L-14-quickgelu")
NO_GRMP = ""


class Models:
    """Backbones with their feature caches, and GRMP scorers, loaded once and shared by all sessions."""

    def __init__(self, config: AppConfig):
        self.config = config
        self._lock = threading.Lock()
        self._stores: dict[str, FeatureStore] = {}
        self._grmp: OrderedDict[str, CachedScorer] = OrderedDict()  # least recently used first
        self._trusted: set[str] = set()  # checkpoints the operator or the server made (not uploads)
        self._pinned: set[str] = set()  # the start-up checkpoints: never evicted by uploads or adaptations
        for name in dict.fromkeys([config.backbone, *config.allow_backbones]):
            self.store(name)
        self.startup_checkpoints: dict[str, str] = {}
        self.grmp_note = ""  # one line for the page: which GRMP-IQA model is the default, or why there is none
        if config.grmp_official:
            self._load_official(config.grmp_official)
        for path in config.grmp_checkpoints:
            self.trust(path)
            self._pinned.add(_stem(path))
            self.grmp(path)
            self.startup_checkpoints[Path(path).name] = str(path)
        # fixed at start: an upload never loads a backbone
        self.upload_backbones = tuple(
            dict.fromkeys([*self._stores, *(grmp_model(cached).config.backbone for cached in self._grmp.values())])
        )
        self.lab_set = self._load_lab_set(config.lab_dataset) if config.lab_dataset else None
        if not self.startup_checkpoints and not self.grmp_note:
            self.grmp_note = (
                "No GRMP-IQA model loaded, so its column is empty: upload a checkpoint below, adapt "
                "one on the Adapt tab, or start the app with --grmp-official FILE or "
                "--grmp-checkpoint PATH."
            )

    def _load_lab_set(self, spec: str) -> LabelledFeatures:
        """The server's labelled set for the Prompt lab, as features on the start-up backbone: encoded once
        into the disk cache, so later starts and every prompt edit only read them."""
        from ..disk_cache import DiskCache
        from ..prompt_lab import load_server_dataset

        return load_server_dataset(spec, self.store(self.config.backbone), DiskCache())

    @property
    def default_checkpoint(self) -> str:
        """The GRMP-IQA checkpoint chosen when a page opens: the official model, else the first given."""
        return next(iter(self.startup_checkpoints.values()), NO_GRMP)

    def _load_official(self, source: str) -> None:
        """Convert (once, cached on disk) and load an official GRMP-IQA file; say in one line if it cannot be had."""
        try:
            stem = converted_official(source)
            self.trust(str(stem))
            self._pinned.add(_stem(str(stem)))
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
            f"GRMP-IQA: the official model {Path(source).name}{about}; on {grmp_model(scorer).description}."
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
                    ),
                    max_side=self.config.max_side or None,  # what uploads are downsized to: 0 keeps full size
                )
            return self._stores[name]

    def grmp(self, path: str) -> CachedScorer:
        """A GRMP scorer for a checkpoint (results cached per photo), next to the feature store of the
        backbone it names; `iqa.scoring` decides whether it shares that backbone and its features.

        An untrusted checkpoint (an upload) is validated against its tensors before anything is
        built, and may only use a backbone the server started with.
        """
        path = _stem(path)
        with self._lock:
            if path in self._grmp:
                self._grmp.move_to_end(path)
                return self._grmp[path]
        config = read_config(path) if path in self._trusted else self.check_upload(path)
        # the store of the backbone it was trained on; one that carries its whole backbone (no
        # pretrained tag) is offered the default store, which it will not share
        store = self.store(config.backbone if config.pretrained is not None else self.config.backbone)
        return self.register(path, grmp_scorer(path, store, device=self.config.device))

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
        """Keep a scorer for the checkpoint at `path` (a stem), e.g. one just adapted.

        At most `max_grmp_models` besides the start-up checkpoints stay in memory; the least recently
        used goes first (loaded again from its files when next chosen). Start-up ones always stay.
        """
        self.trust(path)
        with self._lock:
            cached = self._grmp.setdefault(path, CachedScorer(scorer))
            evictable = [key for key in self._grmp if key not in self._pinned]  # least recently used first
            for key in evictable[: max(0, len(evictable) - self.config.max_grmp_models)]:
                del self._grmp[key]
            return cached

    @property
    def description(self) -> str:
        return self.store(self.config.backbone).backbone.description


def _stem(path: str) -> str:
    return str(checkpoint_paths(path)[0].with_suffix(""))


def grmp_model(cached: CachedScorer) -> GRMPModel:
    """The GRMP model behind one of the app's cached GRMP-IQA scorers."""
    scorer = cached.scorer
    assert isinstance(scorer, GRMPScorer)
    return scorer.model
