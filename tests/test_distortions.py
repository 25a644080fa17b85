import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from iqa.labels.datasets import LabelledImage, load_csv
from iqa.labels.distortions import (
    DISTORTIONS,
    LEVELS,
    distort,
    label_for_level,
    make_distorted_set,
    task_list,
    write_labels,
)

REQUIRED_TYPES = {
    "gaussian_blur",
    "motion_blur",
    "gaussian_noise",
    "jpeg",
    "over_exposure",
    "under_exposure",
    "contrast_decrease",
    "desaturate",
    "pixelate",
}


def textured_image(width: int = 96, height: int = 64, phase: float = 0.0) -> Image.Image:
    """A colourful mid-grey image with an edge and detail at several scales, not aligned to any
    pixel grid, so every distortion shows."""
    rng = np.random.default_rng(int(phase * 1000))
    fine = ndimage.gaussian_filter(rng.uniform(size=(height, width, 3)), (1.0, 1.0, 0))
    coarse = ndimage.gaussian_filter(rng.uniform(size=(height, width, 3)), (5.0, 5.0, 0))
    y, x = np.mgrid[0:height, 0:width]
    edge = (x * 0.8 + y * 0.45 > width * 0.55)[:, :, None] * np.array([0.15, -0.1, 0.05])
    pixels = 0.5 + 2.0 * (fine - fine.mean()) + 4.0 * (coarse - coarse.mean()) + edge
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))


def as_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def gradient_energy(image: Image.Image) -> float:
    gray = as_float(image).mean(axis=2)
    return float((np.diff(gray, axis=0) ** 2).mean() + (np.diff(gray, axis=1) ** 2).mean())


def chroma(image: Image.Image) -> float:
    pixels = as_float(image)
    return float(np.abs(pixels - pixels.mean(axis=2, keepdims=True)).mean())


def test_table_has_required_types_with_five_strengths():
    assert REQUIRED_TYPES <= set(DISTORTIONS)
    for name, spec in DISTORTIONS.items():
        assert spec.name == name
        assert len(spec.strengths) == 5
        assert spec.parameter


def test_strength_tables_move_towards_worse():
    increasing = ["gaussian_blur", "motion_blur", "gaussian_noise", "over_exposure", "pixelate"]
    decreasing = ["jpeg", "under_exposure", "contrast_decrease", "desaturate"]
    for name in increasing:
        assert np.all(np.diff(DISTORTIONS[name].strengths) > 0), name
    for name in decreasing:
        assert np.all(np.diff(DISTORTIONS[name].strengths) < 0), name


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_each_distortion_keeps_size_and_mode_and_is_deterministic(name):
    image = textured_image()
    first = distort(image, name, 3, seed=7)
    again = distort(image, name, 3, seed=7)
    assert first.size == image.size and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(image))


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_error_to_reference_grows_with_level(name):
    image = textured_image()
    reference = as_float(image)
    errors = [((as_float(distort(image, name, lv, seed=1)) - reference) ** 2).mean() for lv in LEVELS]
    assert np.all(np.diff(errors) > 0), errors


def test_type_specific_effects_are_monotone():
    image = textured_image()

    def series(name, measure):
        return [measure(distort(image, name, lv, seed=2)) for lv in LEVELS]

    def brightness(im):
        return as_float(im).mean()

    def spread(im):
        return as_float(im).std()

    assert np.all(np.diff(series("gaussian_blur", gradient_energy)) < 0)
    assert np.all(np.diff(series("motion_blur", gradient_energy)) < 0)
    assert np.all(np.diff(series("over_exposure", brightness)) > 0)
    assert np.all(np.diff(series("under_exposure", brightness)) < 0)
    assert np.all(np.diff(series("contrast_decrease", spread)) < 0)
    assert np.all(np.diff(series("desaturate", chroma)) < 0)
    assert brightness(distort(image, "over_exposure", 1)) > brightness(image)
    assert brightness(distort(image, "under_exposure", 1)) < brightness(image)


def test_full_desaturation_is_grey():
    grey = np.asarray(distort(textured_image(), "desaturate", 5)).astype(int)
    assert np.abs(grey[:, :, 0] - grey[:, :, 1]).max() <= 1
    assert np.abs(grey[:, :, 1] - grey[:, :, 2]).max() <= 1


def test_pixelate_makes_constant_blocks():
    out = np.asarray(distort(textured_image(96, 64), "pixelate", 5))  # factor 8 -> 12 x 8 cells
    block = out[8:16, 16:24]
    assert (block == block[0, 0]).all()


def test_noise_depends_on_seed_only_in_pattern():
    image = textured_image()
    a = as_float(distort(image, "gaussian_noise", 2, seed=0))
    b = as_float(distort(image, "gaussian_noise", 2, seed=1))
    assert not np.array_equal(a, b)
    reference = as_float(image)
    assert np.std(a - reference) == pytest.approx(np.std(b - reference), rel=0.1)


def test_bad_type_or_level_is_rejected():
    image = textured_image()
    with pytest.raises(ValueError, match="unknown distortion 'fog'"):
        distort(image, "fog", 1)
    for level in (0, 6, 2.5):
        with pytest.raises(ValueError, match="level must be one of"):
            distort(image, "jpeg", level)


def test_label_formula():
    assert label_for_level(0) == 1.0
    assert label_for_level(3) == 0.5
    assert label_for_level(5) == pytest.approx(1 / 6, abs=1e-4)
    labels = [label_for_level(lv) for lv in (0, *LEVELS)]
    assert np.all(np.diff(labels) < 0)
    with pytest.raises(ValueError):
        label_for_level(6)


