"""The quality map: window geometry, values against CLIP-IQA of each crop, the cache, the upsampled
map, the chart, the command line and bad input.

The photos are real (scikit-image's cat) with the left half blurred or noisy; the test backbones'
values are meaningless, so the mechanics are tested, not where a real CLIP would see the damage.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from iqa.cli.main import EXIT_INPUT, EXIT_OK, EXIT_WRITE, main
from iqa.clip.features import FeatureStore
from iqa.labels.distortions import distort
from iqa.methods.clipiqa.quality_map import (
    QualityMapError,
    choose_window,
    colour_range,
    map_scorer,
    quality_map,
    window_grid,
)
from iqa.methods.clipiqa.scorer import CLIPIQA
from iqa.methods.prompts import PRESETS, PromptPair
from iqa.names import MAP_WINDOW_LIMIT
from iqa.photos.photo import Photo
from iqa.photos.resample import resize_image
from iqa.report.charts import quality_map_chart, quality_map_figure

PAIRS = [
    PromptPair("a sharp photo", "a blurry photo", weight=3.0),
    PromptPair("a clean photo", "a noisy photo", weight=1.0),
    PromptPair("Good image", "bad image", weight=0.5),
]


def _half_distorted(image: Image.Image, distortion: str) -> Image.Image:
    """The photo with only its left half distorted (level 5)."""
    out = image.copy()
    left = image.crop((0, 0, image.width // 2, image.height))
    out.paste(distort(left, distortion, 5), (0, 0))
    return out


@pytest.fixture(scope="module")
def cat() -> Photo:
    return Photo("chelsea", Image.fromarray(data.chelsea()))  # 451x300


@pytest.fixture(scope="module")
def blurred_cat(cat) -> Photo:
    return Photo("chelsea, left half blurred", _half_distorted(cat.image, "gaussian_blur"))


@pytest.fixture(params=["rn", "vit"])
def backbone(request, rn_backbone, vit_backbone):
    return rn_backbone if request.param == "rn" else vit_backbone


def _covering(boxes, x, y):
    return [i for i, (left, top, right, bottom) in enumerate(boxes) if left <= x < right and top <= y < bottom]


@pytest.mark.parametrize(
    "size, window, stride",
    [((451, 300), 128, 64), ((451, 300), 224, 112), ((1024, 768), 200, 60), ((300, 300), 300, 150), ((640, 65), 64, 7)],
)
def test_windows_tile_the_photo_with_the_stated_overlap_and_stay_inside(size, window, stride):
    rows, cols, boxes = window_grid(size, window, stride)
    assert len(boxes) == rows * cols
    assert all(right - left == window and bottom - top == window for left, top, right, bottom in boxes)
    assert all(0 <= left and 0 <= top and right <= size[0] and bottom <= size[1] for left, top, right, bottom in boxes)
    xs = sorted({box[0] for box in boxes})
    ys = sorted({box[1] for box in boxes})
    assert (len(xs), len(ys)) == (cols, rows)
    for starts, length in ((xs, size[0]), (ys, size[1])):
        assert starts[0] == 0 and starts[-1] + window == length  # first at the edge, last at the other
        steps = np.diff(starts)
        assert all(0 < step <= stride for step in steps)  # overlap of at least window - stride
        if len(steps):
            assert max(steps) - min(steps) <= 1  # evenly spaced
    covered = np.zeros(size[::-1], dtype=bool)
    for left, top, right, bottom in boxes:
        covered[top:bottom, left:right] = True
    assert covered.all()


def test_default_window_is_a_quarter_of_the_short_side_and_grows_to_stay_within_max_windows():
    assert choose_window((451, 300), smallest=128) == (128, 64)  # 75 px would be below the smallest
    assert choose_window((1200, 1200), smallest=128) == (300, 150)  # 7x7 windows
    # at the app's size and on a 12 MP photo the window grows until at most 64 windows are left
    for size in ((1024, 768), (4000, 3000), (3000, 4000), (5000, 400)):
        window, stride = choose_window(size, smallest=224)
        rows, cols, _ = window_grid(size, window, stride)
        assert rows * cols <= 64 and window >= min(size) // 4 and stride == window // 2
    window, stride = choose_window((1024, 768), smallest=128, max_windows=10)
    rows, cols, _ = window_grid((1024, 768), window, stride)
    assert rows * cols <= 10


def test_each_window_value_equals_clipiqa_of_the_crop(backbone, blurred_cat):
    """Per-window p per pair and the overall equal CLIP-IQA's scores of the crop, computed directly."""
    qmap = quality_map(blurred_cat, CLIPIQA(FeatureStore(backbone), PAIRS))
    assert qmap.cut_size == blurred_cat.image.size  # within max_side: windows at the photo's own scale
    direct = CLIPIQA(FeatureStore(backbone), PAIRS)  # a fresh store: one crop at a time, no shared cache
    crops = [Photo(f"crop {i}", blurred_cat.image.crop(box)) for i, box in enumerate(qmap.boxes)]
    results = direct.score(crops)
    p = qmap.p.reshape(-1, len(PAIRS))
    for i, result in enumerate(results):
        assert qmap.overall.reshape(-1)[i] == pytest.approx(result.score, abs=1e-6)
        assert p[i] == pytest.approx([pair.p for pair in result.pairs], abs=1e-6)


