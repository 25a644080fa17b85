"""MA-CLIP against pyiqa 0.1.16's `maclip` on identical weights: the seeded RN50 of
`tests/reference/make_pyiqa_clip_methods.py`, written to a file and loaded as `--weights` is, then
every recorded photo scored; each score and each view's c, m, w_c, w_m and fused score within 1e-5
of the recorded fp32 outputs (`tests/reference/pyiqa_clip_methods.json`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from iqa.clip.features import FeatureStore
from iqa.methods.maclip.method import VIEWS
from iqa.methods.prompts import PRESETS
from iqa.methods.scoring import ScorerSpec, build_scorers, feature_store
from iqa.names import MA_CLIP
from iqa.photos.photo import Photo

REFERENCE = Path(__file__).parent / "reference"
sys.path.insert(0, str(REFERENCE))
import make_pyiqa_clip_methods as ref  # noqa: E402

pytestmark = pytest.mark.slow
RECORD = json.loads((REFERENCE / "pyiqa_clip_methods.json").read_text())
TOLERANCE = 1e-5


@pytest.fixture(scope="session")
def rn50_file(tmp_path_factory) -> Path:
    """The seeded "OpenAI RN50" as a plain state-dict file, checked against the recipe's checksum."""
    state = ref.rn50_state(ref.SEED_RN50)
    assert ref.checksum(state) == RECORD["weights"]["rn50"]["checksum"]
    path = tmp_path_factory.mktemp("pyiqa-ref") / "rn50-seed18001.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def store(rn50_file) -> FeatureStore:
    """The project's own loading path for `--weights FILE` (fp32 on the CPU, no downsizing: pyiqa's input)."""
    spec = ScorerSpec(backbone="RN50-quickgelu", pretrained=None, weights=rn50_file, device="cpu", dtype="fp32")
    return FeatureStore(feature_store(spec).backbone, max_side=None)


def test_every_score_and_view_matches_pyiqa(store):
    spec = ScorerSpec(methods=(MA_CLIP,), options={MA_CLIP: {"pairs": PRESETS["pyiqa"]}})
    scorer = build_scorers(spec, store)[MA_CLIP]
    rows = {(row["photo"], row["resize"]): row for row in RECORD["outputs"]["maclip"]["rows"]}
    for given in ref.input_photos():
        row = rows[(given["photo"], given["resize"])]
        photo = Photo(f"{given['photo']} {given['resize']}", Image.fromarray(given["pixels"]))
        result = scorer.score([photo])[0]
        if "error" in row:  # smaller than 224 on a side: pyiqa refuses it, we score the whole photo
            assert min(given["width"], given["height"]) < 224 and result.extras[VIEWS] == 1
            assert "whole-photo view only" in " ".join(result.notes)
            continue
        assert result.extras[VIEWS] == row["patches"] + 1 == len(row["views"])
        assert result.score == pytest.approx(row["score"], abs=TOLERANCE), photo.name
        views = scorer.views(scorer.store.image_features([photo]))
        for name in ("c", "m", "w_c", "w_m", "fused"):
            expected = [view[name] for view in row["views"]]
            assert getattr(views, name)[0].tolist() == pytest.approx(expected, abs=TOLERANCE), (photo.name, name)
        # p = sigmoid(100·(s_pos − s_neg)) scales the cosines' float error (~1e-7, batched vs LND
        # attention) by up to 25: one p of the 180 differs by 1.2e-5; their mean c stays within 1e-5
        pairs = [pair["p"] for view in row["views"] for pair in view["pairs"]]
        assert views.p[0].flatten().tolist() == pytest.approx(pairs, abs=3e-5)
