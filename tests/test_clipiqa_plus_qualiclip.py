"""CLIP-IQA+ and QualiCLIP on the test backbones: every way in (command line score / filter / eval /
--out, Ray rows, Python API), their weights files (local, Hub, offline, malicious, wrong shape) and
the CoOp layout with the class words in the middle. Parity with pyiqa on full-size seeded weights
is in `test_pyiqa_parity.py` (slow)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hostile import write_malicious_pickle

from iqa.cli.main import EXIT_OK, EXIT_WEIGHTS, main
from iqa.clip.backbones import BadCheckpoint, CheckpointMismatch
from iqa.clip.hub import HubFileMismatch, HubFileUnavailable, file_sha256, hub_file
from iqa.clip.prompt_learner import PromptLearner
from iqa.clip.test_backbones import MEANINGLESS_NOTE
from iqa.errors import UsageError
from iqa.methods import registry
from iqa.methods.clipiqa_plus.context import PROMPTS_SHA256, learned_context
from iqa.methods.clipiqa_plus.scorer import CLASS_TEXTS
from iqa.methods.qualiclip.method import PAIRS
from iqa.methods.qualiclip.weights import read_qualiclip
from iqa.methods.scoring import ScorerSpec, build_scorers
from iqa.names import CLIP_IQA, CLIP_IQA_PLUS, QUALICLIP
from iqa.report import charts

TEST = ["--backbone", "test-tiny-rn"]
ALL_THREE = "clipiqa,clipiqa+,qualiclip"


def _spec(*methods: str, **options) -> ScorerSpec:
    return ScorerSpec(methods=methods, backbone="test-tiny-rn", options=options)


def test_the_registry_describes_both():
    plus, quali = registry.method(CLIP_IQA_PLUS), registry.method(QUALICLIP)
    assert (plus.option, plus.column, plus.follows_prompts, plus.needs_store) == (
        "clipiqa+",
        "clip_iqa_plus",
        False,
        True,
    )
    assert (quali.option, quali.column, quali.follows_prompts, quali.needs_store) == (
        "qualiclip",
        "qualiclip",
        False,
        False,
    )
    assert registry.from_option("clipiqa+,qualiclip") == (CLIP_IQA_PLUS, QUALICLIP)
    for method in (plus, quali):
        assert "arxiv.org/abs/" in method.about and "$" in method.about


def test_python_api_shares_clip_iqas_features_on_a_test_backbone(photos):
    scorers = build_scorers(_spec(CLIP_IQA, CLIP_IQA_PLUS, QUALICLIP))
    store = scorers[CLIP_IQA].store
    assert scorers[CLIP_IQA_PLUS].store is store and scorers[QUALICLIP].store is store  # the test backbone stands in
    results = {name: scorer.score(photos) for name, scorer in scorers.items()}
    assert store.images_encoded == len(photos)  # one image pass for the three methods
    plus, quali = results[CLIP_IQA_PLUS], results[QUALICLIP]
    assert all(len(r.pairs) == 1 and r.score == r.pairs[0].p for r in plus)
    assert [(p.positive, p.negative) for p in quali[0].pairs] == list(PAIRS)
    for r in quali:
        assert r.score == pytest.approx(np.mean([p.p for p in r.pairs]), abs=1e-6)
        assert r.temperature == pytest.approx(store.backbone.logit_scale / 2)
    assert all(MEANINGLESS_NOTE in r.notes for r in plus + quali)
    assert len({round(r.score, 6) for r in plus}) == len(photos)  # photos score apart
    again = build_scorers(_spec(CLIP_IQA_PLUS))[CLIP_IQA_PLUS].score(photos)
    assert [r.score for r in again] == [r.score for r in plus]  # the random test context is deterministic
    bars = charts.pair_breakdown([quali[0], plus[0]]).data[0]
    assert len(bars.y) == len(PAIRS) + 1 and bars.y[0].startswith("QualiCLIP: Good photo.")


def test_qualiclip_alone_loads_the_test_backbone_itself(photos):
    scorer = build_scorers(_spec(QUALICLIP))[QUALICLIP]
    assert scorer.backbone.is_test and len(scorer.score(photos)) == len(photos)


def test_a_context_file_is_what_scores(photos, tmp_path):
    """A saved context (other than the default) is read back and changes the scores; its hash is recorded."""
    ctx = (torch.randn(16, 32, generator=torch.Generator().manual_seed(5)) / 6).half()
    torch.save(ctx, tmp_path / "ctx.pth")
    default = build_scorers(_spec(CLIP_IQA_PLUS))[CLIP_IQA_PLUS]
    scorer = build_scorers(_spec(CLIP_IQA_PLUS, **{CLIP_IQA_PLUS: {"clipiqa_plus_prompts": tmp_path / "ctx.pth"}}))[
        CLIP_IQA_PLUS
    ]
    assert torch.equal(scorer.context.ctx, ctx.float())
    assert scorer.settings()["prompts_sha256"] == file_sha256(tmp_path / "ctx.pth")
    ours, theirs = scorer.score(photos), default.score(photos)
    assert all(abs(a.score - b.score) > 1e-4 for a, b in zip(ours, theirs))


def test_class_words_in_the_middle_equal_the_hard_prompt(rn_backbone):
    """With context vectors that are word embeddings, the middle layout is the text with the class
    words between the two halves of the context words (the release's "Good photo.." included)."""
    tower, tokenizer = rn_backbone.text_tower, rn_backbone.tokenizer
    words = "one two three four five six seven eight nine ten red blue green black white gray".split()
    learner = PromptLearner(tower, tokenizer, CLASS_TEXTS, n_ctx=16, class_position="middle")
    assert learner.class_lengths == (3, 3)  # good, photo, ".." (one BPE token)
    with torch.no_grad():
        learner.ctx.copy_(tower.embed(tokenizer([" ".join(words)]))[0, 1:17])
        learned = learner()
        texts = [" ".join([*words[:8], f"{text}.", *words[8:]]) for text in CLASS_TEXTS]
        hard = tower.encode_tokens(tokenizer(texts))
    assert torch.allclose(learned, hard, atol=1e-5)
    assert learner.display_texts()[0] == "[8 learned tokens] Good photo. [8 learned tokens]"


def test_command_line_scores_filters_and_writes_all_three(album, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert main(["score", str(album), *TEST, "--method", ALL_THREE, "--out", str(out)]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[0].split()[:4] == ["rank", CLIP_IQA, CLIP_IQA_PLUS, QUALICLIP]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3
    for row in rows:
        assert 0 <= float(row[f"score[{CLIP_IQA_PLUS}]"]) <= 1 and 0 <= float(row[f"score[{QUALICLIP}]"]) <= 1
        assert "p[QualiCLIP: Noise-free image. / Noisy image.]" in row
    settings = json.loads((tmp_path / "scores.csv.settings.json").read_text())
    labels = [s["label"] for s in settings["scorers"]]
    assert labels == [CLIP_IQA, CLIP_IQA_PLUS, QUALICLIP] and "seed" in settings["scorers"][1]["prompts"]
    assert main(["filter", str(album), *TEST, "--method", "qualiclip", "--threshold", "2"]) == EXIT_OK
    assert "3 of 3" in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_out_files_carry_both(album, tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    assert main(["score", str(album), *TEST, "--method", "clipiqa+,qualiclip", "--out", str(out)]) == EXIT_OK
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    assert len(rows) == 3 and all(f"score[{CLIP_IQA_PLUS}]" in row and f"score[{QUALICLIP}]" in row for row in rows)


@pytest.mark.parametrize(("option", "name"), [("clipiqa+", CLIP_IQA_PLUS), ("qualiclip", QUALICLIP)])
def test_eval_scores_each(album, capsys, option, name):
    (album / "labels.csv").write_text("path,score\nastronaut.jpg,1\nchelsea.jpg,2\ncoffee.jpg,3\n")
    assert main(["eval", "--dataset", "csv", "--root", str(album), *TEST, "--method", option]) == EXIT_OK
    assert f"{name} on csv (3 images): SRCC" in capsys.readouterr().out


def test_ray_rows_carry_both(album):
    from iqa.engine.ray_decode import DecodeBatch
    from iqa.engine.ray_engine import NODE_COLUMN, ScoreBatch

    spec = _spec(CLIP_IQA, CLIP_IQA_PLUS, QUALICLIP)
    files = sorted(album.iterdir())
    decoded = DecodeBatch(1024, True)({"bytes": [f.read_bytes() for f in files], "path": [str(f) for f in files]})
    batch = {**decoded.to_pydict(), NODE_COLUMN: ["here"] * len(files)}
    methods = [registry.method(name) for name in spec.methods]
    table = ScoreBatch(spec, methods)({key: np.array(values, dtype=object) for key, values in batch.items()})
    for column in ("clip_iqa", "clip_iqa_plus", "qualiclip"):
        assert all(0 <= score <= 1 for score in table.column(column).to_pylist())
    assert not any(name.startswith("p[Good photo.") for name in table.column_names)  # fixed pairs: no p columns


def test_malicious_files_are_refused_without_running_them(tmp_path, rn_backbone):
    marker = tmp_path / "pwned"
    evil = write_malicious_pickle(tmp_path / "evil.pth", marker)
    with pytest.raises(BadCheckpoint, match="refused to load .*evil.pth.*run code"):
        learned_context(rn_backbone, evil)
    with pytest.raises(BadCheckpoint, match="refused to load .*evil.pth.*run code"):
        read_qualiclip(evil)
    assert not marker.exists()


def test_files_of_another_shape_or_layout_say_what_was_expected(tmp_path, rn_backbone):
    torch.save(torch.zeros(16, 512).half(), tmp_path / "rn50-context.pth")
    with pytest.raises(CheckpointMismatch, match=r"shape \(16, 512\).*needs a bare tensor of shape \(16, 32\)"):
        learned_context(rn_backbone, tmp_path / "rn50-context.pth")
    torch.save({"params": torch.zeros(3)}, tmp_path / "whole.pth")
    with pytest.raises(CheckpointMismatch, match="not a CLIP-IQA\\+ context: expected a bare tensor"):
        learned_context(rn_backbone, tmp_path / "whole.pth")
    tiny = {f"clip_model.{k}": v for k, v in rn_backbone.model.state_dict().items()}
    torch.save(tiny, tmp_path / "tiny.pth")
    with pytest.raises(
        CheckpointMismatch, match="tiny.pth .*does not fit backbone 'RN50-quickgelu'.*fine-tuned OpenAI RN50"
    ):
        read_qualiclip(tmp_path / "tiny.pth")
    torch.save({"visual.proj": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatch, match="not a QualiCLIP file: expected clip_model"):
        read_qualiclip(tmp_path / "other.pth")


def test_the_release_context_is_for_rn50_only():
    vit = SimpleNamespace(name="ViT-B-16-quickgelu", is_test=False)
    with pytest.raises(UsageError, match="learned on OpenAI's RN50.*--clipiqa-plus-prompts PATH"):
        learned_context(vit)


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_offline_names_the_file_the_repository_and_the_way_out(offline, album, capsys):
    rn50 = SimpleNamespace(name="RN50-quickgelu", is_test=False)
    named = "CLIP-IQA\\+_learned_prompts-603f3273.pth from .*chaofengc/IQA-PyTorch-Weights"
    with pytest.raises(HubFileUnavailable, match=named):
        learned_context(rn50)
    assert main(["score", str(album), "--method", "qualiclip"]) == EXIT_WEIGHTS
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "QualiCLIP.pth" in error and "chaofengc/IQA-PyTorch-Weights" in error
    assert "HF_HUB_OFFLINE is set" in error and "--qualiclip-weights PATH" in error


def test_a_hub_file_is_pinned_by_its_hash(monkeypatch, tmp_path):
    import huggingface_hub

    path = tmp_path / "CLIP-IQA+_learned_prompts-603f3273.pth"
    torch.save(torch.zeros(16, 512).half(), path)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: str(path))
    with pytest.raises(HubFileMismatch, match=f"not the pinned {PROMPTS_SHA256}"):
        hub_file("chaofengc/IQA-PyTorch-Weights", path.name, "", sha256=PROMPTS_SHA256)
    assert hub_file("chaofengc/IQA-PyTorch-Weights", path.name, "", sha256=file_sha256(path)[:8]) == path


def test_the_context_file_option_reads_its_environment_variable(album, tmp_path, monkeypatch):
    torch.save((torch.randn(16, 32, generator=torch.Generator().manual_seed(9)) / 6).half(), tmp_path / "mine.pth")
    monkeypatch.setenv("IQA_CLIPIQA_PLUS_PROMPTS", str(tmp_path / "mine.pth"))
    out = tmp_path / "scores.csv"
    assert main(["score", str(album), *TEST, "--method", "clipiqa+", "--out", str(out)]) == EXIT_OK
    settings = json.loads((tmp_path / "scores.csv.settings.json").read_text())["scorers"][0]
    assert settings["prompts"].startswith("mine.pth")
    assert settings["prompts_sha256"] == file_sha256(tmp_path / "mine.pth")


@pytest.mark.parametrize("option", ["--clipiqa-plus-prompts", "--qualiclip-weights"])
def test_a_missing_local_file_is_one_line(album, tmp_path, capsys, option):
    method = "clipiqa+" if option == "--clipiqa-plus-prompts" else "qualiclip"
    assert main(["score", str(album), *TEST, "--method", method, option, str(tmp_path / "nope.pth")]) == EXIT_WEIGHTS
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "nope.pth does not exist" in error
