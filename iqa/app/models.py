"""The server's models, loaded once and shared by all sessions: backbones with their feature caches,
GRMP-IQA checkpoints, and the `--lab-dataset` labelled set.

A `Models` is also the registry the GPU work resolves names against (`iqa.app.gpu`): under ZeroGPU
that work runs in a worker forked from this process, which inherits the registry built at start-up,
so a job names a backbone or a checkpoint (`CheckpointRef`) and never carries a model. Everything
ZeroGPU must move onto the GPU is therefore loaded here at start, on the main thread.

GRMP-IQA scorers are built by `iqa.methods.grmp.scorer.grmp_scorer`, which holds the one rule for when a
checkpoint shares CLIP-IQA's backbone and cached features; this module only decides which
checkpoints may be loaded (an upload is validated first, without torch, and may only use a backbone
the server started with) and keeps a bounded number of them in memory where the GPU work runs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iqa.app.config import AppConfig
from iqa.app.zerogpu import on_zerogpu
from iqa.clip.backbones import BackboneUnavailable, CheckpointMismatch, load_backbone
from iqa.clip.features import FeatureStore
from iqa.clip.test_backbones import TEST_BACKBONES
from iqa.lab.prompt_lab import LabelledFeatures
from iqa.methods import registry
from iqa.methods.grmp.checkpoint import CheckpointError, check_checkpoint, checkpoint_paths, read_config
from iqa.methods.grmp.model import GRMPConfig
from iqa.methods.grmp.official import DEFAULT_DESCRIPTION, DEFAULT_FILE, converted_official
from iqa.methods.grmp.scorer import GRMPScorer, grmp_scorer, shares_features_of
from iqa.methods.scoring import Scorer, ScorerSpec
from iqa.names import DEFAULT_PRETRAINED

REAL_BACKBONES = ("RN50-quickgelu", "ViT-B-16-quickgelu", "ViT-L-14-quickgelu")
NO_CHECKPOINT = ""  # the checkpoint dropdown's "none"
MAX_METHOD_SCORERS = 8  # scorers of methods without a checkpoint kept where the GPU work runs
logger = logging.getLogger(__name__)

# Every live registry by id: a job names its registry, which the ZeroGPU worker inherited by fork.
REGISTRIES: weakref.WeakValueDictionary[str, Models] = weakref.WeakValueDictionary()


@dataclass(frozen=True)
class CheckpointRef:
    """A GRMP-IQA checkpoint as a job names it: its files on this server and their content hash.

    The hash keys the scorers loaded where the GPU work runs (a worker never confuses two uploads
    of one name) and the results remembered per photo in this process.
    """

    path: str  # the stem: <path>.json and <path>.safetensors
    digest: str

    @classmethod
    def of(cls, path: str | Path) -> CheckpointRef:
        digest = hashlib.sha256()
        for file in checkpoint_paths(path):
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return cls(str(checkpoint_paths(path)[0].with_suffix("")), digest.hexdigest())

    @property
    def id(self) -> str:
        """What the page and the API choose it by: its name and the start of its hash, never a server path."""
        return f"{Path(self.path).name}-{self.digest[:12]}"


def checkpoint_in(options: Mapping[str, Any]) -> CheckpointRef | None:
    """The checkpoint among a method's options (`Method.arguments`), if it reads one."""
    ref = options.get("checkpoint")
    return ref if isinstance(ref, CheckpointRef) else None


@dataclass(frozen=True)
class CheckpointInfo:
    """What the page says of a checkpoint, read from its config (no model needed)."""

    label: str  # "GRMP-IQA (seed)"
    backbone: str
    shares_features: bool  # scores from CLIP-IQA's cached features on `backbone`