def test_overall_is_the_weighted_mean_of_the_pairs(rn_backbone, blurred_cat):
    qmap = quality_map(blurred_cat, CLIPIQA(FeatureStore(rn_backbone), PAIRS))
    weights = np.array([pair.weight for pair in PAIRS])
    assert qmap.overall == pytest.approx((qmap.p * weights).sum(axis=2) / weights.sum(), abs=1e-7)
    assert not np.allclose(qmap.overall, qmap.p.mean(axis=2))  # the weights matter here
    for j in range(len(PAIRS)):
        assert np.array_equal(qmap.values(j), qmap.p[:, :, j])


def test_a_prompt_edit_reuses_the_cached_window_features(rn_backbone, blurred_cat, cat):
    store = FeatureStore(rn_backbone)
    first = quality_map(blurred_cat, map_scorer(store, PAIRS))
    assert store.images_encoded == first.rows * first.cols
    assert store.image_encoder_calls == -(-first.rows * first.cols // store.batch_size)  # in batches
    image_calls, text_calls = store.image_encoder_calls, store.text_encoder_calls
    edited = [PAIRS[0], PromptPair("a crisp photo", "a grainy photo"), PAIRS[2]]
    second = quality_map(blurred_cat, map_scorer(store, edited, temperature=50))
    assert store.image_encoder_calls == image_calls  # no image encoded again
    assert store.text_encoder_calls == text_calls + 1  # the edited pair's two texts, in one batch
    assert second.boxes == first.boxes
    assert not np.allclose(second.p[:, :, 0], first.p[:, :, 0])  # the temperature changed...
    # ...and at the first call's temperature an unedited pair gives the very same numbers
    third = quality_map(blurred_cat, map_scorer(store, edited))
    assert np.array_equal(third.p[:, :, 0], first.p[:, :, 0]) and store.image_encoder_calls == image_calls
    # a different photo (the undistorted one) is never served the blurred photo's window features
    quality_map(cat, map_scorer(store, PAIRS))
    assert store.images_encoded == 2 * first.rows * first.cols


def test_only_windows_touching_the_distorted_half_change(rn_backbone, cat):
    """Noise on the left half: windows entirely in the right half keep the clean photo's values."""
    noisy = Photo("chelsea, left half noisy", _half_distorted(cat.image, "gaussian_noise"))
    store = FeatureStore(rn_backbone)
    clean_map, noisy_map = quality_map(cat, CLIPIQA(store, PAIRS)), quality_map(noisy, CLIPIQA(store, PAIRS))
    half = cat.image.width // 2
    clean, changed = clean_map.overall.reshape(-1), noisy_map.overall.reshape(-1)
    right = [i for i, box in enumerate(clean_map.boxes) if box[0] >= half]
    touching = [i for i, box in enumerate(clean_map.boxes) if box[0] < half]
    assert right and touching
    assert clean[right] == pytest.approx(changed[right], abs=1e-6)
    assert all(abs(clean[i] - changed[i]) > 1e-6 for i in touching)


def test_upsampled_map_has_the_photo_size_and_averages_overlaps(backbone, blurred_cat):
    qmap = quality_map(blurred_cat, CLIPIQA(FeatureStore(backbone), PAIRS))
    for pair in (None, 1):
        full = qmap.upsample(pair)
        assert full.shape == (blurred_cat.image.height, blurred_cat.image.width)
        flat = qmap.values(pair).reshape(-1)
        rng = np.random.default_rng(0)
        points = [(0, 0), (qmap.size[0] - 1, qmap.size[1] - 1), *rng.integers(0, qmap.size, size=(200, 2))]
        overlapped = 0
        for x, y in points:
            covering = _covering(qmap.boxes, x, y)
            overlapped += len(covering) > 1
            assert full[y, x] == pytest.approx(np.mean(flat[covering]), abs=1e-6)
        assert overlapped > 100  # at half-window stride most pixels lie under several windows
        small = qmap.upsample(pair, size=(226, 150))  # for display: no full-size array
        assert small.shape == (150, 226)
        assert small[::10, ::10] == pytest.approx(full[::20, ::20][:15, : small[::10, ::10].shape[1]], abs=1e-6)


def test_native_resolution_cuts_windows_from_the_photo_as_the_scorer_sees_it(rn_backbone, blurred_cat):
    """A photo beyond max_side is downsized first (as scoring does); boxes come back in photo pixels."""
    store = FeatureStore(rn_backbone, max_side=256)
    qmap = quality_map(blurred_cat, CLIPIQA(store, PAIRS))
    assert qmap.cut_size == store.preprocessor.target_size(blurred_cat.image.size) == (256, 170)
    assert qmap.window == 128 and qmap.size == blurred_cat.image.size
    assert max(box[2] for box in qmap.boxes) == 451 and max(box[3] for box in qmap.boxes) == 300
    assert qmap.upsample().shape == (300, 451)
    resized = resize_image(blurred_cat.image, qmap.cut_size)  # as the scorer downsizes
    _, _, cut_boxes = window_grid(qmap.cut_size, qmap.window, qmap.stride)
    direct = CLIPIQA(FeatureStore(rn_backbone, max_side=256), PAIRS).score([Photo("w", resized.crop(cut_boxes[-1]))])
    assert qmap.overall.reshape(-1)[-1] == pytest.approx(direct[0].score, abs=1e-6)


def test_vit_windows_go_through_the_model_transform_at_its_input_size(vit_backbone, blurred_cat):
    qmap = quality_map(blurred_cat, CLIPIQA(FeatureStore(vit_backbone), PAIRS))
    assert qmap.window == vit_backbone.image_size == 224  # no window smaller than the input size
    assert (qmap.rows, qmap.cols) == (2, 4)


def test_chart_overlays_the_map_on_the_photo_in_light_and_dark(rn_backbone, blurred_cat):
    scorer = CLIPIQA(FeatureStore(rn_backbone), PAIRS)
    figure, qmap = quality_map_figure(blurred_cat, scorer)
    image, heat = figure.data
    assert image.type == "image" and image.source.startswith("data:image/jpeg;base64,")
    assert heat.type == "heatmap" and 0 < heat.opacity < 1
    assert heat.colorbar.title.text == "p(positive), overall"
    assert len(heat.x) == len(np.unique([e for b in qmap.boxes for e in (b[0], b[2])]))
    assert np.allclose(np.asarray(heat.z), qmap.cells()[2])
    assert "window x 0-128, y 0-128: " in heat.text[0][0] and "mean of 1 window(s)" in heat.text[0][0]
    assert "test backbone: meaningless score" in figure.layout.title.text
    low, high = colour_range(qmap)
    assert f"colours: this photo's own range, {low:.3f} to {high:.3f}<" in figure.layout.title.text
    assert figure.layout.yaxis.range == (300, 0) and figure.layout.yaxis.scaleanchor == "x"
    dark = quality_map_chart(qmap, blurred_cat.image, pair=0, dark=True)
    assert dark.data[1].colorbar.title.text == "p(a sharp photo)"
    assert np.allclose(np.asarray(dark.data[1].z), qmap.cells(0)[2])
    light_bg = figure.layout.template.layout.paper_bgcolor
    dark_bg = dark.layout.template.layout.paper_bgcolor
    assert light_bg == "white" and dark_bg != light_bg


def test_bad_input_gets_a_clear_message(rn_backbone, vit_backbone, cat):
    store = FeatureStore(rn_backbone)
    tiny = Photo("tiny", cat.image.resize((100, 80)))
    with pytest.raises(QualityMapError, match=r"^tiny: 100x80 px is smaller than one 128 px window"):
        quality_map(tiny, CLIPIQA(store, PAIRS))
    with pytest.raises(QualityMapError, match=r"smaller than one 224 px window"):
        quality_map(Photo("small", cat.image.resize((300, 200))), CLIPIQA(FeatureStore(vit_backbone), PAIRS))
    with pytest.raises(QualityMapError, match="needs at least one prompt pair"):
        map_scorer(store, [])
    with pytest.raises(QualityMapError, match=r"window 400 px does not fit.*short side \(300 px\)"):
        quality_map(cat, CLIPIQA(store, PAIRS), window=400)
    with pytest.raises(QualityMapError, match=r"exceed max_windows=8: use a larger window or stride"):
        quality_map(cat, CLIPIQA(store, PAIRS), window=100, stride=20, max_windows=8)
    qmap = quality_map(cat, CLIPIQA(store, PAIRS))
    with pytest.raises(QualityMapError, match=r"pair 4 does not exist: the map has 3 pair\(s\)"):
        qmap.values(3)
    assert store.images_encoded == qmap.rows * qmap.cols  # the refused maps encoded nothing


@pytest.fixture
def cat_file(tmp_path, blurred_cat):
    path = tmp_path / "cat.png"
    blurred_cat.image.save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".html", ".json"])
