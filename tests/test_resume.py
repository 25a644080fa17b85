"""Result files written batch by batch, and resumed runs: a kill -9 mid-run, a truncated last line."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from iqa.cli.main import EXIT_INPUT, EXIT_OK, EXIT_PARTIAL, EXIT_WRITE, main
from iqa.engine.result_files import ResultFile, settings_path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))
TEST = ["--backbone", "test-tiny-rn"]


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as stream:
            return list(csv.DictReader(stream))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@pytest.fixture
def album(tmp_path) -> Path:
    folder = tmp_path / "album"
    folder.mkdir()
    for source in EXAMPLES[:12]:
        (folder / source.name).write_bytes(source.read_bytes())
    return folder


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_out_holds_one_row_per_photo_and_a_rerun_opens_nothing_again(album, tmp_path, suffix, capsys):
    out = tmp_path / f"results{suffix}"
    assert main(["score", str(album), *TEST, "--out", str(out), "--batch-size", "4", "--no-cache"]) == EXIT_OK
    rows = read_rows(out)
    assert sorted(r["name"] for r in rows) == sorted(str(p) for p in album.iterdir())
    assert all(0 <= float(r["score[CLIP-IQA]"]) <= 1 and len(r["digest"]) == 32 for r in rows)
    assert not out.with_name(out.name + ".partial.jsonl").exists()
    first = capsys.readouterr()
    assert "summary: 12 scored, 0 skipped" in first.err
    assert main(["score", str(album), *TEST, "--out", str(out), "--no-cache"]) == EXIT_OK
    again = capsys.readouterr()
    assert "summary: 0 scored, 0 skipped, 0 from the feature cache (not decoded), 12 already in" in again.err
    assert len(again.out.splitlines()) == 13  # the table still ranks every photo
    assert sorted(r["name"] for r in read_rows(out)) == sorted(r["name"] for r in rows)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_truncated_last_line_is_cut_off_and_that_photo_scored_again(album, tmp_path, suffix, capsys):
    out = tmp_path / f"results{suffix}"
    assert main(["score", str(album), *TEST, "--out", str(out), "--no-cache"]) == EXIT_OK
    text = out.read_text()
    lines = text.splitlines(keepends=True)
    out.write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])  # killed while writing a row
    capsys.readouterr()
    assert main(["score", str(album), *TEST, "--out", str(out), "--no-cache"]) == EXIT_OK
    assert "summary: 2 scored" in capsys.readouterr().err
    names = [r["name"] for r in read_rows(out)]
    assert len(names) == len(set(names)) == 12


def test_another_method_or_pairs_in_the_same_out_is_refused(album, tmp_path, capsys):
    out = tmp_path / "results.csv"
    assert main(["score", str(album / EXAMPLES[0].name), *TEST, "--out", str(out), "--no-cache"]) == EXIT_OK
    code = main(["score", str(album), *TEST, "--out", str(out), "--pairs", "seed", "--no-cache"])
    assert code == EXIT_INPUT and "scored with other settings: CLIP-IQA pairs" in capsys.readouterr().err


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("option", "differs"),
    [
        (["--pairs", "seed"], "CLIP-IQA pairs"),
        (["--temperature", "2"], "CLIP-IQA temperature"),
        (["--max-side", "64"], "CLIP-IQA preprocessing"),
        (["--no-draft"], "CLIP-IQA preprocessing"),
        (["--backbone", "test-tiny-vit"], "CLIP-IQA backbone"),
    ],
)
def test_a_rerun_with_other_settings_is_refused_even_with_nothing_left_to_score(
    album, tmp_path, capsys, option, differs
):
    photos = [str(album / name) for name in sorted(os.listdir(album))[:3]]
    out = tmp_path / "results.csv"
    assert main(["score", *photos, *TEST, "--out", str(out), "--no-cache"]) == EXIT_OK
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["score", *photos, *TEST, "--out", str(out), "--no-cache", *option]) == EXIT_INPUT
    err = last_line(capsys.readouterr().err)
    assert err.startswith(f"error: {out}: scored with other settings: {differs}: ") and "--rescore" in err
    assert out.read_bytes() == before


def test_rescore_scores_other_settings_into_a_new_file_and_resumes_it(album, tmp_path, capsys):
    photos = [str(album / name) for name in sorted(os.listdir(album))[:3]]
    out, fresh = tmp_path / "results.csv", tmp_path / "fresh.csv"
    assert main(["score", *photos, *TEST, "--out", str(out), "--no-cache"]) == EXIT_OK
    before = out.read_bytes()
    seed = ["--pairs", "seed", "--no-cache"]
    assert main(["score", *photos, *TEST, "--out", str(fresh), *seed]) == EXIT_OK
    capsys.readouterr()
    assert main(["score", *photos, *TEST, "--out", str(out), *seed, "--rescore"]) == EXIT_OK
    err = capsys.readouterr().err
    again = tmp_path / "results-1.csv"
    assert f"scoring into {again} instead (--rescore)" in err and "summary: 3 scored" in err
    assert out.read_bytes() == before
    by_name = {r["name"]: r["score[CLIP-IQA]"] for r in read_rows(fresh)}
    assert {r["name"]: r["score[CLIP-IQA]"] for r in read_rows(again)} == by_name
    assert main(["score", *photos, *TEST, "--out", str(out), *seed, "--rescore"]) == EXIT_OK
    assert "summary: 0 scored, 0 skipped, 0 from the feature cache (not decoded), 3 already in " in last_line(
        capsys.readouterr().err
    )


def test_an_out_without_its_settings_record_is_refused(album, tmp_path, capsys):
    out = tmp_path / "results.csv"
    assert main(["score", str(album / EXAMPLES[0].name), *TEST, "--out", str(out), "--no-cache"]) == EXIT_OK
    settings_path(out).unlink()
    capsys.readouterr()
    assert main(["score", str(album), *TEST, "--out", str(out), "--no-cache"]) == EXIT_INPUT
    assert f"error: {out}: no record of the settings it was scored with" in capsys.readouterr().err


def replace_line(path: Path, index: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[index] = text + "\n"
    path.write_text("".join(lines))


def nan_score(path: Path) -> None:
    replace_line(path, 2, re.sub(r",0\.\d+,", ",nan,", path.read_text().splitlines()[2], count=1))


def foreign_columns(path: Path) -> None:
    path.write_text("file,quality\na.jpg,0.5\n")


def binary(path: Path) -> None:
    path.write_bytes(bytes(range(128, 256)) * 8 + b"\n")


def jsonl_row(index: int, **changes) -> Callable[[Path], None]:
    def change(path: Path) -> None:
        row = json.loads(path.read_text().splitlines()[index])
        replace_line(path, index, json.dumps(row | changes))

    return change


def jsonl_line(index: int, text: str) -> Callable[[Path], None]:
    return lambda path: replace_line(path, index, text)


@pytest.mark.parametrize(
    ("suffix", "damage", "where", "what"),
    [
        (".csv", nan_score, "line 3", "score[CLIP-IQA] is 'nan', not a score between 0 and 1"),
        (".csv", foreign_columns, "line 1", 'a column this run does not write ("file")'),
        (".csv", binary, "line 1", "a column this run does not write"),
        (".jsonl", jsonl_row(1, **{"score[CLIP-IQA]": "hello"}), "line 2", "score[CLIP-IQA] is 'hello'"),
        (".jsonl", jsonl_row(1, **{"score[CLIP-IQA]": 1.5}), "line 2", "score[CLIP-IQA] is 1.5, not a score between"),
        (".jsonl", jsonl_row(1, name=""), "line 2", "no photo name"),
        (".jsonl", jsonl_row(1, extra=1), "line 2", 'a column this run does not write ("extra")'),
        (".jsonl", jsonl_line(1, '{"name": "a.jpg", "sc'), "line 2", "not a JSON row"),
        (".jsonl", jsonl_line(1, "[1, 2]"), "line 2", "not a row of results"),
        (".jsonl", jsonl_line(1, "[" * 100_000), "line 2", "not a JSON row"),
    ],
)
def test_a_damaged_or_foreign_out_is_refused_by_name_without_a_traceback(
    album, tmp_path, capsys, suffix, damage, where, what
):
    photos = [str(album / name) for name in sorted(os.listdir(album))[:3]]
    out = tmp_path / f"results{suffix}"
    assert main(["score", *photos, *TEST, "--out", str(out), "--no-cache"]) == EXIT_OK
    damage(out)
    damaged = out.read_bytes()
    capsys.readouterr()
    assert main(["score", *photos, *TEST, "--out", str(out), "--no-cache"]) == EXIT_INPUT
    err = last_line(capsys.readouterr().err)
    assert err.startswith(f"error: {out} {where}: {what}") and err.endswith("--rescore to score into a new file")
    assert out.read_bytes() == damaged  # nothing cut off or appended


def test_a_parquet_journal_with_a_corrupt_line_is_refused_by_name(album, tmp_path, capsys):
    photos = [str(album / name) for name in sorted(os.listdir(album))[:3]]
    out = tmp_path / "results.parquet"
    assert main(["score", *photos[:1], *TEST, "--out", str(out), "--no-cache"]) == EXIT_OK
    row = read_rows(out)[0]
    journal = out.with_name(out.name + ".partial.jsonl")
    journal.write_text(
        json.dumps(row | {"name": "b.jpg"}) + "\n{corrupt\n" + json.dumps(row | {"name": "c.jpg"}) + "\n"
    )
    capsys.readouterr()
    assert main(["score", *photos, *TEST, "--out", str(out), "--no-cache"]) == EXIT_INPUT
    assert last_line(capsys.readouterr().err).startswith(f"error: {journal} line 2: not a JSON row")


def test_an_unknown_out_format_is_bad_input(album, tmp_path, capsys):
    assert main(["score", str(album), *TEST, "--out", str(tmp_path / "r.xlsx")]) == EXIT_INPUT
    assert "--out must end in .csv, .jsonl or .parquet" in capsys.readouterr().err


def test_exit_codes_with_out_and_bad_photos(album, tmp_path, capsys):
    (album / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    out = tmp_path / "r.jsonl"
    assert main(["score", str(album), *TEST, "--out", str(out)]) == EXIT_PARTIAL
    err = capsys.readouterr().err
    assert "skipped: " in err and "broken.jpg: image is corrupt or truncated" in err
    assert "1 skipped (1 image is corrupt or truncated" in err
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(["score", str(only_bad), *TEST]) == EXIT_INPUT


def test_result_file_reads_back_what_it_wrote(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"name": "a.jpg", "path": "a.jpg", "digest": "x", "score[CLIP-IQA]": 0.5, "notes": ""}\n{"na')
    settings = {"scorers": [{"label": "CLIP-IQA"}]}
    settings_path(path).write_text(json.dumps(settings))
    done = ResultFile(path, settings).done
    assert done == {"a.jpg": ({"CLIP-IQA": 0.5}, "")}
    assert path.read_text().endswith("}\n")


def big_album(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        with Image.open(EXAMPLES[i % len(EXAMPLES)]) as image:
            image.convert("RGB").resize((1536, 1024)).save(folder / f"p{i:03d}.jpg", quality=90)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_run_killed_with_sigkill_resumes_complete_without_duplicates_or_redecoding(tmp_path, suffix):
    album = big_album(tmp_path / "album", 40)
    out = tmp_path / f"results{suffix}"
    written = out.with_name(out.name + ".partial.jsonl") if suffix == ".parquet" else out
    command = [sys.executable, "-m", "iqa", "score", str(album), *TEST, "--out", str(out)]
    command += ["--batch-size", "2", "--workers", "1", "--no-draft", "--max-side", "0", "--no-cache"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if written.exists() and written.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = written.read_text().count("\n")
    assert 4 <= before < 40
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_OK, done.stderr
    summary = done.stderr.strip().splitlines()[-1]
    # finished photos were not opened again: only the rest was decoded and scored
    assert summary.startswith(f"summary: {40 - before} scored, 0 skipped") and f"{before} already in" in summary
    names = [r["name"] for r in read_rows(out)]
    assert len(names) == len(set(names)) == 40


def descendants(pid: int) -> set[int]:
    """The processes below `pid` (children, their children, ...), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_a_run_killed_with_sigkill_leaves_no_process_behind(tmp_path):
    album = big_album(tmp_path / "album", 12)
    command = [sys.executable, "-m", "iqa", "score", str(album), *TEST, "--out", str(tmp_path / "r.csv")]
    command += ["--batch-size", "1", "--workers", "2", "--no-draft", "--max-side", "0", "--no-cache"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    below: set[int] = set()
    while time.monotonic() < deadline and process.poll() is None and len(below) < 4:
        time.sleep(0.1)  # the resource tracker, the fork server and its two workers
        below = descendants(process.pid)
    assert process.poll() is None and len(below) >= 4, "the run ended before its workers were seen"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in below):
        time.sleep(0.1)
    left = [pid for pid in below if alive(pid)]
    for pid in left:  # not to leak them into the rest of the test run when this fails
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} processes of the killed run still alive after 10 s"


