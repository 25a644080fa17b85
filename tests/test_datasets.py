import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from openpyxl import Workbook
from PIL import Image
from scipy.io import loadmat, savemat

from iqa.labels.datasets import (
    DATASETS,
    LAYOUTS,
    SCORE_RANGES,
    DatasetFormatError,
    DatasetLayoutError,
    LabelledImage,
    load_csv,
    load_dataset,
    load_kadid10k,
    load_koniq10k,
    load_livec,
    load_spaq,
    load_tid2013,
    normalize_scores,
    split_indices,
)

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"


def write_image(path: Path, value: int = 128) -> None:
    """An 8 x 8 image in the format the file name asks for (PNG, BMP or JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 255 - value, 60)).save(path)


def copy_fixture(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    return root


# ---- KonIQ-10k ---------------------------------------------------------------------------------

KONIQ_NAMES = ["10004473376.jpg", "10007357496.jpg", "10007903636.jpg", "1000244934.jpg"]


def make_koniq(tmp_path: Path, folders=("1024x768",)) -> Path:
    root = copy_fixture("koniq10k", tmp_path)
    for folder in folders:
        for name in KONIQ_NAMES:
            write_image(root / folder / name)
    return root


def test_koniq10k_reads_mos_and_finds_images(tmp_path):
    root = make_koniq(tmp_path)
    items = load_koniq10k(root)
    assert [i.path for i in items] == [root / "1024x768" / n for n in KONIQ_NAMES]
    assert [i.score for i in items] == pytest.approx([3.828571429, 3.479166667, 3.87755102, 3.272727273])
    assert all(i.ref is None and i.distortion is None and i.level is None for i in items)


def test_koniq10k_half_size_layout_and_zscore(tmp_path):
    root = make_koniq(tmp_path, folders=("512x384",))
    items = load_koniq10k(root, score_column="MOS_zscore")
    assert items[0].path == root / "512x384" / KONIQ_NAMES[0]
    assert items[0].score == pytest.approx(77.38356662)


def test_koniq10k_prefers_full_size_unless_asked(tmp_path):
    root = make_koniq(tmp_path, folders=("1024x768", "512x384"))
    assert load_koniq10k(root)[0].path.parent.name == "1024x768"
    assert load_koniq10k(root, resolution="512x384")[0].path.parent.name == "512x384"
    with pytest.raises(ValueError, match="resolution must be one of"):
        load_koniq10k(root, resolution="256x192")


def test_koniq10k_missing_pieces_are_named(tmp_path):
    root = copy_fixture("koniq10k", tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"1024x768/ or 512x384/ not found") as error:
        load_koniq10k(root)
    assert LAYOUTS["koniq10k"] in str(error.value)
    (root / "koniq10k_scores_and_distributions.csv").unlink()
    with pytest.raises(DatasetLayoutError, match="koniq10k_scores_and_distributions.csv not found"):
        load_koniq10k(root)


def test_koniq10k_missing_images_are_reported(tmp_path):
    root = make_koniq(tmp_path)
    (root / "1024x768" / KONIQ_NAMES[1]).unlink()
    with pytest.raises(DatasetLayoutError, match=r"1 of 4 images .* missing, e\.g\. .*10007357496"):
        load_koniq10k(root)


def test_koniq10k_wrong_columns(tmp_path):
    root = make_koniq(tmp_path)
    with pytest.raises(DatasetFormatError, match=r"lacks column\(s\) \['MOS_raw'\]"):
        load_koniq10k(root, score_column="MOS_raw")


# ---- LIVE Challenge ----------------------------------------------------------------------------

LIVEC_TRAINING = [f"t{i}.bmp" for i in range(1, 8)]
LIVEC_TEST = ["1000.JPG", "1001.JPG", "1002.bmp"]


def make_livec(tmp_path: Path) -> Path:
    """Mimics ChallengeDB_release: names as an N x 1 MATLAB cell array, MOS as a 1 x N row."""
    root = tmp_path / "ChallengeDB_release"
    names = LIVEC_TRAINING + LIVEC_TEST
    cell = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cell[i, 0] = np.array([name])
    (root / "Data").mkdir(parents=True)
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    mos = np.arange(len(names), dtype=np.float64)[None, :] * 5.0 + 20.0
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": mos})
    for name in LIVEC_TRAINING:
        write_image(root / "Images" / "trainingImages" / name)
    for name in LIVEC_TEST:
        write_image(root / "Images" / name)
    return root


def test_livec_fixture_has_the_published_mat_structure(tmp_path):
    root = make_livec(tmp_path)
    names = loadmat(root / "Data" / "AllImages_release.mat")["AllImages_release"]
    assert names.shape == (10, 1) and names.dtype == object
    assert names[7][0][0] == "1000.JPG"  # how public loaders index it
    assert loadmat(root / "Data" / "AllMOS_release.mat")["AllMOS_release"].shape == (1, 10)


def test_livec_drops_the_seven_training_images(tmp_path):
    root = make_livec(tmp_path)
    items = load_livec(root)
    assert [i.path for i in items] == [root / "Images" / n for n in LIVEC_TEST]
    assert [i.score for i in items] == [55.0, 60.0, 65.0]


def test_livec_can_keep_training_images(tmp_path):
    root = make_livec(tmp_path)
    items = load_livec(root, drop_training=False)
    assert len(items) == 10
    assert items[0].path == root / "Images" / "trainingImages" / "t1.bmp"
    assert items[0].score == 20.0


def test_livec_errors(tmp_path):
    root = make_livec(tmp_path)
    shutil.rmtree(root / "Images")
    with pytest.raises(DatasetLayoutError, match="livec: Images not found"):
        load_livec(root)
    (root / "Data" / "AllMOS_release.mat").unlink()
    with pytest.raises(DatasetLayoutError, match="AllMOS_release.mat not found"):
        load_livec(root)


def test_livec_length_mismatch(tmp_path):
    root = make_livec(tmp_path)
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.ones((1, 4))})
    with pytest.raises(DatasetFormatError, match="lists 10 images but .* has 4 scores"):
        load_livec(root)


# ---- SPAQ --------------------------------------------------------------------------------------

SPAQ_ROWS = [("00001.jpg", 42.5), ("00002.jpg", 73.0), ("00003.jpg", 10.25)]


def make_spaq(tmp_path: Path, in_annotations: bool = True) -> Path:
    root = tmp_path / "SPAQ"
    sheet_dir = root / "Annotations" if in_annotations else root
    sheet_dir.mkdir(parents=True)
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"])
    for name, mos in SPAQ_ROWS:
        sheet.append([name, mos, 50, 50, 50, 50, 50])
    workbook.save(sheet_dir / "MOS and Image attribute scores.xlsx")
    for name, _ in SPAQ_ROWS:
        write_image(root / "TestImage" / name)
    return root


@pytest.mark.parametrize("in_annotations", [True, False])
def test_spaq_reads_the_spreadsheet(tmp_path, in_annotations):
    root = make_spaq(tmp_path, in_annotations)
    items = load_spaq(root)
    assert [(i.path, i.score) for i in items] == [(root / "TestImage" / n, m) for n, m in SPAQ_ROWS]


def test_spaq_errors(tmp_path):
    root = make_spaq(tmp_path)
    (root / "TestImage" / "00002.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match="1 of 3 images"):
        load_spaq(root)
    (root / "Annotations" / "MOS and Image attribute scores.xlsx").unlink()
    with pytest.raises(DatasetLayoutError, match="MOS and Image attribute scores.xlsx not found"):
        load_spaq(root)


def test_spaq_wrong_header(tmp_path):
    root = tmp_path / "SPAQ"
    (root / "TestImage").mkdir(parents=True)
    workbook = Workbook()
    workbook.active.append(["name", "score"])
    workbook.save(root / "MOS and Image attribute scores.xlsx")
    with pytest.raises(DatasetFormatError, match="lacks column"):
        load_spaq(root)


# ---- KADID-10k ---------------------------------------------------------------------------------


def make_kadid(tmp_path: Path) -> Path:
    root = copy_fixture("kadid10k", tmp_path)
    with open(root / "dmos.csv", newline="") as f:
        for row in csv.DictReader(f):
            write_image(root / "images" / row["dist_img"])
            write_image(root / "images" / row["ref_img"])
    return root


def test_kadid10k_parses_type_and_level_from_names(tmp_path):
    root = make_kadid(tmp_path)
    items = load_kadid10k(root)
    assert len(items) == 6
    first, last = items[0], items[-1]
    assert first == LabelledImage(root / "images" / "I01_01_01.png", 4.57, "I01", "kadid10k:01", 1)
    assert (last.ref, last.distortion, last.level, last.score) == ("I02", "kadid10k:03", 5, 1.27)


def test_kadid10k_errors(tmp_path):
    root = make_kadid(tmp_path)
    text = (root / "dmos.csv").read_text().replace("I02_03_05.png", "blurry.png")
    (root / "dmos.csv").write_text(text)
    with pytest.raises(DatasetFormatError, match="row 7: 'blurry.png' is not named like"):
        load_kadid10k(root)
    shutil.rmtree(root / "images")
    with pytest.raises(DatasetLayoutError, match="images not found"):
        load_kadid10k(root)


# ---- TID2013 -----------------------------------------------------------------------------------


def make_tid(tmp_path: Path) -> Path:
    root = copy_fixture("tid2013", tmp_path)
    for line in (root / "mos_with_names.txt").read_text().splitlines():
        name = line.split()[1]
        # some copies store upper-case names on disk; the names file stays lower-case
        on_disk = name.upper() if name.startswith("i25") else name
        write_image(root / "distorted_images" / on_disk)
    return root


def test_tid2013_parses_names_and_matches_case_insensitively(tmp_path):
    root = make_tid(tmp_path)
    items = load_tid2013(root)
    assert [i.score for i in items] == pytest.approx([5.51429, 5.56757, 4.94444, 4.37838, 3.85714])
    assert items[2] == LabelledImage(root / "distorted_images" / "i01_08_3.bmp", 4.94444, "I01", "tid2013:08", 3)
    assert items[4].path == root / "distorted_images" / "I25_17_4.BMP"
    assert (items[4].ref, items[4].distortion, items[4].level) == ("I25", "tid2013:17", 4)


def test_tid2013_windows_line_endings(tmp_path):
    root = make_tid(tmp_path)
    names = root / "mos_with_names.txt"
    names.write_bytes(names.read_bytes().replace(b"\n", b"\r\n"))
    assert len(load_tid2013(root)) == 5


def test_tid2013_bad_line(tmp_path):
    root = make_tid(tmp_path)
    with open(root / "mos_with_names.txt", "a") as f:
        f.write("4.1\n")
    with pytest.raises(DatasetFormatError, match="line 6: expected 'MOS i01_01_1.bmp'"):
        load_tid2013(root)


def test_tid2013_missing_names_file(tmp_path):
    with pytest.raises(DatasetLayoutError, match="mos_with_names.txt not found") as error:
        load_tid2013(tmp_path)
    assert "distorted_images/" in str(error.value)


# ---- plain CSV and dispatcher ------------------------------------------------------------------


def test_load_csv_resolves_relative_paths(tmp_path):
    write_image(tmp_path / "photos" / "a.png")
    write_image(tmp_path / "photos" / "b.jpg")
    (tmp_path / "scores.csv").write_text("path,score\nphotos/a.png,3.5\nphotos/b.jpg,1\n")
    items = load_csv(tmp_path / "scores.csv")
    assert items == [
        LabelledImage((tmp_path / "photos" / "a.png").resolve(), 3.5),
        LabelledImage((tmp_path / "photos" / "b.jpg").resolve(), 1.0),
    ]


def test_load_csv_optional_columns_and_folder_argument(tmp_path):
    write_image(tmp_path / "r.png")
    write_image(tmp_path / "r_jpeg_L2.png")
    (tmp_path / "labels.csv").write_text(
        "path,score,ref,distortion,level\nr.png,1.0,r,,0\nr_jpeg_L2.png,0.6667,r,jpeg,2\n"
    )
    items = load_csv(tmp_path)
    assert items[0].distortion is None and items[0].level == 0
    assert (items[1].ref, items[1].distortion, items[1].level) == ("r", "jpeg", 2)


def test_load_csv_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="labels file .*labels.csv not found"):
        load_csv(tmp_path)
    (tmp_path / "bad.csv").write_text("file,mos\na.png,1\n")
    with pytest.raises(DatasetFormatError, match=r"lacks column\(s\) \['path', 'score'\]"):
        load_csv(tmp_path / "bad.csv")
    write_image(tmp_path / "a.png")
    (tmp_path / "text.csv").write_text("path,score\na.png,good\n")
    with pytest.raises(DatasetFormatError, match="row 2: score 'good' is not a number"):
        load_csv(tmp_path / "text.csv")


def test_load_dataset_dispatches(tmp_path):
    assert set(DATASETS) == {"koniq10k", "livec", "spaq", "kadid10k", "tid2013", "csv", "folders"}
    assert set(SCORE_RANGES) == set(DATASETS) - {"csv"}
    root = make_kadid(tmp_path)
    assert load_dataset("KADID-10k", root) == load_kadid10k(root)
    livec = make_livec(tmp_path)
    assert len(load_dataset("livec", livec, drop_training=False)) == 10
    with pytest.raises(ValueError, match="unknown dataset 'live'; known: koniq10k"):
        load_dataset("live", tmp_path)


# ---- helpers for training ----------------------------------------------------------------------


def test_normalize_scores():
    np.testing.assert_allclose(normalize_scores([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(normalize_scores([2.0, 4.0], low=1.0, high=5.0), [0.25, 0.75])
    with pytest.raises(ValueError, match="all scores equal"):
        normalize_scores([3.0, 3.0])
    with pytest.raises(ValueError, match="NaN"):
        normalize_scores([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        normalize_scores([])


def test_split_indices_is_a_reproducible_partition():
    train, test = split_indices(50, 0.8, seed=3)
    assert len(train) == 40 and len(test) == 10
    assert sorted(train + test) == list(range(50))
    assert (train, test) == split_indices(50, 0.8, seed=3)
    assert train != split_indices(50, 0.8, seed=4)[0]


def test_split_indices_keeps_groups_together():
    groups = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]
    train, test = split_indices(len(groups), 0.6, seed=1, groups=groups)
    assert len(train) == 6 and len(test) == 4
    assert {groups[i] for i in train}.isdisjoint({groups[i] for i in test})


def test_split_indices_rejects_bad_arguments():
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="strictly between"):
            split_indices(10, fraction)
    with pytest.raises(ValueError, match="at least 2 items"):
        split_indices(1)
    with pytest.raises(ValueError, match="at least 2 groups"):
        split_indices(3, groups=["x", "x", "x"])
    with pytest.raises(ValueError, match="groups has 2 entries"):
        split_indices(3, groups=["x", "y"])
    train, test = split_indices(2, 0.99)
    assert len(train) == 1 and len(test) == 1
