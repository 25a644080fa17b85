"""MA-CLIP: its views, its math, its cache (a prompt edit encodes no image), and every way in
(Python API, pipeline and disk cache, command line, Ray rows, breakdown). With the tiny test
backbone the scores are meaningless (and clipped to 1: its magnitude cue is above 1); the figures
compared are the views' own. Parity with pyiqa on seeded RN50 weights: `test_maclip_parity.py`."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from iqa.cli.main import EXIT_OK, main
from iqa.clip.features import FeatureStore
from iqa.clip.views import ViewPreprocessor, ViewStore, magnitude_cue
from iqa.engine.disk_cache import DiskCache, plausible
from iqa.engine.pipeline import Pipeline, PipelineOptions
from iqa.methods import registry
from iqa.methods.maclip.method import FUSED, MAGNITUDE, VIEWS, W_C, W_M
from iqa.methods.maclip.scorer import MACLIP
from iqa.methods.prompts import PRESETS, PromptPair
from iqa.methods.scoring import ScorerSpec, build_scorers
from iqa.names import MA_CLIP
from iqa.photos.photo import Photo
from iqa.report import charts

TEST = ["--backbone", "test-tiny-rn"]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def big_photos() -> list[Photo]:
    """Photos with windows: 480x352 (2 x 3 windows), 512x512 (3 x 3), and 300x200 (none)."""
    sizes = {"astronaut": (480, 352), "coffee": (512, 512), "chelsea": (300, 200)}
    return [
        Photo(name, Image.fromarray(getattr(data, name)()).resize(size, Image.Resampling.BICUBIC))
        for name, size in sizes.items()
    ]


@pytest.fixture
def store(rn_backbone) -> FeatureStore:
    return FeatureStore(rn_backbone, max_side=None)


def test_views_are_unfolds_windows_row_major_then_the_whole_photo_bilinear():
    cutter = ViewPreprocessor(native_resolution=True, max_side=None)
    photos = torch.randn(2, 3, 480, 610, generator=torch.Generator().manual_seed(0))
    views = list(cutter.views(photos))
    assert cutter.grid((610, 480)) == (3, 4) and len(views) == 2 * 13
    unfolded = torch.nn.Unfold(224, stride=128)(photos).view(2, 3, 224, 224, -1).permute(0, 4, 1, 2, 3)
    whole = F.interpolate(photos, size=(224, 224), mode="bilinear", align_corners=False)
    for k, (i, view) in enumerate(views):
        assert i == k // 13
        expected = whole[i] if k % 13 == 12 else unfolded[i, k % 13]
        assert torch.equal(view, expected)
    assert cutter.grid((300, 200)) == (0, 0) and cutter.view_count((300, 200)) == 1
    assert "whole-photo view only" in cutter.notes((300, 200))[-1] and cutter.notes((480, 352)) == []


def test_magnitude_cue_is_box_cox_of_magnitudes_over_their_unbiased_std():
    raw = torch.randn(3, 64, generator=torch.Generator().manual_seed(2)) * 5
    x = raw.abs().double()
    by_hand = [np.mean(2 * (np.sqrt(row / (row.std(ddof=1) + 1e-6) + 1) - 1)) for row in x.numpy()]
    assert magnitude_cue(raw).double().numpy() == pytest.approx(by_hand, abs=1e-6)


def test_fusion_follows_the_formula_view_by_view(store, big_photos):
    scorer = MACLIP(store, PRESETS["pyiqa"])
    features = scorer.store.image_features(big_photos)
    assert features.shape == (3, 10, store.backbone.embed_dim + 1)  # 7, 10 and 1 views, NaN-padded
    views = scorer.views(features)
    assert views.valid.sum(dim=1).tolist() == [7, 10, 1]
    positive, negative = (
        store.text_features([p.positive for p in scorer.pairs]),
        store.text_features([p.negative for p in scorer.pairs]),
    )
    for i, count in enumerate([7, 10, 1]):
        for v in range(count):
            u, m = features[i, v, :-1], float(features[i, v, -1])
            p = torch.softmax(scorer.temperature * torch.stack([positive @ u, negative @ u]), dim=0)[0]
            c = float(p.mean())
            w_c, w_m = torch.softmax(torch.tensor([1.0 + c - m, 0.6 - c + m]), dim=0).tolist()
            assert float(views.c[i, v]) == pytest.approx(c, abs=1e-6)
            assert (float(views.w_c[i, v]), float(views.w_m[i, v])) == pytest.approx((w_c, w_m), abs=1e-6)
            assert float(views.fused[i, v]) == pytest.approx(w_c * c + w_m * m, abs=1e-6)
    results = scorer.score(big_photos)
    for i, result in enumerate(results):
        count = int(views.valid[i].sum())
        assert result.extras[VIEWS] == count
        assert result.extras[FUSED] == pytest.approx(float(views.fused[i, :count].mean()), abs=1e-6)
        assert result.score == min(1.0, max(0.0, result.extras[FUSED]))
        assert [pair.p for pair in result.pairs] == pytest.approx(views.p[i, :count].mean(dim=0).tolist(), abs=1e-6)
    assert "whole-photo view only" in results[2].notes[-2] and "clipped" in results[2].notes[-1]


def test_together_or_alone_the_same_figures(store, big_photos):
    scorer = MACLIP(store, PRESETS["pyiqa"])
    together = scorer.score(big_photos)
    for photo, result in zip(big_photos, together):
        alone = MACLIP(FeatureStore(store.backbone, max_side=None), PRESETS["pyiqa"]).score([photo])[0]
        assert alone.extras == pytest.approx(result.extras, abs=1e-6)


def test_a_prompt_edit_encodes_no_image_and_builds_share_the_view_cache(store, big_photos):
    spec = ScorerSpec(methods=("CLIP-IQA", MA_CLIP), backbone="test-tiny-rn")
    first = build_scorers(spec, store)[MA_CLIP]
    before = first.score(big_photos)
    views = first.store
    calls, encoded = views.image_encoder_calls, views.views_encoded
    assert encoded == 18 and calls >= 1
    edited = [PromptPair("a crisp photo", "a smeared photo"), *PRESETS["pyiqa"][1:]]
    options = {MA_CLIP: {"pairs": edited}}
    again = build_scorers(ScorerSpec(methods=(MA_CLIP,), backbone="test-tiny-rn", options=options), store)[MA_CLIP]
    after = again.score(big_photos)
    assert again.store is views and views.image_encoder_calls == calls and views.views_encoded == encoded
    assert after[0].pairs[0].positive == "a crisp photo" and after[0].pairs[0].p != before[0].pairs[0].p
    assert [a.pairs[1].p for a in after] == [b.pairs[1].p for b in before]
    assert store.texts_encoded == 12  # the five pairs, then the edited one's two texts, in the shared store


def test_the_pipeline_and_disk_cache_give_the_in_memory_figures(store, big_photos, tmp_path):
    files = []
    for photo in big_photos:
        files.append(tmp_path / f"{photo.name}.png")
        photo.image.save(files[-1])
    expected = MACLIP(store, PRESETS["pyiqa"]).score(big_photos)
    cache = DiskCache(tmp_path / "cache")
    for run in range(2):
        fresh = FeatureStore(store.backbone, max_side=None)
        scorers = build_scorers(ScorerSpec(methods=("CLIP-IQA", MA_CLIP), backbone="test-tiny-rn"), fresh)
        pipeline = Pipeline(list(scorers.values()), PipelineOptions(workers=0, cache=cache, draft=False))
        got = [photo for batch in pipeline.run(files) for photo in batch]
        assert pipeline.counts.decoded == (3 if run == 0 else 0)
        assert ViewStore.over(fresh).image_encoder_calls == (3 if run == 0 else 0)  # one per photo size
        for scores, result in zip(got, expected):
            mine = scores.results[1]
            assert mine.method == MA_CLIP and mine.extras == pytest.approx(result.extras, abs=1e-5)
            assert [p.p for p in mine.pairs] == pytest.approx([p.p for p in result.pairs], abs=1e-5)
            assert mine.notes == result.notes
    assert cache.dropped == 0


def test_a_downsized_photo_is_cut_from_the_pixels_clip_iqa_gets(rn_backbone, big_photos, tmp_path):
    photo = big_photos[1]  # 512x512, downsized to 300x300 by max_side: one window
    path = tmp_path / "coffee.png"
    photo.image.save(path)
    store = FeatureStore(rn_backbone, max_side=300)
    expected = MACLIP(store, PRESETS["pyiqa"]).score([photo])[0]
    scorer = build_scorers(ScorerSpec(methods=(MA_CLIP,), backbone="test-tiny-rn", max_side=300))[MA_CLIP]
    got = next(iter(Pipeline([scorer], PipelineOptions(workers=0)).run([path])))[0].results[0]
    assert expected.extras[VIEWS] == got.extras[VIEWS] == 2 and "resized from 512x512 to 300x300" in got.notes[-2]
    assert got.extras == pytest.approx(expected.extras, abs=1e-6)


def test_disk_rows_of_views_are_checked_record_by_record():
    good = np.concatenate([np.eye(4, dtype=np.float32)[:3], np.full((3, 1), 1.3, np.float32)], axis=1).ravel()
    assert plausible(good, 4, 1) and not plausible(good)
    assert not plausible(good[:-1], 4, 1) and not plausible(good * 2, 4, 1)
    assert not plausible(np.where(np.arange(15) == 4, np.nan, good).astype(np.float32), 4, 1)


def test_a_corrupt_views_row_is_dropped_and_encoded_again(tmp_path):
    cache = DiskCache(tmp_path)
    row = np.concatenate([np.eye(4, dtype=np.float32)[:2], np.ones((2, 1), np.float32)], axis=1).ravel()
    cache.put("m", "views", {"a": row, "b": row[:5]}, 4, 1)
    assert cache.get("m", "views", ["a", "b"], 4, 1)["a"].tolist() == row.tolist() and cache.dropped == 0
    assert cache.get("m", "views", ["b"], 4, 1)["b"].tolist() == row[:5].tolist()  # a photo of one view
    assert cache.get("m", "views", ["a"], 10) == {} and cache.dropped == 1  # read as a plain feature: dropped
    assert cache.get("m", "views", ["a"], 4, 1) == {}


def test_command_line_score_out_filter_and_eval(tmp_path, big_photos, capsys):
    album = tmp_path / "album"
    album.mkdir()
    for photo in big_photos:
        photo.image.save(album / f"{photo.name}.jpg", quality=95)
    for suffix in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"scores.{suffix}"
        assert main(["score", str(album), *TEST, "--method", "clipiqa,maclip", "--out", str(out)]) == EXIT_OK
        assert capsys.readouterr().out.splitlines()[0].split()[:3] == ["rank", "CLIP-IQA", "MA-CLIP"]
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert len(rows) == 3 and all(0 <= float(row["score[MA-CLIP]"]) <= 1 for row in rows)
    assert "p[MA-CLIP: Good image / bad image]" in rows[0] and "p[CLIP-IQA: Good image / bad image]" in rows[0]
    lines = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert all("score[MA-CLIP]" in line for line in lines if "name" in line)
    pq = pytest.importorskip("pyarrow.parquet")
    assert "score[MA-CLIP]" in pq.read_table(tmp_path / "scores.parquet").column_names
    assert main(["filter", str(album), "--threshold", "1.01", *TEST, "--method", "maclip"]) in (0, 1)
    assert "3 of 3 photos score below 1.01" in capsys.readouterr().out
    (album / "labels.csv").write_text("path,score\nastronaut.jpg,1\nchelsea.jpg,2\ncoffee.jpg,3\n")
    assert main(["eval", "--dataset", "csv", "--root", str(album), *TEST, "--method", "maclip"]) == EXIT_OK
    assert "MA-CLIP on csv (3 images): SRCC" in capsys.readouterr().out


def test_calibrate_reads_view_features_through_the_disk_cache(tmp_path, capsys):
    labels = ["--dataset", "csv", "--root", str(EXAMPLES / "labels.csv"), *TEST, "--cache-dir", str(tmp_path)]
    printed = []
    for _ in range(2):  # encoded, then every photo's views from the disk cache: the same figures
        assert main(["calibrate", *labels, "--method", "clipiqa,maclip"]) == EXIT_OK
        printed.append(capsys.readouterr().out)
    assert "MA-CLIP: ROC AUC" in printed[0] and "(64 photos: 40 reject, 24 keep)" in printed[0]
    assert printed[0].count("  pair ") == 10 and printed[1] == printed[0]
    with sqlite3.connect(tmp_path / "features.sqlite") as db:
        views = db.execute("SELECT count(*) FROM features WHERE preprocess LIKE 'views%'").fetchone()[0]
    assert views == 64


def test_ray_rows_name_each_methods_pairs(tmp_path, big_photos):
    pytest.importorskip("pyarrow")
    from iqa.engine.ray_decode import DecodeBatch
    from iqa.engine.ray_engine import NODE_COLUMN, ScoreBatch

    files = []
    for photo in big_photos:
        files.append(tmp_path / f"{photo.name}.png")
        photo.image.save(files[-1])
    spec = ScorerSpec(methods=("CLIP-IQA", MA_CLIP), backbone="test-tiny-rn")
    decoded = DecodeBatch(1024, True)({"bytes": [f.read_bytes() for f in files], "path": [str(f) for f in files]})
    batch = {**decoded.to_pydict(), NODE_COLUMN: ["here"] * len(files)}
    methods = [registry.method(name) for name in spec.methods]
    table = ScoreBatch(spec, methods)({key: np.array(values, dtype=object) for key, values in batch.items()})
    expected = build_scorers(spec)[MA_CLIP].score(big_photos)
    first = PRESETS["pyiqa"][0]
    assert table.column("ma_clip").to_pylist() == pytest.approx([r.score for r in expected], abs=1e-5)
    assert table.column(f"p[MA-CLIP: {first.positive} / {first.negative}]").to_pylist() == pytest.approx(
        [r.pairs[0].p for r in expected], abs=1e-5
    )
    assert f"p[CLIP-IQA: {first.positive} / {first.negative}]" in table.column_names


def test_breakdown_has_each_pair_the_magnitude_and_the_two_weights(store, big_photos):
    result = MACLIP(store, PRESETS["pyiqa"]).score(big_photos[:1])[0]
    parts = registry.method(MA_CLIP).parts(result)
    assert [part.value for part in parts[:5]] == [pair.p for pair in result.pairs]
    assert [part.value for part in parts[5:]] == [result.extras[MAGNITUDE], result.extras[W_C], result.extras[W_M]]
    assert all(part.detail and part.label.startswith("MA-CLIP: ") for part in parts)
    bars = charts.pair_breakdown([result]).data[0]
    assert len(set(bars.y)) == 8 and "#f4a261" in bars.marker.color
    about = registry.method(MA_CLIP).about
    assert "arxiv.org/abs/2511.09948" in about and "$" in about and "Box-Cox" in about


def test_a_vit_backbone_gets_the_same_views_through_its_own_tower(vit_backbone, big_photos):
    scorer = build_scorers(ScorerSpec(methods=(MA_CLIP,), backbone="test-tiny-vit"), FeatureStore(vit_backbone))[
        MA_CLIP
    ]
    results = scorer.score(big_photos)
    assert [r.extras[VIEWS] for r in results] == [7, 10, 1] and all(0 <= r.score <= 1 for r in results)
    assert scorer.store.preprocessor.native_resolution
    assert scorer.store.image_encoder_calls == 3  # a call per photo size


def test_the_view_cache_is_bounded_by_views_not_photos(store, big_photos):
    views = ViewStore(store, max_views=12)
    views.image_features(big_photos[:1])  # 7 views
    views.image_features(big_photos[1:2])  # 10 more: the first photo is dropped
    assert views.missing(big_photos[:2]) == big_photos[:1] and views.views_encoded == 17
    views.image_features(big_photos[2:])  # 1 more: 11 held
    assert views.missing(big_photos) == big_photos[:1]
    views.clear()
    assert views.missing(big_photos) == big_photos


def test_clip_iqa_and_the_views_share_one_decode_and_resize(rn_backbone, tmp_path, big_photos):
    from iqa.photos.decode import DecodeOptions, decode_file

    path = tmp_path / "coffee.png"
    big_photos[1].image.save(path)
    store = FeatureStore(rn_backbone, max_side=300)
    plans = (store.preprocessor.resize_plan(), ViewStore.over(store).preprocessor.resize_plan())
    assert plans[0] == plans[1]
    decoded = decode_file(path, "coffee", DecodeOptions(plans))
    assert decoded.pixels[0] is decoded.pixels[1] and decoded.pixels[0].shape == (3, 300, 300)
