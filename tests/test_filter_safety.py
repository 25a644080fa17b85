"""filter: atomic copies, verified moves, interrupted runs finished on re-run, refusals, OS errors."""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import pytest

import iqa.report.filtering as filtering
from iqa.cli.main import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_WRITE, build_parser, main
from iqa.methods.results import ScoreResult
from iqa.report.filtering import PARTIAL_SUFFIX, plan_transfer, split_by_threshold, transfer, unscored
from tests.hostile import good_image

TEST = ["--backbone", "test-tiny-rn"]
REJECT_ALL = ["--threshold", "1.01"]


@pytest.fixture
def album(tmp_path):
    folder = tmp_path / "album"
    folder.mkdir()
    for i in range(4):
        good_image((64 + 8 * i, 64), seed=i).save(folder / f"p{i}.png")
    return folder


def contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def flaky_copy(fail_on: int, error: OSError):
    """A copy_stream that writes half of the `fail_on`-th file and then raises `error`."""
    calls = []

    def copy(src, dst):
        calls.append(1)
        if len(calls) == fail_on:
            data = src.read()
            dst.write(data[: len(data) // 2])
            dst.flush()
            raise error
        shutil.copyfileobj(src, dst)

    return copy


def test_full_disk_mid_copy_leaves_no_truncated_file_and_a_rerun_finishes(album, tmp_path, monkeypatch, capsys):
    originals = contents(album)
    dest = tmp_path / "rejected"
    monkeypatch.setattr(filtering, "copy_stream", flaky_copy(2, OSError(errno.ENOSPC, "No space left on device")))
    assert main(["filter", str(album), *REJECT_ALL, *TEST, "--move-to", str(dest), "--apply"]) == EXIT_WRITE
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: could not move ") and "No space left on device (1 of 4 photos moved" in err
    assert "Errno" not in err
    for name, data in contents(dest).items():  # no truncated photo under a final name, no leftovers
        assert originals[name] == data
    assert len(contents(dest)) == 1 and len(contents(album)) == 3
    monkeypatch.undo()
    assert main(["filter", str(album), *REJECT_ALL, *TEST, "--move-to", str(dest), "--apply"]) == EXIT_OK
    assert contents(dest) == originals and not list(album.iterdir())


def test_leftovers_of_a_killed_run_are_removed_or_resumed(album, tmp_path, capsys):
    originals = contents(album)
    dest = tmp_path / "rejected"
    dest.mkdir()
    (dest / f".p0.png{PARTIAL_SUFFIX}").write_bytes(originals["p0.png"][:100])  # killed mid-copy
    shutil.copy2(album / "p1.png", dest / "p1.png")  # killed after the rename, before the delete
    assert main(["filter", str(album), *REJECT_ALL, *TEST, "--move-to", str(dest), "--apply"]) == EXIT_OK
    assert "removed .p0.png.iqa-partial" in capsys.readouterr().err
    assert contents(dest) == originals and not list(album.iterdir())  # no p1-1.png


def test_copy_rerun_makes_no_duplicates(album, tmp_path):
    dest = tmp_path / "copies"
    for _ in range(2):
        assert main(["filter", str(album), *REJECT_ALL, *TEST, "--copy-to", str(dest), "--apply"]) == EXIT_OK
    assert contents(dest) == contents(album)


def test_a_move_keeps_the_original_when_the_copy_differs(album, tmp_path, monkeypatch):
    def corrupting_copy(src, dst):
        data = bytearray(src.read())
        data[-1] ^= 0xFF
        dst.write(bytes(data))

    monkeypatch.setattr(filtering, "copy_stream", corrupting_copy)
    source = album / "p0.png"
    with pytest.raises(filtering.OutputError, match="copy differs from the original.*original was kept"):
        transfer(plan_transfer([source], tmp_path / "dest"), "move")
    assert source.exists()


def test_a_different_file_under_the_same_name_is_never_overwritten(album, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "p0.png").write_bytes(b"someone else's photo")
    plan = plan_transfer([album / "p0.png"], dest)
    assert plan[0][1] == dest / "p0-1.png"
    (dest / "p0-1.png").write_bytes(b"appeared meanwhile")
    with pytest.raises(filtering.OutputError, match="a different file appeared there; nothing was written over"):
        transfer(plan, "copy")
    assert (dest / "p0-1.png").read_bytes() == b"appeared meanwhile"


@pytest.mark.parametrize("where, recursive", [(".", False), (".", True), ("sub", True)])
def test_filter_into_the_source_is_refused(album, capsys, where, recursive):
    (album / "sub").mkdir()
    before = contents(album / "sub"), sorted(p.name for p in album.iterdir())
    args = ["filter", str(album), *REJECT_ALL, *TEST, "--move-to", str(album / where), "--apply"]
    assert main(args + (["--recursive"] if recursive else [])) == EXIT_INPUT
    assert "error: refused: " in capsys.readouterr().err
    assert (contents(album / "sub"), sorted(p.name for p in album.iterdir())) == before


def test_filter_into_a_subfolder_without_recursive_is_fine(album, capsys):
    assert (
        main(["filter", str(album / "*.png"), *REJECT_ALL, *TEST, "--copy-to", str(album / "low"), "--apply"])
        == EXIT_OK
    )
    assert len(list((album / "low").iterdir())) == 4


def test_destination_that_is_a_file_is_one_line_exit_4(album, tmp_path, capsys):
    dest = tmp_path / "a-file"
    dest.write_text("x")
    assert main(["filter", str(album), *REJECT_ALL, *TEST, "--copy-to", str(dest), "--apply"]) == EXIT_WRITE
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not copy ") and "is a file, not a folder" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_read_only_destination_is_one_line_exit_4(album, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "ro"
    dest.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: simulate the file system's answer
        monkeypatch.setattr(filtering, "copy_stream", flaky_copy(1, OSError(errno.EROFS, "Read-only file system")))
    else:
        dest.chmod(0o500)
    try:
        assert main(["filter", str(album), *REJECT_ALL, *TEST, "--copy-to", str(dest), "--apply"]) == EXIT_WRITE
    finally:
        dest.chmod(0o700)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"^error: could not copy .*p0.png to .*: (Read-only file system|Permission denied) \(0 of 4", err)
    assert not list(dest.iterdir())


def test_score_output_that_cannot_be_written_is_exit_4(album, tmp_path, capsys):
    assert main(["score", str(album), *TEST, "--csv", str(tmp_path / "no" / "such" / "dir.csv")]) == EXIT_WRITE
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: could not write ") and "dir.csv: No such file or directory" in err


def test_filter_accounts_for_every_photo(album, monkeypatch, capsys):
    (album / "broken.png").write_bytes(b"not a png")

    from iqa.cli.options import open_scorers

    class NaNForOne:
        """Scores on a real scorer's features; the first photo of the batch gets NaN."""

        method = label = "fake"

        def __init__(self, real):
            self.store, self.backbone = real.store, real.backbone

        def score_features(self, features, names, notes=None):
            return [ScoreResult(n, float("nan") if i == 0 else 0.1 * i, [], "fake") for i, n in enumerate(names)]

    monkeypatch.setattr(
        "iqa.cli.main.open_scorers", lambda args: {"fake": NaNForOne(next(iter(open_scorers(args).values())))}
    )
    assert main(["filter", str(album), "--threshold", "0.25", *TEST]) == EXIT_PARTIAL
    captured = capsys.readouterr()
    assert "5 photos: 1 kept, 2 rejected, 2 unscored" in captured.out
    assert "p0.png: no finite score" in captured.err and "broken.png" in captured.err


def test_split_keeps_non_finite_scores_out_of_both_lists():
    results = [
        ScoreResult(n, s, [], "m") for n, s in (("a", 0.9), ("b", float("nan")), ("c", 0.1), ("d", float("inf")))
    ]
    kept, rejected = split_by_threshold(results, 0.5)
    assert [r.name for r in kept] == ["a"] and [r.name for r in rejected] == ["c"]
    assert [r.name for r in unscored(results)] == ["b", "d"]


def test_help_lists_every_exit_code():
    text = build_parser().format_help()
    for code in ("0  done", "1  done, but", "2  bad input", "3  model weights unavailable", "4  could not write"):
        assert code in text


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name != "posix", reason="symbolic links")
def test_moving_a_symlink_to_a_photo_outside_the_folder_never_deletes_that_photo(tmp_path, capsys):
    outside, album, dest = tmp_path / "outside", tmp_path / "album", tmp_path / "rejected"
    outside.mkdir()
    album.mkdir()
    good_image((96, 64), seed=1).save(outside / "real.jpg")
    good_image((96, 64), seed=2).save(album / "b.jpg")
    original = (outside / "real.jpg").read_bytes()
    (album / "link.jpg").symlink_to(Path("..") / "outside" / "real.jpg")
    (album / "a-link-to-b.jpg").symlink_to("b.jpg")  # the same photo under two names
    assert main(["filter", str(album), *REJECT_ALL, *TEST, "--move-to", str(dest), "--apply", "--no-cache"]) == EXIT_OK
    out = capsys.readouterr().out
    assert (outside / "real.jpg").read_bytes() == original  # the photo outside is where it was
    assert (dest / "link.jpg").read_bytes() == original and not (dest / "link.jpg").is_symlink()
    assert not os.path.lexists(album / "link.jpg")  # only the link left the folder
    assert f"note: {album / 'link.jpg'} was a symbolic link: its photo was copied and the link removed; " in out
    assert f"{(outside / 'real.jpg').resolve()} was kept" in out
    assert (album / "b.jpg").exists() and f"{(album / 'b.jpg').resolve()} was kept" in out  # named, not lost