def test_make_distorted_set_writes_images_and_labels(tmp_path):
    source_path = tmp_path / "src" / "garden.png"
    source_path.parent.mkdir()
    textured_image(phase=1.0).save(source_path)
    out = tmp_path / "set"
    records = make_distorted_set(
        [source_path, textured_image()], out, types=["jpeg", "gaussian_blur"], levels=(1, 3, 5)
    )
    assert len(records) == 2 * (1 + 2 * 3)
    assert {r.ref for r in records} == {"garden", "ref01"}
    for record in records:
        assert record.path.is_file()
        assert record.path.parent == out
        with Image.open(record.path) as written:
            assert written.size == (96, 64)
    references = [r for r in records if r.distortion is None]
    assert [r.score for r in references] == [1.0, 1.0]
    assert all(r.level == 0 for r in references)
    blur = [r for r in records if r.ref == "garden" and r.distortion == "gaussian_blur"]
    assert [r.level for r in blur] == [1, 3, 5]
    assert np.all(np.diff([r.score for r in blur]) < 0)

    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "score", "ref", "distortion", "level", "label"]
    original = {"path": "garden.png", "score": "1.0", "ref": "garden", "distortion": "", "level": "0", "label": "keep"}
    assert rows[0] == original
    assert load_csv(out / "labels.csv") == records


def test_make_distorted_set_is_deterministic(tmp_path):
    sources = {"a": textured_image(), "b": textured_image(phase=2.0)}
    kwargs = dict(types=["gaussian_noise", "motion_blur"], levels=(2, 4), seed=5)
    first = make_distorted_set(sources, tmp_path / "one", **kwargs)
    second = make_distorted_set(sources, tmp_path / "two", **kwargs)
    for a, b in zip(first, second):
        assert a.path.name == b.path.name
        assert a.path.read_bytes() == b.path.read_bytes()
    assert (tmp_path / "one" / "labels.csv").read_text() == (tmp_path / "two" / "labels.csv").read_text()
    other_seed = make_distorted_set(sources, tmp_path / "three", **{**kwargs, "seed": 6})
    assert other_seed[1].path.read_bytes() != first[1].path.read_bytes()


def test_make_distorted_set_jpeg_output_and_max_side(tmp_path):
    records = make_distorted_set(
        {"big": textured_image(200, 100)}, tmp_path, types=["desaturate"], levels=(5,),
        image_format="jpg", max_side=50, include_references=False,
    )  # fmt: skip
    assert [r.path.name for r in records] == ["big_desaturate_L5.jpg"]
    with Image.open(records[0].path) as written:
        assert written.format == "JPEG"
        assert written.size == (50, 25)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(types=["fog"]), "unknown distortion"),
        (dict(levels=(0, 1)), "levels must be among"),
        (dict(image_format="webp"), "image_format"),
    ],
)
def test_make_distorted_set_rejects_bad_options(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_distorted_set([textured_image()], tmp_path, **kwargs)


def test_make_distorted_set_rejects_bad_reference_names(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        make_distorted_set([tmp_path / "x" / "a.png", tmp_path / "y" / "a.png"], tmp_path)
    with pytest.raises(ValueError, match="file name"):
        make_distorted_set({"../escape": textured_image()}, tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        make_distorted_set([], tmp_path)


def test_task_list_groups_by_type_and_skips_references(tmp_path):
    records = make_distorted_set(
        {"a": textured_image(48, 32), "b": textured_image(48, 32, phase=1.0)},
        tmp_path,
        types=["jpeg", "pixelate", "desaturate"],
        levels=(1, 2),
    )
    tasks = task_list(records)
    assert list(tasks) == ["jpeg", "pixelate", "desaturate"]
    for name, members in tasks.items():
        assert len(members) == 2 * 2
        assert {m.distortion for m in members} == {name}
        assert {m.ref for m in members} == {"a", "b"}
    assert sum(len(m) for m in tasks.values()) == len(records) - 2


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_committed_examples_are_a_loadable_labelled_set():
    records = load_csv(EXAMPLES / "labels.csv")
    assert len(records) == 4 * (1 + 5 * 3)
    assert {r.ref for r in records} == {"astronaut", "chelsea", "coffee", "rocket"}
    assert {r.distortion for r in records} == {
        None,
        "gaussian_blur",
        "gaussian_noise",
        "jpeg",
        "over_exposure",
        "under_exposure",
    }
    assert all(r.score == label_for_level(r.level) for r in records)
    assert sum(r.path.stat().st_size for r in records) < 3_000_000
    listed = {r.path.name for r in records}
    assert {p.name for p in EXAMPLES.glob("*.jpg")} == listed


def test_make_examples_reproduces_the_committed_files(tmp_path):
    from examples.make_examples import make_examples

    records = make_examples(tmp_path)
    assert (tmp_path / "labels.csv").read_text() == (EXAMPLES / "labels.csv").read_text()
    for record in records[:6]:
        with Image.open(record.path) as fresh, Image.open(EXAMPLES / record.path.name) as kept:
            # bytes may differ between JPEG library versions; the pixels must not, beyond rounding
            difference = np.abs(as_float(fresh.convert("RGB")) - as_float(kept.convert("RGB")))
            assert difference.mean() < 1 / 255


def test_write_labels_keeps_outside_paths_absolute(tmp_path):
    outside = tmp_path / "elsewhere" / "x.png"
    inside = tmp_path / "set" / "sub" / "y.png"
    (tmp_path / "set").mkdir()
    write_labels(
        [LabelledImage(outside, 0.5, "x", "jpeg", 3), LabelledImage(inside, 1.0)], tmp_path / "set" / "labels.csv"
    )
    lines = (tmp_path / "set" / "labels.csv").read_text().splitlines()
    assert lines[1] == f"{outside.resolve().as_posix()},0.5,x,jpeg,3,"
    assert lines[2] == "sub/y.png,1.0,,,,"
