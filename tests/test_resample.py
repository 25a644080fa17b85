"""Native-resolution downsizing (`iqa.photos.resample`): Pillow's bicubic within rounding, and the same pixels
by every route (decoding workers, the in-memory preprocessor, the app's copy of an upload)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from iqa.clip.features import FeatureStore
from iqa.engine.decode_pool import executor
from iqa.engine.pipeline import Pipeline, PipelineOptions
from iqa.methods.clipiqa.scorer import CLIPIQA
from iqa.methods.prompts import PRESETS
from iqa.photos.decode import DecodeOptions, ResizePlan, decode_file, open_bounded
from iqa.photos.photo import open_photo
from iqa.photos.resample import resize_image, resize_to_chw


def photos() -> list[Image.Image]:
    noise = np.random.default_rng(0).integers(0, 256, (301, 457, 3), dtype=np.uint8)
    return [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()), Image.fromarray(noise)]


@pytest.mark.parametrize("size", [(256, 256), (100, 37), (64, 90), (511, 333), (900, 700)])
def test_agrees_with_pillows_bicubic_within_rounding(size):
    for image in photos():
        ours = np.asarray(resize_image(image, size), dtype=int)
        pillow = np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=int)
        assert ours.shape == pillow.shape == (size[1], size[0], 3)
        difference = np.abs(ours - pillow)
        assert difference.max() <= 2 and (difference > 0).mean() < 0.01


def test_chw_and_image_results_hold_the_same_pixels():
    image = photos()[1]
    chw = resize_to_chw(image, (300, 200))
    assert chw.shape == (3, 200, 300) and chw.dtype == np.uint8 and chw.flags.c_contiguous
    assert np.array_equal(chw.transpose(1, 2, 0), np.asarray(resize_image(image, (300, 200))))


def test_the_preprocessor_and_the_decoding_worker_downsize_identically(tmp_path, rn_backbone):
    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)  # PNG: no draft, so only the resize can differ
    store = FeatureStore(rn_backbone, max_side=200)
    tensor = store.preprocessor(open_photo(path).image)
    pixels = decode_file(path, path.name, DecodeOptions((store.preprocessor.resize_plan(),))).pixels[0]
    assert pixels is not None and pixels.shape == (3, 200, 200)
    assert torch.equal(store.preprocessor.normalize(torch.from_numpy(pixels)[None])[0], tensor)


def test_pipeline_workers_score_downsized_photos_exactly_as_the_in_memory_path(tmp_path, rn_backbone):
    paths = []
    for i, image in enumerate(photos()):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])

    def scorer() -> CLIPIQA:  # a store each: no feature reaches one route from the other
        return CLIPIQA(FeatureStore(rn_backbone, max_side=160), PRESETS["seed"])

    expected = {r.name: r.score for r in scorer().score([open_photo(p) for p in paths])}
    pipeline = Pipeline([scorer()], PipelineOptions(workers=2, cache=None))
    scored = {p.name: p.results[0].score for batch in pipeline.run(paths) for p in batch}
    assert scored == expected  # the workers' resize (one thread each) is the preprocessor's, bit for bit


def test_the_apps_downsized_copy_scores_as_the_full_photo(rn_backbone, tmp_path):
    """The app keeps uploads downsized to max_side; scoring that copy equals scoring the original."""
    paths = []
    for i, image in enumerate(photos()):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    copies = [open_bounded(path, path.name, 256) for path in paths]
    assert all(max(copy.image.size) == 256 for copy in copies)
    stores = [FeatureStore(rn_backbone, max_side=256) for _ in range(2)]
    from_copies = [r.score for r in CLIPIQA(stores[0], PRESETS["seed"]).score(copies)]
    originals = [open_photo(path, name=path.name) for path in paths]
    assert from_copies == [r.score for r in CLIPIQA(stores[1], PRESETS["seed"]).score(originals)]


def test_an_uploaded_jpeg_is_drafted_and_scores_as_the_command_line_scores_its_file(rn_backbone, tmp_path):
    """Uploads decode at the pipeline's speed (JPEG draft) into the pixels the pipeline feeds RN50."""
    path = tmp_path / "large.jpg"
    Image.fromarray(data.astronaut()).resize((2400, 1800), Image.Resampling.BICUBIC).save(path, quality=90)
    upload = open_bounded(path, "large.jpg", 1024)
    assert upload.image.size == (1024, 768)
    full = open_photo(path, name="large.jpg").image.resize((1024, 768), Image.Resampling.BICUBIC)
    assert np.abs(np.asarray(upload.image, dtype=int) - np.asarray(full, dtype=int)).mean() < 3  # drafted, not full

    def scorer() -> CLIPIQA:
        return CLIPIQA(FeatureStore(rn_backbone, max_side=1024), PRESETS["seed"])

    in_app = scorer().score([upload])[0].score
    pipeline = Pipeline([scorer()], PipelineOptions(workers=0, cache=None))
    assert [p.results[0].score for batch in pipeline.run([path]) for p in batch] == [in_app]


def test_a_photo_within_max_side_is_kept_as_it_is(tmp_path):
    path = tmp_path / "small.jpg"
    Image.fromarray(data.coffee()).save(path)
    assert np.array_equal(np.asarray(open_bounded(path, "small.jpg", 1024).image), np.asarray(open_photo(path).image))


def test_decoding_workers_resize_on_one_thread_each():
    with executor(2) as pool:
        assert pool.submit(torch.get_num_threads).result() == 1


def test_plans_other_than_native_keep_pillows_resize():
    image = photos()[0]
    plan = ResizePlan("shortest", 224)
    resized = image.resize((224, 224), Image.Resampling.BICUBIC)
    assert np.array_equal(plan.apply(image, image.size), np.asarray(resized).transpose(2, 0, 1))