def test_cli_writes_each_output_format(cat_file, tmp_path, capsys, rn_backbone, suffix):
    out = tmp_path / f"map{suffix}"
    code = main(["map", str(cat_file), "--backbone", "test-tiny-rn", "--pairs", "seed", "--out", str(out)])
    assert code == EXIT_OK
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{cat_file}: p(positive), overall on 4x7 windows of 128 px, stride 64"
    grid = [[float(v) for v in line.split()] for line in printed[2:]]
    expected = quality_map(
        Photo(str(cat_file), Image.open(cat_file).convert("RGB")),
        map_scorer(FeatureStore(rn_backbone), PRESETS["seed"]),
    )
    assert np.allclose(grid, expected.overall, atol=5e-5)
    if suffix == ".json":
        written = json.loads(out.read_text())
        assert (written["rows"], written["cols"], len(written["windows"])) == (4, 7, 28)
        assert written["windows"][5]["box"] == list(expected.boxes[5])
        assert written["windows"][5]["overall"] == pytest.approx(float(expected.overall.reshape(-1)[5]), abs=1e-6)
        assert len(written["windows"][5]["p"]) == 3 and written["pairs"][0]["positive"] == "a beautiful photo"
    elif suffix == ".png":
        with Image.open(out) as image:
            assert image.format == "PNG" and image.width > 451 and image.height == 300
    else:
        html = out.read_text()
        assert "plotly" in html and "Quality map of" in html and "p(positive), overall" in html


