"""The streaming pipeline: bounded memory, decode workers, draft decoding, the disk cache, equality
with the in-memory path, and bad files in a batch."""

from __future__ import annotations

import os
import sqlite3
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import iqa.photos.signature
from iqa.clip.features import FeatureStore
from iqa.engine import pipeline as pipeline_module
from iqa.engine.disk_cache import FILE_NAME, DiskCache
from iqa.engine.pipeline import Pipeline, PipelineOptions
from iqa.methods.clipiqa.scorer import CLIPIQA
from iqa.methods.prompts import PRESETS
from iqa.photos.decode import Decoded, DecodeOptions, decode_file, decode_or_error
from iqa.photos.photo import PhotoError, open_photo, open_photos

EXAMPLES = sorted(Path(__file__).resolve().parents[1].joinpath("examples").glob("*.jpg"))


def clip_iqa(backbone, batch_size: int = 8, max_side: int | None = 1024) -> CLIPIQA:
    return CLIPIQA(FeatureStore(backbone, batch_size=batch_size, max_side=max_side), PRESETS["seed"])


def scores_by_name(pipeline: Pipeline, paths) -> dict[str, float]:
    return {p.name: p.results[0].score for batch in pipeline.run(paths) for p in batch}


class CountingDecoder:
    """Decodes for real (or fakes pixels) and counts decodes and the decoded photos still alive."""

    def __init__(self, fake_size: tuple[int, int] | None = None):
        self.fake_size = fake_size
        self.calls = self.alive = self.most_alive = 0
        self.names: list[str] = []

    def __call__(self, path, name, options, wanted):
        self.calls += 1
        self.names.append(name)
        if self.fake_size is None:
            decoded = decode_or_error(path, name, options, wanted)
        else:
            w, h = self.fake_size
            pixels = np.random.default_rng(self.calls).integers(0, 256, (3, h, w), dtype=np.uint8)
            decoded = Decoded(name, str(path), f"digest-{name}", (w, h), (pixels,))
        if isinstance(decoded, Decoded):
            for array in decoded.pixels:
                if array is not None:
                    self.alive += 1
                    self.most_alive = max(self.most_alive, self.alive)
                    weakref.finalize(array, self._gone)
        return decoded

    def _gone(self) -> None:
        self.alive -= 1


@pytest.mark.parametrize("count", [20, 400])
def test_decoded_photos_alive_stay_bounded_however_many_photos(rn_backbone, count):
    decoder = CountingDecoder(fake_size=(64, 64))
    options = PipelineOptions(workers=0, cache=None, prefetch=2)
    pipeline = Pipeline([clip_iqa(rn_backbone, batch_size=4)], options, decoder=decoder)
    scored = 0
    for batch in pipeline.run(f"photo-{i}.jpg" for i in range(count)):  # a lazy iterator of paths
        scored += len(batch)
    assert scored == count == decoder.calls
    # the batch being encoded and `prefetch` batches decoded ahead: never more, whatever the count
    assert decoder.most_alive <= (options.prefetch + 1) * 4
    assert decoder.alive == 0


@pytest.mark.parametrize("backbone_fixture", ["rn_backbone", "vit_backbone"])
@pytest.mark.parametrize("draft", [False, True])
def test_pipeline_scores_equal_the_in_memory_path_on_the_bundled_photos(request, backbone_fixture, draft):
    backbone = request.getfixturevalue(backbone_fixture)
    photos, errors = open_photos(EXAMPLES)
    assert not errors and len(photos) == 64
    old = {r.name: r.score for r in clip_iqa(backbone).score(photos)}
    pipeline = Pipeline([clip_iqa(backbone)], PipelineOptions(workers=2, draft=draft, cache=None))
    new = scores_by_name(pipeline, EXAMPLES)
    assert set(new) == set(old)
    assert max(abs(new[name] - old[name]) for name in old) <= 1e-5
    assert pipeline.counts.decoded == 64 and not pipeline.counts.skipped


def upscaled_examples(folder: Path, count: int = 8) -> list[Path]:
    """Bundled photos at 4x their size (1536 px) as JPEGs: camera-sized enough for DCT scaling."""
    paths = []
    for source in EXAMPLES[:: len(EXAMPLES) // count][:count]:
        with Image.open(source) as image:
            big = image.convert("RGB").resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC)
        path = folder / source.name
        big.save(path, quality=92)
        paths.append(path)
    return paths


