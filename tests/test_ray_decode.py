"""The Ray engine's decode step (no Ray needed): the checks of iqa.photos.photo, EXIF orientation, JPEG draft."""

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pyarrow")

from iqa.engine.ray_decode import DecodeBatch, decode_photo, draft_request, image_from_row  # noqa: E402
from iqa.engine.ray_decode import file_digest as ray_file_digest  # noqa: E402
from iqa.photos.decode import file_digest  # noqa: E402
from iqa.photos.photo import PhotoError, open_photo  # noqa: E402


def jpeg(size, orientation=None) -> bytes:
    gradient = np.linspace(0, 255, size[0], dtype=np.uint8)
    image = Image.fromarray(np.stack([np.tile(gradient, (size[1], 1))] * 3, axis=-1))
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def test_draft_decodes_a_large_jpeg_at_a_scale_that_still_covers_what_scoring_needs():
    decoded = decode_photo(jpeg((4000, 3000)), "big.jpg", max_side=1024)
    assert decoded.image.size == (2000, 1500) and decoded.size == (4000, 3000)  # 1/4 would leave 1000 < 1024
    assert decoded.note == "decoded at 2000x1500 (JPEG draft) of 4000x3000"
    assert draft_request((4000, 3000), 1024) == (1024, 768)
    assert draft_request((8000, 400), 1024) is None  # a panorama: the short side's 512 floor keeps it full size
    full = decode_photo(jpeg((4000, 3000)), "big.jpg", max_side=1024, draft=False)
    assert full.image.size == (4000, 3000) and full.note is None
    assert decode_photo(jpeg((4000, 3000)), "big.jpg", max_side=0).image.size == (4000, 3000)  # 0: never downsize


def test_exif_orientation_is_applied_and_the_size_reported_upright():
    decoded = decode_photo(jpeg((4000, 3000), orientation=6), "turned.jpg", max_side=1024)
    assert decoded.image.size == (1500, 2000) and decoded.size == (3000, 4000)


def test_small_and_non_jpeg_photos_decode_exactly_as_open_photo():
    data = jpeg((640, 480))
    assert decode_photo(data, "a.jpg", 1024).image.tobytes() == open_photo(data).image.tobytes()
    png = io.BytesIO()
    Image.new("RGBA", (300, 200), (10, 20, 30, 0)).save(png, "PNG")
    assert decode_photo(png.getvalue(), "a.png", 1024).image.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"just some notes", r"not an image file \(looks like a text file\)"),
        (jpeg((640, 480))[:300], "corrupt or truncated"),
        (b"", "file is empty"),
    ],
)
def test_bad_files_raise_the_photo_error_open_photo_gives(data, reason):
    with pytest.raises(PhotoError, match=reason):
        decode_photo(data, "bad.jpg", 1024)


def test_a_batch_keeps_going_past_a_bad_file_and_carries_the_pixels():
    good = jpeg((640, 480))
    table = DecodeBatch(max_side=1024)(
        {"bytes": np.array([good, b"notes"], dtype=object), "path": np.array(["a", "b"])}
    )
    rows = table.to_pylist()
    assert rows[0]["error"] is None and rows[1]["error"].startswith("not an image file")
    assert rows[0]["width"] == 640 and len(rows[0]["digest"]) == 32 and rows[1]["pixels"] == b""
    image = image_from_row(rows[0]["pixels"], rows[0]["rows"], rows[0]["cols"])
    assert image.tobytes() == open_photo(good).image.tobytes()


def test_the_decode_step_hashes_as_the_disk_cache_does_without_importing_torch():
    assert ray_file_digest(b"photo bytes") == file_digest(b"photo bytes")
    code = "import sys, iqa.engine.ray_engine, iqa.engine.ray_decode; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
