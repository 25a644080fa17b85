"""The Ray engine on a local Ray with 2 CPUs: the local engine's scores, bad photos as rows, the CLI route."""

import shutil
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from iqa.cli.main import EXIT_OK, EXIT_PARTIAL, main  # noqa: E402
from iqa.engine.ray_engine import RayJob, connect, run_job  # noqa: E402
from iqa.methods.grmp.checkpoint import save_checkpoint  # noqa: E402
from iqa.methods.grmp.model import GRMPConfig, GRMPModel  # noqa: E402
from iqa.methods.scoring import ScorerSpec, build_scorers  # noqa: E402
from iqa.photos.photo import open_photos  # noqa: E402

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    assert connect(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture
def album(tmp_path):
    """Eight bundled photos, a corrupt JPEG and a text file named .jpg."""
    folder = tmp_path / "album"
    folder.mkdir()
    for path in sorted(EXAMPLES.glob("*.jpg"))[:8]:
        shutil.copy(path, folder / path.name)
    (folder / "corrupt.jpg").write_bytes((EXAMPLES / "coffee.jpg").read_bytes()[:400])
    (folder / "notes.jpg").write_text("not a photo")
    return folder


def read_rows(dest: Path) -> dict[str, dict]:
    return {row["path"]: row for row in pq.read_table(dest).to_pylist()}


def test_scores_equal_the_local_engine_with_both_methods(rn_backbone, tmp_path):
    model = GRMPModel(
        GRMPConfig(variant="seed", backbone="test-tiny-rn", pretrained=rn_backbone.pretrained), rn_backbone
    )
    checkpoint = tmp_path / "tiny-seed"
    save_checkpoint(model, checkpoint)
    spec = ScorerSpec(
        methods=("CLIP-IQA", "GRMP-IQA"), backbone="test-tiny-rn", options={"GRMP-IQA": {"checkpoint": str(checkpoint)}}
    )
    summary = run_job(RayJob([str(EXAMPLES)], str(tmp_path / "out"), spec))
    assert summary.scored == 64 and summary.errors == []
    rows = read_rows(tmp_path / "out")
    photos, errors = open_photos(sorted(EXAMPLES.glob("*.jpg")))
    assert not errors and set(rows) == {str(p.path.absolute()) for p in photos}
    for method, column in (("CLIP-IQA", "clip_iqa"), ("GRMP-IQA", "grmp_iqa")):
        for result, photo in zip(build_scorers(spec)[method].score(photos), photos):
            row = rows[str(photo.path.absolute())]
            assert row[column] == pytest.approx(result.score, abs=1e-5)
            if method == "CLIP-IQA":
                for pair in result.pairs:
                    assert row[f"p[{pair.positive} / {pair.negative}]"] == pytest.approx(pair.p, abs=1e-5)
            assert row["error"] is None and "meaningless" in row["notes"]


def test_bad_photos_are_rows_with_an_error_not_fatal(album, tmp_path):
    spec = ScorerSpec(backbone="test-tiny-rn")
    summary = run_job(RayJob([str(album)], str(tmp_path / "out"), spec))
    assert summary.scored == 8
    reasons = {Path(path).name: reason for path, reason in summary.errors}
    assert set(reasons) == {"corrupt.jpg", "notes.jpg"}
    assert "corrupt or truncated" in reasons["corrupt.jpg"] and "text file" in reasons["notes.jpg"]
    rows = {Path(p).name: row for p, row in read_rows(tmp_path / "out").items()}
    assert len(rows) == 10 and rows["notes.jpg"]["error"] == reasons["notes.jpg"]
    assert rows["notes.jpg"]["clip_iqa"] is None or rows["notes.jpg"]["clip_iqa"] != rows["notes.jpg"]["clip_iqa"]
    assert all(0 <= rows[n]["clip_iqa"] <= 1 for n in rows if n not in reasons)


def test_cli_route_writes_parquet_and_names_the_bad_photos(album, tmp_path, capsys):
    dest = tmp_path / "scores"
    args = ["score", str(album), "--backbone", "test-tiny-rn", "--pairs", "seed", "--engine", "ray", "--out", str(dest)]
    assert main(args) == EXIT_PARTIAL
    captured = capsys.readouterr()
    assert "scored 8 photos, 2 unusable" in captured.out and "notes.jpg: not an image file" in captured.err
    table = pq.read_table(dest)
    assert table.column_names == [
        "path", "digest", "width", "height", "clip_iqa",
        "p[a beautiful photo / an ugly photo]", "p[a professional photo / an amateur photo]",
        "p[a sharp photo / a blurry photo]",
        "notes", "error",
    ]  # fmt: skip
    assert table.num_rows == 10
    assert main(args) == EXIT_OK  # the same destination again: every file is in it, nothing is read again
    assert "scored 0 photos, 0 unusable, 10 already in" in capsys.readouterr().out
    assert pq.read_table(dest).num_rows == 10


def test_a_rerun_scores_only_the_files_missing_from_the_destination(album, tmp_path):
    dest = tmp_path / "scores"
    first = sorted(album.glob("*.jpg"))[:3]
    assert run_job(RayJob([str(p) for p in first], str(dest), ScorerSpec(backbone="test-tiny-rn"))).scored == 3
    summary = run_job(RayJob([str(album)], str(dest), ScorerSpec(backbone="test-tiny-rn")))
    assert summary.scored == 5 and summary.already == 3 and len(summary.errors) == 2
    paths = pq.read_table(dest).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == 10


def test_a_destination_holding_other_files_is_refused(album, tmp_path, capsys):
    dest = tmp_path / "scores"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    args = ["score", str(album), "--backbone", "test-tiny-rn", "--engine", "ray", "--out", str(dest)]
    assert main(args) == 2
    assert "holds files that are not this engine's Parquet" in capsys.readouterr().err


def test_uri_sources_and_destinations_go_through_pyarrow_file_systems(album, tmp_path):
    """A `file://` URI takes the object-store route (s3://, gs:// ... are read the same way)."""
    (album / "sub").mkdir()
    shutil.copy(EXAMPLES / "rocket.jpg", album / "sub" / "rocket.jpg")
    (album / "readme.txt").write_text("not listed: no photo extension")
    dest = f"file://{tmp_path / 'out'}"
    summary = run_job(RayJob([f"file://{album}"], dest, ScorerSpec(backbone="test-tiny-rn")))
    assert summary.scored == 9 and {Path(p).name for p, _ in summary.errors} == {"corrupt.jpg", "notes.jpg"}
    names = {Path(p).name for p in read_rows(tmp_path / "out")}
    assert "rocket.jpg" in names and "readme.txt" not in names and len(names) == 11
