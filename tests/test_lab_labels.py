"""Keep/reject labels: the CSV column, good/ and bad/ folders, and the bundled synthetic set's labels."""

import shutil
from pathlib import Path

import pytest

from iqa.errors import InputError
from iqa.labels.datasets import DatasetFormatError, DatasetLayoutError, load_dataset
from iqa.labels.distortions import make_distorted_set
from iqa.labels.keep import keep_from_level, parse_label, require_labels

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    ("text", "keep"),
    [("keep", True), ("Good", True), ("1", True), ("reject", False), (" BAD ", False), ("0", False), ("", None)],
)
def test_label_spellings(text, keep):
    assert parse_label(text) is keep


def test_a_csv_label_column_is_read_and_a_wrong_word_named(tmp_path):
    for name in ("a", "b", "c"):
        shutil.copy(EXAMPLES / "chelsea.jpg", tmp_path / f"{name}.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,score,label\na.jpg,4,keep\nb.jpg,1,bad\nc.jpg,3,\n")
    assert [item.keep for item in load_dataset("csv", labels)] == [True, False, None]
    labels.write_text("path,score,label\na.jpg,4,maybe\n")
    with pytest.raises(DatasetFormatError, match="row 2: label 'maybe' is neither keep"):
        load_dataset("csv", labels)


def test_good_and_bad_folders(tmp_path):
    (tmp_path / "good").mkdir()
    with pytest.raises(DatasetLayoutError, match="bad not found"):
        load_dataset("folders", tmp_path)
    (tmp_path / "bad").mkdir()
    shutil.copy(EXAMPLES / "coffee.jpg", tmp_path / "good" / "coffee.jpg")
    shutil.copy(EXAMPLES / "coffee_jpeg_L5.jpg", tmp_path / "bad" / "coffee_jpeg_L5.jpg")
    (tmp_path / "bad" / "notes.txt").write_text("not a photo")
    items = load_dataset("folders", tmp_path)
    assert [(item.path.name, item.score, item.keep) for item in items] == [
        ("coffee.jpg", 1.0, True),
        ("coffee_jpeg_L5.jpg", 0.0, False),
    ]


def test_the_bundled_set_is_labelled_by_distortion_strength():
    items = load_dataset("csv", EXAMPLES / "labels.csv")
    assert all(item.keep is keep_from_level(item.level) for item in items)
    assert sum(item.keep for item in items) == 24 and len(items) == 64  # originals and level 1 kept


def test_a_synthesised_set_writes_its_labels(tmp_path):
    from PIL import Image

    make_distorted_set({"grey": Image.new("RGB", (64, 48), (120, 120, 120))}, tmp_path, types=["jpeg"], levels=[1, 4])
    items = load_dataset("csv", tmp_path)
    assert [(item.level, item.keep) for item in items] == [(0, True), (1, True), (4, False)]


def test_missing_labels_are_counted_with_how_to_add_them():
    with pytest.raises(InputError, match="1 of 3 photos have no keep/reject label .*good/ and bad/ folders"):
        require_labels([True, None, False])
