import json

import pytest

from iqa.methods.prompts import (
    PRESETS,
    PromptError,
    PromptPair,
    check_pairs,
    load_pairs,
    preset,
    save_pairs,
    usable_pairs,
)


def test_presets_hold_the_documented_pairs():
    assert [p.positive for p in PRESETS["seed"]] == ["a beautiful photo", "a professional photo", "a sharp photo"]
    assert len(PRESETS["pyiqa"]) == 5 and PRESETS["pyiqa"][0] == PromptPair("Good image", "bad image")
    assert len(PRESETS["paper-look"]) == 6 and PRESETS["paper-look"][3] == PromptPair("Noisy photo.", "Clean photo.")
    assert len(PRESETS["paper-feel"]) == 6 and PRESETS["paper-feel"][4].negative == "Peaceful photo."


def test_validation_reasons(rn_backbone):
    pairs = [
        PromptPair("good", "bad"),
        PromptPair(" ", "bad"),
        PromptPair("Sharp", "sharp"),
        PromptPair("x " * 76, "y"),
        PromptPair("a", "b", weight=-1),
    ]
    reasons = check_pairs(pairs, rn_backbone.tokenizer)
    assert reasons[0] is None
    assert "empty" in reasons[1] and "same" in reasons[2] and "77" in reasons[3] and "weight" in reasons[4]


def test_disabled_pairs_are_skipped_and_zero_weights_refused():
    pairs = [PromptPair("good", "bad"), PromptPair("", "", enabled=False)]
    assert usable_pairs(pairs) == pairs[:1]
    with pytest.raises(PromptError, match="add up to zero"):
        usable_pairs([PromptPair("good", "bad", weight=0)])


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_save_and_load_round_trip(tmp_path, suffix):
    pairs = [PromptPair("a sharp photo", "a blurry photo", 2.0), PromptPair("bright", "dark", 1.0, False)]
    assert load_pairs(save_pairs(pairs, tmp_path / f"set{suffix}")) == pairs


def test_load_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PromptError, match="not valid JSON"):
        load_pairs(bad)
    bad.write_text(json.dumps([{"positive": "x"}]))
    with pytest.raises(PromptError, match="entry 1: needs"):
        load_pairs(bad)
    with pytest.raises(PromptError, match="does not exist"):
        load_pairs(tmp_path / "missing.json")
    with pytest.raises(PromptError, match="unknown prompt preset"):
        preset("nope")
    assert load_pairs("seed") == PRESETS["seed"]