class Models:
    """Backbones with their feature caches, GRMP-IQA checkpoints and the server's labelled set."""

    def __init__(self, config: AppConfig):
        self.config = config
        self.id = uuid.uuid4().hex
        REGISTRIES[self.id] = self
        self._lock = threading.Lock()
        self._stores: dict[str, FeatureStore] = {}
        self._startup: dict[str, GRMPScorer] = {}  # by digest: loaded at start, never evicted
        self._loaded: OrderedDict[str, GRMPScorer] = OrderedDict()  # uploads and adaptations, least recent first
        self._methods: OrderedDict[tuple, Scorer] = OrderedDict()  # other methods' scorers, least recent first
        self.store(config.backbone)
        for name in self._eager_backbones():
            self._try_store(name)
        self.startup_checkpoints: dict[str, CheckpointRef] = {}  # label -> ref
        self.grmp_note = ""  # one line for the page: which GRMP-IQA model is the default, or why there is none
        if config.grmp_official:
            self._load_official(config.grmp_official)
        for path in config.grmp_checkpoints:
            self._load_startup(Path(path).name, path)
        self.upload_backbones = tuple(
            dict.fromkeys([*self._stores, *(scorer.model.config.backbone for scorer in self._startup.values())])
        )
        self.lab_set = self._load_lab_set(config.lab_dataset) if config.lab_dataset else None
        if on_zerogpu():  # a worker cannot keep what it loads: methods with weights of their own load here
            self._build_methods()
        if not self.startup_checkpoints and not self.grmp_note:
            self.grmp_note = (
                "No GRMP-IQA model loaded, so its column is empty: upload a checkpoint (first tab, Settings), adapt "
                "one on the Adapt tab, or start the app with --grmp-official FILE or "
                "--grmp-checkpoint PATH."
            )

    def _eager_backbones(self) -> list[str]:
        """The backbones loaded at start: under ZeroGPU every one offered (none can be loaded later,
        outside a GPU function); elsewhere those uploads may use (`--allow-backbone`)."""
        return self._offered() if on_zerogpu() else list(self.config.allow_backbones)

    def _try_store(self, name: str) -> None:
        try:
            self.store(name)
        except (BackboneUnavailable, CheckpointMismatch) as err:
            logger.warning("backbone %s not offered: %s", name, err)

    def _load_lab_set(self, spec: str) -> LabelledFeatures:
        """The server's labelled set for the Prompt lab, as features on the start-up backbone: encoded once
        into the disk cache, so later starts and every prompt edit only read them."""
        from iqa.engine.disk_cache import DiskCache
        from iqa.lab.prompt_lab import load_server_dataset

        return load_server_dataset(spec, self.store(self.config.backbone), DiskCache())

    @property
    def startup_ids(self) -> set[str]:
        """The values the page chooses the start-up checkpoints by."""
        return {ref.id for ref in self.startup_checkpoints.values()}

    @property
    def default_checkpoint(self) -> str:
        """The GRMP-IQA checkpoint chosen when a page opens: the official model, else the first given."""
        return next((ref.id for ref in self.startup_checkpoints.values()), NO_CHECKPOINT)

    def _load_official(self, source: str) -> None:
        """Convert (once, cached on disk) and load an official GRMP-IQA file; say in one line if it cannot be had."""
        try:
            scorer = self._load_startup(f"official: {Path(source).stem}", converted_official(source))
        except (OSError, ValueError) as err:  # OfficialCheckpointError, CheckpointMismatch, a full disk ...
            reason = str(err).splitlines()[0]
            self.grmp_note = (
                f"No GRMP-IQA model, so its column is empty: the official checkpoint {source} could "
                f"not be loaded ({reason}). Upload a checkpoint (first tab, Settings), adapt one on the Adapt tab, or "
                "start the app with --grmp-official PATH (a local copy) or --grmp-checkpoint PATH."
            )
            return
        about = f": {DEFAULT_DESCRIPTION}" if Path(source).name == DEFAULT_FILE else ""
        self.grmp_note = f"GRMP-IQA: the official model {Path(source).name}{about}; on {scorer.model.description}."
        logger.info("GRMP-IQA official model %s in use, on %s", Path(source).name, scorer.model.description)

    def _load_startup(self, label: str, path: str | Path) -> GRMPScorer:
        """Load an operator's checkpoint now, on the main thread (ZeroGPU registers its weights)."""
        ref = CheckpointRef.of(path)
        scorer = self._build(ref, read_config(ref.path))
        self._startup[ref.digest] = scorer
        self.startup_checkpoints[label] = ref
        return scorer

    def _offered(self) -> list[str]:
        others = sorted(TEST_BACKBONES) if self.config.is_test else REAL_BACKBONES
        return list(dict.fromkeys([self.config.backbone, *others]))

    @property
    def backbone_choices(self) -> list[str]:
        """The backbones the page offers: under ZeroGPU only those loaded at start."""
        return [name for name in self._offered() if name in self._stores or not on_zerogpu()]

    def store(self, name: str) -> FeatureStore:
        """The feature store of backbone `name`, loading the backbone on first use (never under
        ZeroGPU after start: `backbone_choices` then offers only those loaded)."""
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
                logger.info("backbone %s ready: %s", name, self._stores[name].backbone.description)
            return self._stores[name]

    def known_store(self, name: str) -> FeatureStore:
        """The store of `name` when it is loaded, else the start-up backbone's (a client may send any text)."""
        with self._lock:
            return self._stores.get(name) or self._stores[self.config.backbone]

    def info(self, ref: CheckpointRef) -> CheckpointInfo:
        """The label, backbone and feature sharing of a checkpoint, from its config (no model built)."""
        return self._info(read_config(ref.path))

    def _info(self, config: GRMPConfig) -> CheckpointInfo:
        store = self.known_store(self._backbone_for(config))
        return CheckpointInfo(
            f"{self.checkpoint_method} ({config.variant})", config.backbone, shares_features_of(config, store)
        )

    @property
    def checkpoint_method(self) -> str:
        """The registered method the checkpoints here are for: the one reading a `checkpoint` option
        (these files are its format: `iqa.methods.grmp.checkpoint`)."""
        return next((m.name for m in registry.methods() if "checkpoint" in m.arguments), "")

    def scorer_for(self, name: str, store: FeatureStore, options: Mapping[str, Any]) -> Scorer:
        """Registered method `name` with `options` (`Method.arguments`) next to `store`, where the GPU
        work runs: a checkpoint's scorer from `scorer`; a method that follows the prompt table built
        anew (cheap: its texts are cached in `store`); any other built once and kept (a plug-in with
        weights of its own loads them once)."""
        ref = checkpoint_in(options)
        if ref is not None:
            return self.scorer(ref)
        method = registry.method(name)
        spec = ScorerSpec(
            methods=(name,), backbone=store.backbone.name, device=self.config.device, options={name: options}
        )
        if method.follows_prompts:
            return method.scorer(spec, store)
        key = (name, store.backbone.key, repr(sorted(options.items())))
        with self._lock:
            if key in self._methods:
                self._methods.move_to_end(key)
                return self._methods[key]
        scorer = method.scorer(spec, store)
        with self._lock:
            self._methods[key] = scorer
            while len(self._methods) > MAX_METHOD_SCORERS:
                self._methods.popitem(last=False)
        return scorer

    def scorer(self, ref: CheckpointRef) -> GRMPScorer:
        """The GRMP-IQA scorer of a checkpoint, loaded on first use where the GPU work runs.

        At most `max_grmp_models` besides the start-up checkpoints stay in memory; the least recently
        used goes first (loaded again from its files when next asked for). A file changed since its
        reference was taken is refused.
        """
        with self._lock:
            if ref.digest in self._startup:
                return self._startup[ref.digest]
            if ref.digest in self._loaded:
                self._loaded.move_to_end(ref.digest)
                return self._loaded[ref.digest]
        if CheckpointRef.of(ref.path) != ref:
            raise CheckpointError(f"{Path(ref.path).name}: its files changed since it was chosen; upload it again")
        scorer = self._build(ref, read_config(ref.path))
        with self._lock:
            self._loaded[ref.digest] = scorer
            while len(self._loaded) > self.config.max_grmp_models:
                self._loaded.popitem(last=False)
        return scorer

    def _build(self, ref: CheckpointRef, config: GRMPConfig) -> GRMPScorer:
        return grmp_scorer(ref.path, self.store(self._backbone_for(config)), device=self.config.device)

    def _backbone_for(self, config: GRMPConfig) -> str:
        """The store a checkpoint is offered: its own backbone's; one that carries its whole backbone
        (no pretrained tag) is offered the default store, which it will not share."""
        return config.backbone if config.pretrained is not None else self.config.backbone

    def _build_methods(self) -> None:
        """Every registered method that keeps its scorer (`scorer_for`) and needs no option, built now
        on the start-up backbone with the page's defaults; one that cannot be built is left to fail
        on use, with its reason, and logged here."""
        store = self.store(self.config.backbone)
        for method in registry.methods():
            if method.follows_prompts or method.required:
                continue
            try:
                self.scorer_for(method.name, store, {})
            except (BackboneUnavailable, ValueError, OSError) as err:
                logger.warning("%s not built at start: %s", method.name, err)

    def check_upload(self, path: str) -> CheckpointInfo:
        """An uploaded checkpoint, checked against its tensors without building anything (CheckpointError),
        and refused unless its backbone is loaded already, since it was named at start."""
        config = check_checkpoint(path)
        if config.backbone not in self.upload_backbones:
            raise CheckpointError(
                f"{Path(path).name}.json needs backbone {config.backbone!r}; uploaded checkpoints may only use "
                f"the backbones this server was started with: {', '.join(self.upload_backbones)} (an operator "
                f"can allow more with --allow-backbone)"
            )
        return self._info(config)

    @property
    def description(self) -> str:
        return self.store(self.config.backbone).backbone.description
