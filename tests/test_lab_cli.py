"""`iqa calibrate` and `iqa lab --search / --fit-weights` through the command line, on the bundled labelled set."""

import re
import shutil
from pathlib import Path

import pytest

from iqa.cli.main import EXIT_INPUT, EXIT_OK, main
from iqa.methods.prompts import load_pairs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SET = ["--dataset", "csv", "--root", str(EXAMPLES / "labels.csv"), "--backbone", "test-tiny-rn"]


def test_calibrate_prints_the_threshold_filter_takes_and_writes_the_curves(tmp_path, capsys):
    out = tmp_path / "curves.html"
    assert main(["calibrate", *SET, "--target-recall", "0.5", "--out", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    first = printed.splitlines()[0]
    assert re.fullmatch(
        r"CLIP-IQA: ROC AUC 0\.\d{4}  average precision 0\.\d{4}  \(64 photos: 40 reject, 24 keep\)", first
    )
    counts = re.search(
        r"for reject recall >= 0.5: threshold (\S+) rejects (\d+) of 40 bad photos, loses (\d+) of 24", printed
    )
    threshold, bad, good = counts.group(1), int(counts.group(2)), int(counts.group(3))
    assert bad >= 20 and printed.strip().endswith(f"threshold (CLIP-IQA): {threshold}")
    assert printed.count("  pair ") == 5  # the pyiqa preset's pairs
    assert "Plotly.newPlot" in out.read_text() and out.read_text().count("Plotly.newPlot") == 2
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in EXAMPLES.glob("*.jpg"):
        shutil.copy(photo, photos / photo.name)
    rejected = tmp_path / "rejected"
    args = ["filter", str(photos), "--threshold", threshold, "--backbone", "test-tiny-rn", "--copy-to", str(rejected)]
    assert main([*args, "--apply"]) == EXIT_OK
    labels = {
        line.split(",")[0]: line.split(",")[-1] for line in (EXAMPLES / "labels.csv").read_text().splitlines()[1:]
    }
    copied = [labels[p.name] for p in rejected.iterdir()]
    assert (copied.count("reject"), copied.count("keep")) == (bad, good)


def test_calibrate_refuses_an_unlabelled_set_and_an_unreachable_target(tmp_path, capsys):
    unlabelled = tmp_path / "labels.csv"
    unlabelled.write_text(
        "path,score\n" + "".join(f"{EXAMPLES / n}.jpg,{i}\n" for i, n in enumerate(["rocket", "coffee"]))
    )
    assert (
        main(["calibrate", "--dataset", "csv", "--root", str(unlabelled), "--backbone", "test-tiny-rn"]) == EXIT_INPUT
    )
    assert "2 of 2 photos have no keep/reject label" in capsys.readouterr().err
    assert main(["calibrate", *SET, "--target-precision", "1.5"]) == EXIT_INPUT
    assert "a target precision is a number in (0, 1]" in capsys.readouterr().err
    assert main(["calibrate", *SET, "--out", str(tmp_path / "curves.png")]) == 2
    assert "written as .html" in capsys.readouterr().err
    assert main(["calibrate", *SET, "--out", str(tmp_path / "missing" / "curves.html")]) == 4
    assert "could not write" in capsys.readouterr().err
    assert main(["lab", *SET, "--search", "--save-pairs", str(tmp_path / "missing" / "pairs.json")]) == 4


def test_lab_search_prints_ranking_and_selection_and_writes_pairs_score_reads(tmp_path, capsys):
    words = tmp_path / "words.txt"
    words.write_text("sunny / rainy\n")
    saved = tmp_path / "suggested.json"
    args = ["lab", *SET, "--search", "--vocabulary", str(words), "--folds", "4", "--max-pairs", "2", "--top", "3"]
    assert main([*args, "--save-pairs", str(saved)]) == EXIT_OK
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["rank", "AUC", "tag", "pair"] and len(printed[1:4]) == 3
    assert printed[4] == f"({3 * 64} candidates; selection among the 50 best)"
    selected = printed[6 : printed.index(next(line for line in printed if line.startswith("cross-validated")))]
    assert 1 <= len(selected) <= 2
    assert "64 photos (24 keep, 40 reject), 4 folds" in printed[-3]
    assert printed[-2].startswith("  selected pairs") and printed[-1].startswith("  the table (pyiqa preset)")
    assert all(re.search(r"-?\d\.\d{4} ± \d\.\d{4}$", line) for line in printed[-2:])
    pairs = load_pairs(saved)
    assert [f"{p.positive} / {p.negative}" for p in pairs] == [line.split(maxsplit=2)[2] for line in selected]
    assert main(["score", str(EXAMPLES / "rocket.jpg"), "--backbone", "test-tiny-rn", "--pairs", str(saved)]) == EXIT_OK


def test_lab_fit_weights_writes_the_weight_column(tmp_path, capsys):
    saved = tmp_path / "weighted.csv"
    args = ["lab", *SET, "--fit-weights", "--metric", "srcc", "--pairs", "pyiqa", "--save-pairs", str(saved)]
    assert main(args) == EXIT_OK
    printed = capsys.readouterr().out.splitlines()
    weights = [float(line.split()[0]) for line in printed[1:6]]
    assert max(weights) == 1.0 and min(weights) >= 0
    assert [p.weight for p in load_pairs(saved)] == weights
    assert printed[-2].startswith("  fitted weights") and printed[-1].startswith("  the table's weights")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--folds", "30"], "30 folds need at least 30 photos of each class; the set has 24 keep and 40 reject"),
        (["--folds", "1"], "folds must be a whole number from 2 to 100, got 1"),
        (["--max-pairs", "0"], "max pairs must be from 1 to 50, got 0"),
    ],
)
def test_lab_search_refusals_are_one_line(extra, message, capsys):
    assert main(["lab", *SET, "--search", *extra]) == EXIT_INPUT
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_calibrate_every_method_with_a_grmp_checkpoint(rn_backbone, tmp_path, capsys):
    from iqa.methods.grmp.checkpoint import save_checkpoint
    from iqa.methods.grmp.model import GRMPConfig, GRMPModel

    config = GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=rn_backbone.pretrained, seed=5)
    _, meta = save_checkpoint(GRMPModel(config, rn_backbone), tmp_path / "mine")
    args = ["calibrate", *SET, "--method", "clipiqa,grmp", "--checkpoint", str(meta.with_suffix("")), "--best-f1"]
    assert main(args) == EXIT_OK
    printed = capsys.readouterr().out
    assert printed.count("(64 photos: 40 reject, 24 keep)") == 2
    assert "threshold (CLIP-IQA): " in printed and "threshold (GRMP-IQA (seed)): " in printed
    assert "pair [4 learned tokens] high quality / [4 learned tokens] low quality: ROC AUC" in printed
