import math
import zipfile

import pytest

from iqa.clip.features import FeatureStore
from iqa.lab.prompt_lab import LabelledPhotos, load_labelled_uploads, rank_pairs
from iqa.labels.metrics import srcc
from iqa.methods.clipiqa.scorer import CLIPIQA
from iqa.methods.prompts import PRESETS, PromptPair
from iqa.methods.results import ScoreResult
from iqa.photos.photo import Photo
from iqa.report.compare import compare, ranked, rows_to_csv, split, zip_photos


@pytest.fixture(scope="module")
def labelled(photos):
    """Each photo and a degraded (darker, smaller) copy; labels favour the originals."""
    items, scores = [], []
    for photo in photos:
        for k, factor in enumerate((1.0, 0.6, 0.3)):
            image = photo.image.point(lambda v, f=factor: int(v * f))
            items.append(Photo(f"{photo.name}-{k}", image))
            scores.append(3.0 - k)
    return LabelledPhotos(items, scores)


def test_each_pair_is_ranked_by_its_own_srcc(rn_backbone, labelled):
    store = FeatureStore(rn_backbone)
    pairs = PRESETS["seed"] + [PromptPair("a bright photo", "a dark photo", enabled=False)]
    report = rank_pairs(store, pairs, labelled)
    assert len(report.ranks) == 4 and report.n == 9
    srccs = [r.srcc for r in report.ranks]
    assert srccs == sorted(srccs, reverse=True)
    for rank in report.ranks:  # each number is that pair's own CLIP-IQA score against the labels
        alone = CLIPIQA(store, [PromptPair(rank.pair.positive, rank.pair.negative)])
        scores = [r.score for r in alone.score(labelled.photos)]
        assert rank.srcc == pytest.approx(srcc(scores, labelled.scores))


def test_mean_of_chosen_pairs_is_the_clip_iqa_score(rn_backbone, labelled):
    store = FeatureStore(rn_backbone)
    pairs = [
        PromptPair("a sharp photo", "a blurry photo", weight=2.0),
        PromptPair("good", "bad"),
        PromptPair("a bright photo", "a dark photo", enabled=False),
    ]
    report = rank_pairs(store, pairs, labelled, temperature=1.0)
    scores = [r.score for r in CLIPIQA(store, pairs, temperature=1.0).score(labelled.photos)]
    assert report.chosen_srcc == pytest.approx(srcc(scores, labelled.scores))
    assert report.temperature == 1.0


def test_images_are_encoded_once_across_prompt_changes(rn_backbone, labelled):
    store = FeatureStore(rn_backbone)
    rank_pairs(store, PRESETS["seed"], labelled)
    rank_pairs(store, PRESETS["pyiqa"], labelled)
    assert store.images_encoded == len(labelled.photos)


def test_invalid_pairs_are_reported_not_dropped_silently(rn_backbone, labelled):
    report = rank_pairs(FeatureStore(rn_backbone), [PromptPair("good", "bad"), PromptPair("same", "Same")], labelled)
    assert len(report.ranks) == 1
    assert report.invalid == ["same / Same: the positive and negative prompts are the same"]


def test_no_chosen_pair_gives_nan_and_too_few_photos_is_an_error(rn_backbone, labelled):
    store = FeatureStore(rn_backbone)
    report = rank_pairs(store, [PromptPair("good", "bad", enabled=False)], labelled)
    assert math.isnan(report.chosen_srcc) and len(report.ranks) == 1
    with pytest.raises(ValueError, match="at least 3"):
        rank_pairs(store, PRESETS["seed"], LabelledPhotos(labelled.photos[:2], labelled.scores[:2]))


def test_uploads_are_matched_to_csv_rows_by_file_name(tmp_path, photos):
    files = []
    for photo in photos:
        path = tmp_path / "upload" / photo.name / f"{photo.name}.png"
        path.parent.mkdir(parents=True)
        photo.image.save(path)
        files.append(path)
    broken = tmp_path / "upload" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    csv = tmp_path / "scores.csv"
    csv.write_text("name,score\nsome/dir/astronaut.png,4.5\nchelsea.png,2\nbroken.jpg,1\nmissing.png,3\n")
    labelled = load_labelled_uploads(csv, files + [broken])
    assert [p.name for p in labelled.photos] == ["astronaut.png", "chelsea.png"]
    assert labelled.scores == [4.5, 2.0]
    assert any("broken.jpg" in s for s in labelled.skipped)
    assert "missing.png: listed in the CSV but not uploaded" in labelled.skipped
    assert "coffee.png: uploaded but has no score in the CSV" in labelled.skipped


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,quality\na.png,1\n", "needs a header"),
        ("path,score\na.png,high\n", "line 2: score 'high' is not a number"),
    ],
)
def test_bad_score_csv_names_the_problem(tmp_path, text, message):
    csv = tmp_path / "s.csv"
    csv.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_labelled_uploads(csv, [])


class FixedScorer:
    method = "GRMP-IQA"
    label = "GRMP-IQA (seed)"

    def __init__(self, scores):
        self.scores = scores

    def score(self, photos, progress=None):
        return [ScoreResult(p.name, self.scores[p.name], [], self.method, variant="seed") for p in photos]


def test_compare_ranks_splits_and_writes_both_scores(rn_backbone, photos, tmp_path):
    grmp = FixedScorer({"astronaut": 0.9, "chelsea": 0.1, "coffee": 0.5})
    rows = compare(photos, [CLIPIQA(FeatureStore(rn_backbone), PRESETS["seed"]), grmp])
    assert [r.name for r in ranked(rows, "GRMP-IQA")] == ["astronaut", "coffee", "chelsea"]
    kept, rejected = split(rows, 0.5, "GRMP-IQA")
    assert [r.name for r in kept] == ["astronaut", "coffee"] and [r.name for r in rejected] == ["chelsea"]
    lines = rows_to_csv(rows, 0.5, "GRMP-IQA").splitlines()
    header = lines[0].split(",")  # a column per registered method (those not scored stay empty), then the decision
    assert header[:4] == ["rank", "name", "clip_iqa", "grmp_iqa"] and header.index("decision") > 3
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert [row["name"] for row in rows] == ["astronaut", "coffee", "chelsea"]
    assert [row["grmp_iqa"] for row in rows] == ["0.900000", "0.500000", "0.100000"]
    assert [row["decision"] for row in rows] == ["keep", "keep", "reject"]
    assert (rows[0]["method"], rows[0]["threshold"]) == ("GRMP-IQA", "0.5")
    with pytest.raises(ValueError, match="no GRMP-IQA scores"):
        ranked(compare(photos, [CLIPIQA(FeatureStore(rn_backbone), PRESETS["seed"])]), "GRMP-IQA")


def test_zip_keeps_original_bytes_and_unique_names(tmp_path, photos):
    """Names that clash (two files a.jpg from different folders, two in-memory photos "a") all survive."""
    originals = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        originals.append(tmp_path / folder / "a.jpg")
    photos[0].image.save(originals[0])
    photos[1].image.save(originals[1])
    archive = zip_photos(
        [
            Photo("a.jpg", photos[0].image, originals[0]),
            Photo("a.jpg", photos[1].image, originals[1]),
            Photo("a", photos[2].image),
            Photo("a", photos[0].image),
        ],
        tmp_path / "kept.zip",
    )
    with zipfile.ZipFile(archive) as z:
        assert z.namelist() == ["a.jpg", "a-1.jpg", "a.png", "a-1.png"]
        assert z.read("a.jpg") == originals[0].read_bytes() and z.read("a-1.jpg") == originals[1].read_bytes()
