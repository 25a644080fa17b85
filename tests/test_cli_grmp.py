"""The GRMP-IQA command line end to end: synth -> train -> eval -> score, on the test backbone."""

import json

import pytest
from PIL import Image
from scipy import stats

from iqa.cli.main import EXIT_INPUT, main
from iqa.methods.grmp.checkpoint import read_config

TEST = ["--backbone", "test-tiny-rn", "--pretrained", "none"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, photos):
    good = tmp_path_factory.mktemp("good")
    for photo in photos:
        photo.image.save(good / f"{photo.name}.png")
    out = tmp_path_factory.mktemp("synthetic")
    assert (
        main(["synth", str(good), str(out), "--types", "gaussian_blur", "gaussian_noise", "jpeg", "--max-side", "96"])
        == 0
    )
    return out


def test_synth_writes_a_labelled_set(synthetic):
    lines = (synthetic / "labels.csv").read_text().splitlines()
    assert lines[0].startswith("path,score") and len(lines) == 1 + 3 * (1 + 3 * 5)


@pytest.mark.slow
def test_train_eval_and_score_with_the_trained_checkpoint(synthetic, photos, tmp_path, capsys):
    checkpoint = tmp_path / "seed-model"
    code = main(
        [
            "train",
            "--dataset",
            "csv",
            "--root",
            str(synthetic / "labels.csv"),
            *TEST,
            "--variant",
            "seed",
            "--rounds",
            "2",
            "--shots",
            "all",
            "--steps",
            "30",
            "--meta",
            "synthetic",
            "--meta-root",
            str(synthetic),
            "--meta-epochs",
            "2",
            "--out",
            str(checkpoint),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "round 2:" in out and "mean SRCC" in out and "meta-pre-training" in out
    config = read_config(checkpoint.with_suffix(".json"))
    assert config.variant == "seed" and config.backbone == "test-tiny-rn"
    assert len(config.training["rounds"]) == 2

    metrics_file = tmp_path / "metrics.json"
    assert (
        main(
            [
                "eval",
                "--dataset",
                "csv",
                "--root",
                str(synthetic),
                *TEST,
                "--method",
                "grmp",
                "--checkpoint",
                str(checkpoint),
                "--json",
                str(metrics_file),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "GRMP-IQA (seed) on csv (48 images): SRCC" in printed
    metrics = json.loads(metrics_file.read_text())
    labels = [float(line.split(",")[1]) for line in (synthetic / "labels.csv").read_text().splitlines()[1:]]
    assert metrics["n"] == 48 and metrics["targets"] == pytest.approx(labels)
    assert len(set(metrics["predictions"])) > 1  # a real ranking, not one constant score
    assert metrics["srcc"] == pytest.approx(stats.spearmanr(metrics["predictions"], labels).statistic)
    assert f"SRCC {metrics['srcc']:.4f}" in printed

    assert main(["eval", "--dataset", "csv", "--root", str(synthetic), *TEST, "--pairs", "seed"]) == 0
    assert "CLIP-IQA on csv (48 images)" in capsys.readouterr().out

    photo = tmp_path / "one.jpg"
    photos[0].image.save(photo)
    assert main(["score", str(photo), *TEST, "--method", "clipiqa,grmp", "--checkpoint", str(checkpoint)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[:3] == ["rank", "CLIP-IQA", "GRMP-IQA"]


def test_train_and_eval_name_missing_data(tmp_path, capsys):
    assert main(["eval", "--dataset", "koniq10k", "--root", str(tmp_path), *TEST]) == EXIT_INPUT
    assert "koniq10k_scores_and_distributions.csv" in capsys.readouterr().err
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    train = ["train", "--dataset", "csv", "--root", str(tmp_path), *TEST, "--out", str(tmp_path / "m")]
    assert main(train) == EXIT_INPUT
    assert "labels.csv" in capsys.readouterr().err
    assert main([*train, "--meta", "synthetic"]) == EXIT_INPUT
    assert "--meta needs --meta-root" in capsys.readouterr().err


def test_import_official_then_score(vit_backbone, photos, tmp_path, capsys):
    """A checkpoint in the official release's key layout converts and scores from the command line."""
    import torch
    from official_reference import tiny_official_state

    official = tmp_path / "clive_50_prompt_lda_5.0.pt"
    torch.save(tiny_official_state(vit_backbone), official)
    out = tmp_path / "imported"
    assert main(["import-official", str(official), "--out", str(out), "--backbone", "test-tiny-vit"]) == 0
    assert "imported clive_50_prompt_lda_5.0.pt" in capsys.readouterr().out
    assert read_config(out.with_suffix(".json")).variant == "paper"
    photo = tmp_path / "one.png"
    photos[0].image.save(photo)
    assert main(["score", str(photo), "--backbone", "test-tiny-vit", "--method", "grmp", "--checkpoint", str(out)]) == 0
    assert "GRMP-IQA" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize("pretrained", [[], ["--pretrained", "none"]])
def test_train_on_a_set_too_small_to_correlate_says_so_instead_of_crashing(photos, tmp_path, capsys, pretrained):
    root = tmp_path / "set"
    root.mkdir()
    lines = ["path,score"]
    for i in range(8):
        photos[i % len(photos)].image.resize((96, 64)).save(root / f"p{i}.png")
        lines.append(f"p{i}.png,{i / 7:.3f}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    args = ["train", "--dataset", "csv", "--root", str(root / "labels.csv"), *TEST[:2], *pretrained]
    args += ["--shots", "4", "--steps", "2"]
    assert main([*args, "--out", str(tmp_path / "m")]) == 0
    out, err = capsys.readouterr()
    assert "SRCC n/a" in out and "checkpoint: " in out
    assert "no test correlation: its test part (" in err and "is too small (under 3)" in err
