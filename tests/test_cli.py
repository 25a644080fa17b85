import csv
import json

import pytest
from PIL import ImageFilter

from iqa.cli.main import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_WEIGHTS, main

TEST = ["--backbone", "test-tiny-rn"]


@pytest.fixture
def folder(tmp_path, photos):
    album = tmp_path / "album"
    album.mkdir()
    for photo in photos:
        photo.image.save(album / f"{photo.name}.jpg")
        photo.image.filter(ImageFilter.GaussianBlur(4)).save(album / f"{photo.name}_blurred.png")
    (album / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return album


def test_score_writes_table_csv_and_json(folder, tmp_path, capsys):
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    code = main(["score", str(folder), *TEST, "--pairs", "seed", "--csv", str(out_csv), "--json", str(out_json)])
    assert code == EXIT_PARTIAL  # broken.jpg is reported, the rest is scored
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "meaningless" in captured.err
    lines = captured.out.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "CLIP-IQA", "photo"] and len(lines) == 1 + 6
    scores = [float(line.split()[1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 6 and "p[a sharp photo / a blurry photo]" in rows[0]
    assert "meaningless" in rows[0]["notes"]
    data = json.loads(out_json.read_text())
    assert len(data["results"]) == 6 and len(data["results"][0]["pairs"]) == 3
    assert any("broken.jpg" in e for e in data["errors"])


def test_score_with_custom_pairs_file_and_temperature(folder, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("positive,negative,weight\na sharp photo,a blurry photo,2\nbright,dark,1\n")
    code = main(["score", str(folder / "*.png"), *TEST, "--pairs", str(pairs), "--temperature", "1"])
    assert code == EXIT_OK
    scores = [float(line.split()[1]) for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert len(scores) == 3 and all(0.3 < s < 0.7 for s in scores)  # t = 1 keeps p near 0.5


def test_filter_is_a_dry_run_by_default_then_moves_without_overwriting(folder, tmp_path, capsys):
    rejected = tmp_path / "rejected"
    rejected.mkdir()
    (rejected / "chelsea.jpg").write_bytes(b"already here")
    before = sorted(p.name for p in folder.iterdir())
    assert main(["filter", str(folder), "--threshold", "1.01", *TEST, "--move-to", str(rejected)]) == EXIT_PARTIAL
    out = capsys.readouterr().out
    assert "6 of 6 photos score below 1.01" in out and "dry run" in out
    assert sorted(p.name for p in folder.iterdir()) == before
    assert (
        main(["filter", str(folder), "--threshold", "1.01", *TEST, "--move-to", str(rejected), "--apply"])
        == EXIT_PARTIAL
    )
    assert sorted(p.name for p in folder.iterdir()) == ["broken.jpg"]
    assert (rejected / "chelsea.jpg").read_bytes() == b"already here"
    assert (rejected / "chelsea-1.jpg").exists() and len(list(rejected.iterdir())) == 7


def test_filter_threshold_splits_and_copy_keeps_originals(folder, tmp_path, capsys):
    main(["score", str(folder), *TEST])
    scores = sorted(float(line.split()[1]) for line in capsys.readouterr().out.strip().splitlines()[1:])
    threshold = (scores[2] + scores[3]) / 2
    copies = tmp_path / "copies"
    main(["filter", str(folder), "--threshold", str(threshold), *TEST, "--copy-to", str(copies), "--apply"])
    assert "3 of 6 photos score below" in capsys.readouterr().out
    assert len(list(copies.iterdir())) == 3 and len(list(folder.iterdir())) == 7


def test_exit_codes_name_the_problem(folder, tmp_path, capsys, monkeypatch):
    assert main(["score", str(tmp_path / "nothing*.jpg"), *TEST]) == EXIT_INPUT
    assert "nothing" in capsys.readouterr().err
    assert main(["score", str(folder), *TEST, "--pairs", str(tmp_path / "missing.json")]) == EXIT_INPUT
    assert "does not exist" in capsys.readouterr().err
    assert main(["score", str(folder / "broken.jpg"), *TEST]) == EXIT_INPUT
    assert "no photo could be opened" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    assert main(["score", str(folder)]) == EXIT_WEIGHTS
    assert "--weights" in capsys.readouterr().err
    assert main(["filter", str(folder), "--threshold", "0.5", *TEST, "--method", "grmp"]) == EXIT_INPUT
    assert "--checkpoint" in capsys.readouterr().err


def test_an_internal_bug_surfaces_with_its_traceback_not_as_bad_input(folder, monkeypatch):
    def broken(*args, **options):
        raise KeyError("a bug")

    monkeypatch.setattr("iqa.cli.main.score_paths", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["score", str(folder), *TEST])


def test_every_library_error_is_an_iqa_error_and_keeps_its_builtin_base():
    from iqa.clip.backbones import BackboneUnavailable, BadCheckpoint, CheckpointMismatch
    from iqa.errors import InputError, IQAError, UsageError
    from iqa.labels.datasets import DatasetFormatError, DatasetLayoutError
    from iqa.methods.clipiqa.scorer import ScoringError
    from iqa.methods.grmp.checkpoint import CheckpointError
    from iqa.methods.grmp.official import OfficialCheckpointError
    from iqa.methods.grmp.state_file import StateFileError
    from iqa.methods.prompts import PromptError
    from iqa.photos.photo import PhotoError

    value_errors = [
        BadCheckpoint,
        CheckpointMismatch,
        ScoringError,
        DatasetFormatError,
        InputError,
        CheckpointError,
        OfficialCheckpointError,
        StateFileError,
        PhotoError,
        PromptError,
    ]
    assert all(issubclass(cls, IQAError) and issubclass(cls, ValueError) for cls in value_errors)
    assert issubclass(BackboneUnavailable, RuntimeError) and issubclass(DatasetLayoutError, FileNotFoundError)
    assert all(issubclass(cls, IQAError) for cls in (BackboneUnavailable, DatasetLayoutError, UsageError))


def test_verbose_logs_the_choices_on_stderr_and_the_library_is_silent_without_it(folder, capsys):
    main(["score", str(folder / "coffee.jpg"), *TEST])
    assert "iqa." not in capsys.readouterr().err
    main(["-v", "score", str(folder / "coffee.jpg"), *TEST, "--max-side", "100"])
    err = capsys.readouterr().err
    assert "iqa.clip.backbones: loaded backbone test-tiny-rn" in err and "iqa.clip.devices: no device asked for" in err
    assert "coffee.jpg: resized from 160x107 to 100x67 (max_side=100)" in err


def test_cache_size_bounds_the_feature_cache_on_disk(folder, tmp_path):
    from iqa.engine.disk_cache import DiskCache

    roomy, tiny = tmp_path / "roomy", tmp_path / "tiny"
    assert main(["score", str(folder), *TEST, "--workers", "0", "--cache-dir", str(roomy)]) == EXIT_PARTIAL
    assert len(DiskCache(roomy)) == 6
    code = main(["score", str(folder), *TEST, "--workers", "0", "--cache-dir", str(tiny), "--cache-size", "1e-7"])
    assert code == EXIT_PARTIAL
    assert len(DiskCache(tiny)) == 0  # 107 bytes hold no feature: every one evicted


@pytest.mark.parametrize("command", ["score", "lab"])
@pytest.mark.parametrize("size", ["0", "-1", "nan", "inf", "two", "1e300", "2e6"])
def test_bad_cache_sizes_are_refused_by_name(command, size, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "photos", "--cache-size", size])
    assert exit_info.value.code == 2 and "--cache-size" in capsys.readouterr().err
