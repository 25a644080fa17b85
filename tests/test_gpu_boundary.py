"""What crosses the GPU boundary (`iqa.app.gpu`), checked on the real jobs and replies of a session:
each travels through multiprocessing's ForkingPickler, as ZeroGPU sends it, and carries no model,
store, lock or CUDA tensor; apart from photos' pixels a job is under 1 MB. Durations follow the
work within the quota, and what is too big for one call is split or refused."""

from __future__ import annotations

import io
import pickle
import threading
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
from official_reference import tiny_official_state

from iqa.app import adapt_tab, calls, gpu, jobs
from iqa.app.config import EXAMPLES, AppConfig
from iqa.app.demo import Handlers
from iqa.app.lab_tab import BUNDLED_SET
from iqa.app.method_settings import MethodSettings
from iqa.app.models import CheckpointRef, Models
from iqa.app.session import Session
from iqa.clip.backbones import load_backbone
from iqa.clip.features import FeatureStore
from iqa.errors import InputError
from iqa.labels.datasets import load_csv
from iqa.methods.grmp.checkpoint import save_checkpoint
from iqa.methods.grmp.model import GRMPConfig, GRMPModel
from iqa.methods.prompts import PRESETS
from iqa.photos.photo import Photo

T_SCALE = "checkpoint's logit scale"
OVERALL = "overall (weighted mean of the pairs)"
LOCKS = (type(threading.Lock()), type(threading.RLock()))


class _Checking(ForkingPickler):
    """ForkingPickler that fails on anything that must not cross."""

    def reducer_override(self, obj):
        if isinstance(obj, (torch.nn.Module, FeatureStore, Models, *LOCKS)):
            raise AssertionError(f"a {type(obj).__name__} would cross the GPU boundary")
        if isinstance(obj, torch.Tensor) and obj.device.type != "cpu":
            raise AssertionError("a tensor not on the CPU would cross the GPU boundary")
        return NotImplemented


def _crosses(value) -> object:
    buffer = io.BytesIO()
    _Checking(buffer).dump(value)
    return pickle.loads(buffer.getvalue())


def _pixel_bytes(job) -> int:
    photos = [*(getattr(job, "photos", None) or ()), getattr(job, "photo", None)]
    return sum(len(pickle.dumps(p)) for p in photos if isinstance(p, Photo))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, photo_files):
    """Every GPU call of a session (score with the official model, a prompt edit, the quality map, the
    Prompt lab, its calibration, pair search and weights, an adaptation, an upload and a score with
    it) as (job, yielded items)."""
    folder = tmp_path_factory.mktemp("boundary")
    official = folder / "tiny_official.pt"
    torch.save(tiny_official_state(load_backbone("test-tiny-vit")), official)
    calls_made: list[tuple[object, list]] = []
    patch = pytest.MonkeyPatch()
    patch.setenv("IQA_CACHE_DIR", str(folder / "cache"))
    for name in (
        "score",
        "draw_map",
        "rank",
        "adapt",
        "load_checkpoint",
        "encode",
        "calibrate",
        "search",
        "fit_weights",
    ):
        real = getattr(gpu, name)

        def recording(job, real=real):
            items = list(real(job))
            calls_made.append((job, items))
            yield from items  # a generator, as the real call is (a search's caller closes it)

        patch.setattr(calls.gpu, name, recording)
    config = AppConfig(backbone="test-tiny-rn", work_dir=folder / "work", grmp_official=str(official))
    handlers = Handlers(Models(config))
    session = handlers.photos.add_photos(photo_files, Session()).session
    table = handlers.table.load_preset("seed")
    default = handlers.models.default_checkpoint
    handlers.scoring.score(session, table, "test-tiny-rn", T_SCALE, default, 0.5, "CLIP-IQA")
    edited = table.copy()
    edited.loc[0, "positive"] = "a crisp photo"
    handlers.scoring.score(session, edited, "test-tiny-rn", T_SCALE, default, 0.5, "CLIP-IQA")
    handlers.scoring.draw_map(session, edited, "test-tiny-rn", T_SCALE, session.photos[0].name, OVERALL)
    handlers.lab.run_lab(BUNDLED_SET, None, None, edited, "test-tiny-rn", T_SCALE)
    handlers.calibration.calibrate_filter(BUNDLED_SET, None, None, edited, "test-tiny-rn", T_SCALE, "best F1", 0.9)
    list(handlers.search.search_pairs(BUNDLED_SET, None, None, edited, "test-tiny-rn", T_SCALE, "sunny / rainy", 2, 3))
    handlers.search.fit_weights(BUNDLED_SET, None, None, edited, "test-tiny-rn", T_SCALE, 3, session)
    list(handlers.adapting.adapt(BUNDLED_SET, None, None, 1.0, 10, "test-tiny-rn", session))
    backbone = handlers.models.store("test-tiny-rn").backbone
    config = GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=backbone.pretrained, seed=5)
    model = GRMPModel(config, backbone)
    tensors, json_path = save_checkpoint(model, folder / "upload" / "mine")
    chosen = handlers.checkpoints.upload_checkpoint([str(json_path), str(tensors)], session).checkpoint["value"]
    handlers.scoring.score(session, table, "test-tiny-rn", T_SCALE, chosen, 0.5, "GRMP-IQA")
    patch.undo()
    return calls_made


def test_every_gpu_function_was_called(recorded):
    kinds = {type(job).__name__ for job, _ in recorded}
    assert kinds == {
        "ScoreJob",
        "MapJob",
        "LabJob",
        "AdaptJob",
        "CheckpointJob",
        "CalibrateJob",
        "SearchJob",
        "WeightsJob",
    }