def test_draft_decoding_changes_pixels_and_scores_only_a_little(tmp_path, rn_backbone, vit_backbone):
    paths = upscaled_examples(tmp_path)
    for backbone, max_side in ((rn_backbone, 256), (vit_backbone, 1024)):
        scorer = clip_iqa(backbone, max_side=max_side)
        plan = scorer.store.preprocessor.resize_plan()
        for path in paths:
            full = decode_file(path, path.name, DecodeOptions((plan,), draft=False))
            drafted = decode_file(path, path.name, DecodeOptions((plan,), draft=True))
            assert drafted.drafted and not full.drafted
            assert drafted.pixels[0].shape == full.pixels[0].shape and drafted.size == full.size
            difference = np.abs(drafted.pixels[0].astype(int) - full.pixels[0].astype(int))
            assert 0 < difference.mean() < 2.0  # grey levels: another decode, the same photo
        full_scores = scores_by_name(Pipeline([scorer], PipelineOptions(workers=0, draft=False, cache=None)), paths)
        drafted_scores = scores_by_name(Pipeline([scorer], PipelineOptions(workers=0, draft=True, cache=None)), paths)
        assert max(abs(full_scores[n] - drafted_scores[n]) for n in full_scores) < 1e-2


def test_draft_size_follows_exif_rotation(tmp_path, rn_backbone):
    """A photo stored 1600x1200 with orientation 6 (90 degrees) is 1200x1600 upright."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1200, 1600, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=90)
    plan = clip_iqa(rn_backbone, max_side=400).store.preprocessor.resize_plan()
    for draft in (False, True):
        decoded = decode_file(path, "rotated.jpg", DecodeOptions((plan,), draft=draft))
        assert decoded.size == (1200, 1600) and decoded.pixels[0].shape == (3, 400, 300)
        assert decoded.drafted == draft


def test_cached_features_skip_decoding_in_a_new_pipeline_and_give_the_same_scores(tmp_path, rn_backbone):
    decoder = CountingDecoder()
    first = Pipeline([clip_iqa(rn_backbone)], PipelineOptions(workers=0, cache=DiskCache(tmp_path)), decoder)
    before = scores_by_name(first, EXAMPLES[:10])
    assert decoder.calls == 10 and first.counts.cached == 0
    decoder = CountingDecoder()
    edited = [*PRESETS["seed"][:-1], PRESETS["pyiqa"][0]]  # one pair edited
    again = Pipeline(
        [CLIPIQA(FeatureStore(rn_backbone), edited)], PipelineOptions(workers=0, cache=DiskCache(tmp_path)), decoder
    )
    after = scores_by_name(again, EXAMPLES[:10])
    assert decoder.calls == 0 and again.counts.cached == 10 and again.counts.decoded == 0
    assert set(after) == set(before) and after != before  # other prompts, other scores
    same = Pipeline([clip_iqa(rn_backbone)], PipelineOptions(workers=0, cache=DiskCache(tmp_path)), CountingDecoder())
    assert scores_by_name(same, EXAMPLES[:10]) == pytest.approx(before, abs=1e-6)


def test_cache_keys_keep_draft_backbone_and_weights_apart(tmp_path, rn_backbone, vit_backbone):
    def decodes(backbone, **options) -> int:
        decoder = CountingDecoder()
        pipeline = Pipeline(
            [clip_iqa(backbone)], PipelineOptions(workers=0, cache=DiskCache(tmp_path), **options), decoder
        )
        scores_by_name(pipeline, EXAMPLES[:3])
        return decoder.calls

    assert decodes(rn_backbone) == 3
    assert decodes(rn_backbone) == 0
    assert decodes(rn_backbone, draft=False) == 3
    assert decodes(vit_backbone) == 3
    assert decodes(rn_backbone, weights_fingerprint="/models/rn.safetensors|123|456") == 3


def test_a_corrupt_cache_file_is_rebuilt_not_trusted(tmp_path, rn_backbone):
    (tmp_path / FILE_NAME).write_bytes(b"this is not a database" * 100)
    decoder = CountingDecoder()
    pipeline = Pipeline([clip_iqa(rn_backbone)], PipelineOptions(workers=0, cache=DiskCache(tmp_path)), decoder)
    assert len(scores_by_name(pipeline, EXAMPLES[:4])) == 4 and decoder.calls == 4
    assert list(tmp_path.glob(f"{FILE_NAME}.broken-*"))
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == 4


def test_bad_files_are_reported_by_name_from_the_workers_and_the_rest_is_scored(tmp_path, rn_backbone):
    folder = tmp_path / "album"
    folder.mkdir()
    for source in EXAMPLES[:5]:
        (folder / source.name).write_bytes(source.read_bytes())
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(40)))
    (folder / "notes.jpg").write_bytes(b"just words\n")
    (folder / "cut.jpg").write_bytes(EXAMPLES[0].read_bytes()[:300])
    paths = sorted(folder.iterdir())
    for cache in (None, DiskCache(tmp_path / "cache")):
        pipeline = Pipeline([clip_iqa(rn_backbone, batch_size=2)], PipelineOptions(workers=2, cache=cache))
        scored = scores_by_name(pipeline, paths)
        assert len(scored) == 5
        skipped = {Path(error.name).name: error.reason for error in pipeline.counts.skipped}
        assert set(skipped) == {"corrupt.jpg", "notes.jpg", "cut.jpg"}
        assert "not an image file" in skipped["notes.jpg"] and "corrupt or truncated" in skipped["cut.jpg"]
        assert all(isinstance(e, PhotoError) for e in pipeline.counts.skipped)


def test_limits_apply_to_every_decode(tmp_path, rn_backbone):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (90, 120, 30)).save(big)
    pipeline = Pipeline([clip_iqa(rn_backbone)], PipelineOptions(workers=0, cache=None, max_pixels=5_000_000))
    assert scores_by_name(pipeline, [big]) == {}
    assert "3000x2000 pixels is more than the 5 MP limit" in pipeline.counts.skipped[0].reason
    pipeline = Pipeline([clip_iqa(rn_backbone)], PipelineOptions(workers=0, cache=None, max_bytes=1000))
    assert scores_by_name(pipeline, [big]) == {} and "MB limit" in pipeline.counts.skipped[0].reason


def test_normalising_uint8_batches_equals_the_preprocessor(rn_backbone, vit_backbone):
    photos, _ = open_photos(EXAMPLES[:3])
    for backbone in (rn_backbone, vit_backbone):
        prep = FeatureStore(backbone).preprocessor
        plan = prep.resize_plan()
        for photo in photos:
            uint8 = torch.from_numpy(plan.apply(photo.image, photo.image.size))
            assert torch.equal(prep.normalize(uint8[None])[0], prep(photo.image))


def test_channels_last_keeps_the_scores_of_the_in_memory_path():
    from iqa.clip.backbones import load_backbone

    backbone = load_backbone("test-tiny-rn")  # its own: channels_last converts the image tower
    photos, _ = open_photos(EXAMPLES[:16])
    old = {r.name: r.score for r in clip_iqa(backbone).score(photos)}
    pipeline = Pipeline([clip_iqa(backbone)], PipelineOptions(workers=0, cache=None, channels_last=True))
    new = scores_by_name(pipeline, EXAMPLES[:16])
    assert pipeline._channels_last == {0}
    assert backbone.model.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert max(abs(new[name] - old[name]) for name in old) <= 1e-5


def test_a_rerun_reads_no_unchanged_file_and_rehashes_a_rewritten_one(tmp_path, rn_backbone, monkeypatch):
    monkeypatch.setattr(iqa.photos.signature, "SETTLE_NS", 0)  # these files are only seconds old
    rng = np.random.default_rng(5)
    paths = []
    for i in range(4):  # uncompressed PNGs: other pixels, the same number of bytes
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(paths[-1], compress_level=0)
    probed: list[str] = []
    real_probe = pipeline_module.probe_file

    def probe(path, *args):  # the only place a cached photo's bytes are read
        probed.append(Path(path).name)
        return real_probe(path, *args)

    monkeypatch.setattr(pipeline_module, "probe_file", probe)

    def run(**options) -> tuple[dict[str, float], CountingDecoder, Pipeline]:
        probed.clear()
        decoder = CountingDecoder()
        cache = DiskCache(tmp_path / "cache")
        pipeline = Pipeline([clip_iqa(rn_backbone)], PipelineOptions(workers=0, cache=cache, **options), decoder)
        return scores_by_name(pipeline, paths), decoder, pipeline

    first, decoder, _ = run()
    assert sorted(probed) == ["0.png", "1.png", "2.png", "3.png"] and decoder.calls == 4
    second, decoder, _ = run()
    assert probed == [] and decoder.calls == 0 and second == first  # not one byte of a photo read
    before = paths[0].stat()
    time.sleep(0.05)  # past the file system's clock tick
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(paths[0], compress_level=0)
    os.utime(paths[0], ns=(before.st_atime_ns, before.st_mtime_ns))  # as a tool that keeps times would
    after = paths[0].stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    third, decoder, _ = run()
    assert probed == ["0.png"] and decoder.calls == 1  # the change time gave it away
    rewritten = str(paths[0])
    assert third[rewritten] == pytest.approx(clip_iqa(rn_backbone).score([open_photo(paths[0])])[0].score, abs=1e-6)
    assert third[rewritten] != first[rewritten]
    assert {k: v for k, v in third.items() if k != rewritten} == {k: v for k, v in first.items() if k != rewritten}
    scored, _, limited = run(max_pixels=10_000)  # remembered, but over this run's limit: probed and refused
    assert scored == {} and sorted(probed) == ["0.png", "1.png", "2.png", "3.png"]
    assert all("more than the" in error.reason for error in limited.counts.skipped)
    scored, _, limited = run(max_bytes=1000)
    assert scored == {} and all("MB limit" in error.reason for error in limited.counts.skipped)


def test_a_file_that_crashes_a_decoding_worker_is_named_and_the_rest_are_scored(tmp_path, rn_backbone):
    from tests.crashing_decoder import decode_or_crash

    folder = tmp_path / "album"
    folder.mkdir()
    for source in EXAMPLES[:9]:
        (folder / source.name).write_bytes(source.read_bytes())
    (folder / "crash-1.jpg").write_bytes(EXAMPLES[9].read_bytes())  # a good photo: only its name kills
    (folder / "crash-2.jpg").write_bytes(EXAMPLES[10].read_bytes())
    good = sorted(p for p in folder.iterdir() if not p.name.startswith("crash"))
    paths = [good[0], folder / "crash-1.jpg", *good[1:5], folder / "crash-2.jpg", *good[5:]]  # others in flight
    expected = scores_by_name(Pipeline([clip_iqa(rn_backbone)], PipelineOptions(workers=2, cache=None)), good)
    options = PipelineOptions(workers=2, cache=None, prefetch=1)
    pipeline = Pipeline([clip_iqa(rn_backbone, batch_size=3)], options, decoder=decode_or_crash)
    scored = scores_by_name(pipeline, paths)
    assert scored == pytest.approx(expected, abs=1e-6) and len(scored) == 9
    assert {Path(e.name).name for e in pipeline.counts.skipped} == {"crash-1.jpg", "crash-2.jpg"}
    assert all("decoder crashed on this file" in e.reason for e in pipeline.counts.skipped)


def test_two_runs_of_one_pipeline_keep_their_own_photos_and_pools(rn_backbone):
    pipeline = Pipeline([clip_iqa(rn_backbone, batch_size=2)], PipelineOptions(workers=2, cache=None, prefetch=1))
    first, second = pipeline.run(EXAMPLES[:6]), pipeline.run(EXAMPLES[6:12])
    names: dict[str, list[str]] = {"first": [], "second": []}
    for _ in range(3):  # interleaved, batch by batch
        names["first"] += [p.name for p in next(first)]
        names["second"] += [p.name for p in next(second)]
    assert names == {"first": [str(p) for p in EXAMPLES[:6]], "second": [str(p) for p in EXAMPLES[6:12]]}
    third, fourth = pipeline.run(EXAMPLES[:6]), pipeline.run(EXAMPLES[6:12])
    next(third)
    third.close()  # stopped early: its pool goes, the other run's stays
    assert sum(len(batch) for batch in fourth) == 6


def test_a_file_name_in_no_encoding_is_scored_and_remembered(tmp_path, rn_backbone, monkeypatch):
    monkeypatch.setattr(iqa.photos.signature, "SETTLE_NS", 0)
    odd = tmp_path / os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: not UTF-8
    odd.write_bytes(EXAMPLES[0].read_bytes())
    for expected_decodes in (1, 0):  # the second run finds its hash by the file's signature
        decoder = CountingDecoder()
        options = PipelineOptions(workers=0, cache=DiskCache(tmp_path / "cache"))
        pipeline = Pipeline([clip_iqa(rn_backbone)], options, decoder)
        assert list(scores_by_name(pipeline, [odd])) == [str(odd)] and decoder.calls == expected_decodes
