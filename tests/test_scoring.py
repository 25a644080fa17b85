"""The scorer factory and its one rule for sharing CLIP-IQA's backbone and features."""

from dataclasses import replace

import pytest

from iqa.errors import UsageError
from iqa.methods.grmp.checkpoint import save_checkpoint
from iqa.methods.grmp.model import GRMPConfig, GRMPModel
from iqa.methods.grmp.scorer import shares_backbone
from iqa.methods.scoring import ScorerSpec, build_scorers
from iqa.names import CLIP_IQA, GRMP_IQA

BOTH = (CLIP_IQA, GRMP_IQA)


@pytest.fixture(scope="module")
def seed_checkpoint(rn_backbone, tmp_path_factory):
    model = GRMPModel(GRMPConfig("seed", rn_backbone.name, rn_backbone.pretrained), rn_backbone)
    return save_checkpoint(model, tmp_path_factory.mktemp("grmp") / "seed")[0]


def test_a_seed_checkpoint_of_the_same_backbone_scores_from_clip_iqas_features(seed_checkpoint, photos):
    scorers = build_scorers(
        ScorerSpec(methods=BOTH, backbone="test-tiny-rn", options={GRMP_IQA: {"checkpoint": seed_checkpoint}})
    )
    assert list(scorers) == [CLIP_IQA, GRMP_IQA]
    clip, grmp = scorers[CLIP_IQA], scorers[GRMP_IQA]
    assert grmp.backbone is clip.backbone and grmp.store is clip.store
    results = grmp.score(photos)
    assert clip.store.images_encoded == len(photos)
    assert [(r.method, r.variant, r.label) for r in results[:1]] == [(GRMP_IQA, "seed", "GRMP-IQA (seed)")]
    assert clip.score(photos)[0].method == CLIP_IQA
    assert clip.store.images_encoded == len(photos)  # CLIP-IQA encoded nothing again


def test_other_preprocessing_shares_the_backbone_but_not_the_features(seed_checkpoint):
    spec = ScorerSpec(
        methods=BOTH, backbone="test-tiny-rn", options={GRMP_IQA: {"checkpoint": seed_checkpoint}}, max_side=128
    )
    scorers = build_scorers(spec)
    assert scorers[GRMP_IQA].backbone is scorers[CLIP_IQA].backbone
    assert scorers[GRMP_IQA].store is not scorers[CLIP_IQA].store


def test_a_checkpoint_carrying_its_backbone_or_trained_on_other_weights_loads_its_own(rn_backbone):
    seed = GRMPConfig("seed", rn_backbone.name, rn_backbone.pretrained)
    assert shares_backbone(seed, rn_backbone)
    assert not shares_backbone(replace(seed, pretrained="openai"), rn_backbone)
    assert not shares_backbone(replace(seed, backbone="test-tiny-vit"), rn_backbone)
    assert not shares_backbone(GRMPConfig("paper", rn_backbone.name, None), rn_backbone)


def test_the_spec_refuses_unknown_methods_and_grmp_without_a_checkpoint():
    with pytest.raises(UsageError, match="unknown method"):
        ScorerSpec(methods=("BRISQUE",))
    with pytest.raises(UsageError, match="needs a checkpoint"):
        ScorerSpec(methods=BOTH)