def test_jobs_and_replies_cross_as_zerogpu_sends_them(recorded):
    for job, items in recorded:
        assert type(_crosses(job)) is type(job)
        for item in items:
            _crosses(item)
        assert not any(isinstance(item, jobs.Failed) for item in items), items


def test_a_job_is_small_apart_from_its_photos(recorded):
    for job, _ in recorded:
        assert len(pickle.dumps(job)) - _pixel_bytes(job) < 1 << 20, type(job).__name__


def test_a_prompt_edit_sends_no_pixels(recorded):
    scores = [job for job, _ in recorded if isinstance(job, jobs.ScoreJob)]
    assert jobs.pixel_count(scores[0].photos) == 3  # first seen: encoded there
    assert jobs.pixel_count(scores[1].photos) == 0  # the edit: cached features
    assert [call.photos for call in scores[1].methods if call.name == "GRMP-IQA"] == [()]  # its results remembered


def test_durations_follow_the_work_within_the_ceiling():
    photos = tuple(Photo(f"p{i}", _image()) for i in range(4))
    clip = (jobs.MethodCall("CLIP-IQA", {"pairs": tuple(PRESETS["seed"])}, ()),)
    small = jobs.ScoreJob("r", "ViT-B-16-quickgelu", photos[:1], ({}, {}), clip)
    big = jobs.ScoreJob("r", "ViT-B-16-quickgelu", photos * 1000, ({}, {}), clip)
    assert small.seconds() < big.seconds()
    assert jobs.clamp(small.seconds()) == jobs.FLOOR_S and jobs.clamp(big.seconds()) == jobs.CEILING_S
    adapt = jobs.AdaptJob("r", "RN50-quickgelu", (), 300, 1.0)
    assert jobs.FLOOR_S < adapt.seconds() < jobs.ADAPT_CEILING_S


def test_a_request_too_big_for_one_call_is_split_and_scores_the_same(handlers_models, photos, monkeypatch):
    models = handlers_models
    store = models.store("test-tiny-rn")
    whole = calls.score_photos(models, calls.Caches(2), store, _requests(), photos)
    store.clear()
    made: list = []
    real = gpu.score
    monkeypatch.setattr(calls.gpu, "score", lambda job: made.append(job) or real(job))
    monkeypatch.setattr(calls, "per_call", lambda backbone: 2)
    split = calls.score_photos(models, calls.Caches(2), store, _requests(), photos)
    assert [jobs.pixel_count(job.photos) for job in made] == [2, 1]
    assert [row.name for row in split.rows] == [row.name for row in whole.rows]
    for one, other in zip(split.rows, whole.rows):  # batches of other sizes: float rounding apart
        assert one.results["CLIP-IQA"].score == pytest.approx(other.results["CLIP-IQA"].score, abs=1e-6)


def test_an_adaptation_too_long_for_a_free_visitor_is_refused_on_zerogpu(handlers_models, monkeypatch):
    store = handlers_models.store("test-tiny-rn")
    monkeypatch.setattr(calls, "on_zerogpu", lambda: True)
    fits = jobs.max_adapt_steps("test-tiny-rn", 0)
    with pytest.raises(InputError, match=f"at most {fits} steps"):
        calls.adapt_steps(handlers_models, store, [], fits + 1, 1.0)


def test_the_steps_slider_ends_where_one_gpu_call_ends_on_zerogpu(handlers_models, monkeypatch):
    assert adapt_tab.max_steps(handlers_models) == 2000  # elsewhere: long runs, and Stop ends them
    monkeypatch.setattr(adapt_tab, "on_zerogpu", lambda: True)
    photos = len(load_csv(EXAMPLES / "labels.csv"))
    most = adapt_tab.max_steps(handlers_models)
    assert most % 10 == 0 and most <= jobs.max_adapt_steps("test-tiny-rn", photos) < most + 10
    assert (
        jobs.AdaptJob(handlers_models.id, "test-tiny-rn", (None,) * photos, most, 1.0).seconds() <= jobs.ADAPT_CEILING_S
    )


@pytest.fixture(scope="module")
def handlers_models(tmp_path_factory) -> Models:
    return Models(AppConfig(backbone="test-tiny-rn", work_dir=tmp_path_factory.mktemp("work")))


def _requests(ref: CheckpointRef | None = None) -> list:
    """What the Score tab asks for with the seed preset: CLIP-IQA, and GRMP-IQA when `ref` is given."""
    return MethodSettings(tuple(PRESETS["seed"]), None, ref).requests(["CLIP-IQA", "GRMP-IQA"])[0]


def _image():
    from PIL import Image

    return Image.new("RGB", (64, 48), (120, 60, 30))


def test_a_seed_checkpoint_of_another_backbone_gets_the_pixels_its_own_store_needs(handlers_models, photos, tmp_path):
    """The page scores on test-tiny-rn (its features cached); the checkpoint is a seed one on
    test-tiny-vit, whose store has none of them: the photos must travel with their pixels."""
    models = handlers_models
    store = models.store("test-tiny-rn")
    calls.score_photos(models, calls.Caches(2), store, _requests(), photos)
    vit = models.store("test-tiny-vit").backbone
    config = GRMPConfig(variant="seed", backbone="test-tiny-vit", pretrained=vit.pretrained, seed=7)
    save_checkpoint(GRMPModel(config, vit), tmp_path / "vit-seed")
    ref = CheckpointRef.of(tmp_path / "vit-seed")
    scored = calls.score_photos(models, calls.Caches(2), store, _requests(ref), photos)
    assert [row.results["GRMP-IQA"].variant for row in scored.rows] == ["seed"] * len(photos)
    assert scored.encoded == 0  # CLIP-IQA's own features came from the cache