def test_an_out_that_cannot_be_written_is_exit_4(album, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "r.csv"
    assert main(["score", str(album), *TEST, "--out", str(out), "--no-cache"]) == EXIT_WRITE
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: could not write ") and "r.csv" in err


def test_an_out_that_is_a_folder_is_refused_by_name(album, tmp_path, capsys):
    out = tmp_path / "results.csv"
    out.mkdir()
    assert main(["score", str(album), *TEST, "--out", str(out), "--no-cache"]) == EXIT_INPUT
    assert last_line(capsys.readouterr().err).startswith(f"error: {out}: not a file (a folder?)")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems hold UTF-8 names only")
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_photo_name_that_is_not_utf8_is_written_and_resumed_or_refused_in_one_line(tmp_path, suffix):
    folder = tmp_path / "album"
    folder.mkdir()
    photo = folder / os.fsdecode(b"caf\xe9.jpg")
    photo.write_bytes(EXAMPLES[0].read_bytes())
    out = tmp_path / f"results{suffix}"
    command = [sys.executable, "-m", "iqa", "score", str(folder), *TEST, "--out", str(out), "--no-cache"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=300)
    if suffix == ".parquet":
        assert first.returncode == EXIT_WRITE, first.stderr
        assert b"a photo's file name is not UTF-8, which Parquet cannot hold" in first.stderr.splitlines()[-1]
        return
    assert first.returncode == EXIT_OK, first.stderr
    assert os.fsencode(str(photo)) in first.stdout and os.fsencode(str(photo)) in out.read_bytes()  # its own bytes
    again = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=300)
    assert again.returncode == EXIT_OK, again.stderr
    assert b"0 scored, 0 skipped, 0 from the feature cache (not decoded), 1 already in" in again.stderr