def test_cli_map_of_one_pair_and_bad_input(cat_file, tmp_path, capsys):
    assert main(["map", str(cat_file), "--backbone", "test-tiny-rn", "--pairs", "seed", "--pair", "3"]) == EXIT_OK
    assert capsys.readouterr().out.startswith(f"{cat_file}: p(a sharp photo) on 4x7 windows")
    small = tmp_path / "small.png"
    Image.new("RGB", (90, 60), "grey").save(small)
    cases = [
        (["map", str(small)], "small.png: 90x60 px (seen by the scorer at 96x64) is smaller than one 128 px window"),
        (["map", str(cat_file), "--out", str(tmp_path / "map.gif")], "the file name must end in .png, .html, .json"),
        (["map", str(cat_file), "--pairs", "seed", "--pair", "4"], "pair 4 does not exist: the map has 3 pair(s)"),
        (["map", str(tmp_path / "missing.png")], "missing.png"),
    ]
    for argv, message in cases:
        assert main([*argv, "--backbone", "test-tiny-rn"]) == EXIT_INPUT
        err = capsys.readouterr().err
        assert message in err and err.count("error:") == 1
    unwritable = tmp_path / "no-such-folder" / "map.json"
    assert main(["map", str(cat_file), "--backbone", "test-tiny-rn", "--out", str(unwritable)]) == EXIT_WRITE
    assert f"could not write {unwritable}" in capsys.readouterr().err


def test_a_map_of_64_px_windows_at_stride_1_is_bounded(cat_file, tmp_path, capsys):
    argv = ["map", str(cat_file), "--backbone", "test-tiny-rn", "--window", "64", "--stride", "1"]
    assert main([*argv, "--max-windows", "100000000"]) == EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"max_windows must be between 1 and {MAP_WINDOW_LIMIT}, got 100000000")
    assert main([*argv, "--max-windows", str(MAP_WINDOW_LIMIT)]) == EXIT_INPUT  # 451x300: 91,956 windows
    assert "91956 windows of 64 px at stride 1 px exceed max_windows=4096" in capsys.readouterr().err
    strip = tmp_path / "strip.png"
    Image.fromarray(data.chelsea()).crop((0, 0, 200, 80)).save(strip)  # 137 x 17 = 2,329 windows
    assert (
        main(
            [
                "map",
                str(strip),
                "--backbone",
                "test-tiny-rn",
                "--window",
                "64",
                "--stride",
                "1",
                "--max-windows",
                "4096",
            ]
        )
        == EXIT_OK
    )
    assert "on 17x137 windows" in capsys.readouterr().out


def test_windows_are_cut_and_encoded_a_batch_at_a_time(rn_backbone, cat, monkeypatch):
    store = FeatureStore(rn_backbone, batch_size=8)
    sizes: list[int] = []
    encode = store.image_features

    def counting(photos, progress=None):
        sizes.append(len(photos))
        return encode(photos, progress)

    monkeypatch.setattr(store, "image_features", counting)
    qmap = quality_map(cat, CLIPIQA(store, PRESETS["seed"]), window=128, stride=16, max_windows=1000)
    assert qmap.rows * qmap.cols == sum(sizes) > 8 and max(sizes) == 8
    whole = CLIPIQA(FeatureStore(rn_backbone), PRESETS["seed"])
    assert np.allclose(qmap.overall, quality_map(cat, whole, window=128, stride=16, max_windows=1000).overall)
