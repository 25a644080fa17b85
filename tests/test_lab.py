"""Prompt design on a labelled set: features from the disk cache, `load_server_dataset`, `python -m iqa lab`."""

import shutil
from pathlib import Path

import pytest
import torch

from iqa.cli.main import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, main
from iqa.clip.features import FeatureStore
from iqa.engine.disk_cache import DiskCache
from iqa.engine.file_features import bytes_digest, file_digest, file_features
from iqa.errors import InputError, UsageError
from iqa.lab.prompt_lab import LabelledPhotos, load_server_dataset, rank_pairs
from iqa.methods.prompts import PRESETS, PromptPair
from iqa.photos.photo import open_photo

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = ["astronaut", "chelsea", "coffee", "rocket"]
KINDS = [("", 5.0), ("_gaussian_blur_L3", 3.0), ("_jpeg_L5", 1.5)]
TEST = ["--backbone", "test-tiny-rn"]


def write_koniq(root: Path, broken: bool = True) -> Path:
    """A KonIQ-10k layout of 12 bundled photos (and a text file named .jpg), MOS favouring originals."""
    folder = root / "1024x768"
    folder.mkdir(parents=True)
    rows = ['"image_name","c1","MOS","SD"']
    for name in NAMES:
        for suffix, mos in KINDS:
            shutil.copy(EXAMPLES / f"{name}{suffix}.jpg", folder / f"{name}{suffix}.jpg")
            rows.append(f'"{name}{suffix}.jpg",0,{mos},0.5')
    if broken:
        (folder / "notes.jpg").write_text("not a photo")
        rows.append('"notes.jpg",0,2.0,0.5')
    (root / "koniq10k_scores_and_distributions.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def koniq(tmp_path):
    return write_koniq(tmp_path / "koniq")


def test_server_dataset_ranks_as_the_photos_themselves_do(rn_backbone, koniq, tmp_path):
    store = FeatureStore(rn_backbone)
    labelled = load_server_dataset(f"koniq10k:{koniq}", store, DiskCache(tmp_path / "cache"))
    assert len(labelled.scores) == 12 and labelled.encoded == 12 and labelled.from_cache == 0
    assert len(labelled.skipped) == 1 and "notes.jpg" in labelled.skipped[0] and "text file" in labelled.skipped[0]
    photos = [open_photo(name) for name in labelled.names]
    direct = rank_pairs(FeatureStore(rn_backbone), PRESETS["pyiqa"], LabelledPhotos(photos, labelled.scores))
    report = rank_pairs(store, PRESETS["pyiqa"], labelled)
    assert [r.pair for r in report.ranks] == [r.pair for r in direct.ranks]
    assert [r.srcc for r in report.ranks] == pytest.approx([r.srcc for r in direct.ranks])
    assert [r.plcc for r in report.ranks] == pytest.approx([r.plcc for r in direct.ranks])
    assert report.chosen_srcc == pytest.approx(direct.chosen_srcc) and report.n == 12


def test_a_second_run_reads_every_feature_from_the_disk_cache(rn_backbone, koniq, tmp_path):
    cache_dir = tmp_path / "cache"
    first = load_server_dataset(f"koniq10k:{koniq}", FeatureStore(rn_backbone), DiskCache(cache_dir))
    fresh = FeatureStore(rn_backbone)  # a new process: nothing in memory
    second = load_server_dataset(f"koniq10k:{koniq}", fresh, DiskCache(cache_dir))
    assert fresh.images_encoded == 0 and second.from_cache == 12 and second.encoded == 0
    assert torch.equal(first.features, second.features) and first.names == second.names
    # editing a pair costs text encodings only
    report = rank_pairs(fresh, [PromptPair("a crisp photo", "a smeared photo")], second)
    assert fresh.images_encoded == 0 and report.n == 12
    # a new photo is the only one encoded
    shutil.copy(EXAMPLES / "rocket_gaussian_noise_L5.jpg", koniq / "1024x768" / "new.jpg")
    with (koniq / "koniq10k_scores_and_distributions.csv").open("a") as labels:
        labels.write('"new.jpg",0,1.0,0.5\n')
    third = load_server_dataset(f"koniq10k:{koniq}", FeatureStore(rn_backbone), DiskCache(cache_dir))
    assert third.encoded == 1 and third.from_cache == 12


def test_without_a_cache_every_photo_is_encoded(rn_backbone, koniq):
    labelled = load_server_dataset(f"koniq10k:{koniq}", FeatureStore(rn_backbone), None)
    assert labelled.encoded == 12 and labelled.from_cache == 0


def test_files_with_the_same_content_are_encoded_once_and_all_named(rn_backbone, tmp_path):
    good, bad = EXAMPLES / "chelsea.jpg", tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    paths = [good, shutil.copy(good, tmp_path / "copy.jpg"), bad, shutil.copy(bad, tmp_path / "bad2.jpg")]
    store = FeatureStore(rn_backbone)
    found = file_features(paths, store)
    assert found.index == [0, 1] and found.encoded == 1 and torch.equal(found.features[0], found.features[1])
    assert [s.split(":")[0] for s in found.skipped] == [str(bad), str(tmp_path / "bad2.jpg")]
    assert file_digest(good) == bytes_digest(good.read_bytes()) and len(file_digest(good)) == 32


@pytest.mark.parametrize("spec", ["koniq10k", "nope:/data", "koniq10k:"])
def test_a_bad_spec_is_named(rn_backbone, spec):
    with pytest.raises(UsageError, match="expected NAME:DIR"):
        load_server_dataset(spec, FeatureStore(rn_backbone))


def test_features_of_another_backbone_are_refused(rn_backbone, vit_backbone, koniq):
    labelled = load_server_dataset(f"koniq10k:{koniq}", FeatureStore(rn_backbone))
    with pytest.raises(InputError, match="computed on test-tiny-rn"):
        rank_pairs(FeatureStore(vit_backbone), PRESETS["seed"], labelled)


def test_cli_lab_prints_each_pair_and_the_mean_then_reads_the_cache(rn_backbone, koniq, tmp_path, capsys):
    args = ["lab", "--dataset", "koniq10k", "--root", str(koniq), *TEST, "--pairs", "seed"]
    args += ["--cache-dir", str(tmp_path / "cache")]
    assert main(args) == EXIT_PARTIAL  # notes.jpg is named, the rest ranked
    first = capsys.readouterr()
    assert "notes.jpg" in first.err and "0 photos' features from the cache, 12 encoded" in first.err
    lines = first.out.strip().splitlines()
    assert lines[0].split() == ["rank", "SRCC", "PLCC", "on", "pair"] and len(lines) == 1 + 3 + 1
    labelled = load_server_dataset(f"koniq10k:{koniq}", FeatureStore(rn_backbone))
    report = rank_pairs(FeatureStore(rn_backbone), PRESETS["seed"], labelled)
    assert lines[1].split()[1] == f"{report.ranks[0].srcc:.4f}"
    assert lines[-1].endswith(f"SRCC {report.chosen_srcc:.4f}  PLCC {report.chosen_plcc:.4f}")
    assert "on koniq10k (12 photos, t = 100)" in lines[-1]
    (koniq / "1024x768" / "notes.jpg").unlink()
    csv = koniq / "koniq10k_scores_and_distributions.csv"
    csv.write_text("".join(line for line in csv.read_text().splitlines(True) if "notes.jpg" not in line))
    assert main(args) == EXIT_OK
    assert "12 photos' features from the cache, 0 encoded" in capsys.readouterr().err


def test_cli_lab_without_cache_and_with_a_bad_pairs_file(koniq, tmp_path, capsys):
    args = ["lab", "--dataset", "koniq10k", "--root", str(koniq), *TEST, "--no-cache"]
    assert main([*args, "--pairs", "pyiqa", "--limit", "5"]) == EXIT_OK
    assert "0 photos' features from the cache, 5 encoded" in capsys.readouterr().err
    assert main([*args, "--pairs", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


def labelled_csv(root: Path, rows: list[tuple[str, str]]) -> Path:
    root.mkdir()
    for name in NAMES:
        shutil.copy(EXAMPLES / f"{name}.jpg", root / f"{name}.jpg")
    (root / "labels.csv").write_text("path,score\n" + "".join(f"{path},{score}\n" for path, score in rows))
    return root / "labels.csv"


GOOD_ROWS = [(f"{name}.jpg", str(i)) for i, name in enumerate(NAMES)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([*GOOD_ROWS[:3], ("rocket.jpg", "nan")], "row 5: score 'nan' is not a finite number"),
        ([*GOOD_ROWS[:3], ("rocket.jpg", "inf")], "row 5: score 'inf' is not a finite number"),
        ([*GOOD_ROWS[:3], ("rocket.jpg", "good")], "row 5: score 'good' is not a number"),
        ([*GOOD_ROWS, ("coffee.jpg", "0.9")], "row 6: coffee.jpg is listed twice (row 4)"),
        ([*GOOD_ROWS, ("../../etc/passwd", "1")], "row 6: path '../../etc/passwd' leads out of the set's folder"),
        ([*GOOD_ROWS, ("sub/../../x.jpg", "1")], "row 6: path 'sub/../../x.jpg' leads out of the set's folder"),
        (GOOD_ROWS[:1], "the labelled set has 1 usable photos; at least 3 are needed"),
        ([(path, "0.5") for path, _ in GOOD_ROWS], "all 4 usable photos have the same label (0.5): SRCC and PLCC"),
    ],
)
def test_lab_refuses_hostile_labels_in_one_line(tmp_path, capsys, rows, message):
    labels = labelled_csv(tmp_path / "set", rows)
    assert main(["lab", "--dataset", "csv", "--root", str(labels), *TEST, "--no-cache"]) == EXIT_INPUT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err
