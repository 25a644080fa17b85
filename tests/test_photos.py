"""Tests for iqa.photos.photo: every fixture is written with Pillow (or numpy) into tmp_path."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from iqa.photos import photo as photos
from iqa.photos.photo import (
    SUPPORTED_EXTENSIONS,
    Photo,
    PhotoError,
    collect_photo_paths,
    image_digest,
    open_photo,
    open_photos,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def two_colour_image(size: tuple[int, int] = (40, 20)) -> Image.Image:
    """Left half red, right half blue: shows colour and orientation at a glance."""
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def png_with_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with almost no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def assert_close(pixel, expected, tolerance: int = 8) -> None:
    assert all(abs(a - b) <= tolerance for a, b in zip(pixel, expected)), (pixel, expected)


def heif_writable() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    try:
        encode(Image.new("RGB", (8, 8)), "HEIF")
    except (KeyError, OSError, ValueError):
        return False
    return True


# --- formats -------------------------------------------------------------------------------

LOSSLESS = {"png": "PNG", "tiff": "TIFF", "bmp": "BMP", "gif": "GIF"}
LOSSY = {"jpg": "JPEG", "webp": "WEBP", "heic": "HEIF"}


@pytest.mark.parametrize("suffix", [*LOSSLESS, *LOSSY])
def test_each_format_opens_as_upright_rgb(tmp_path, suffix):
    if suffix == "heic" and not heif_writable():
        pytest.skip("pillow-heif cannot write HEIC here")
    fmt = {**LOSSLESS, **LOSSY}[suffix]
    path = write(tmp_path / f"photo.{suffix}", encode(two_colour_image((64, 32)), fmt))

    photo = open_photo(path)

    assert photo.name == str(path) and photo.path == path
    assert photo.image.mode == "RGB" and photo.image.size == (64, 32)
    tolerance = 2 if suffix in LOSSLESS else 40
    assert_close(photo.image.getpixel((8, 16)), RED, tolerance)
    assert_close(photo.image.getpixel((56, 16)), BLUE, tolerance)


def test_supported_extensions_are_lowercase_with_dots():
    assert set(SUPPORTED_EXTENSIONS) == {
        ".jpg",
        ".jpeg",
        ".png",
        ".webp",
        ".tif",
        ".tiff",
        ".bmp",
        ".gif",
        ".heic",
        ".heif",
    }


def test_missing_pillow_heif_gives_install_hint(tmp_path, monkeypatch):
    # ISO-BMFF header with the "heic" brand is enough for the check, which runs before decoding.
    heic_head = struct.pack(">I", 24) + b"ftypheic" + b"\x00" * 4 + b"mif1heic"
    monkeypatch.setattr(photos, "_heif_opener_registered", lambda: False)
    with pytest.raises(PhotoError, match=r"^x\.heic: .*pip install pillow-heif"):
        open_photo(heic_head + b"\x00" * 64, name="x.heic")


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be rotated 90 degrees clockwise to display
    path = write(tmp_path / "rotated.jpg", encode(two_colour_image(), "JPEG", exif=exif))

    image = open_photo(path).image

    assert image.size == (20, 40)
    assert_close(image.getpixel((10, 5)), RED, 40)  # the stored left half is now on top
    assert_close(image.getpixel((10, 35)), BLUE, 40)
    assert image.getexif().get(0x0112, 1) == 1


def test_16_bit_rgb_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    pixels = np.zeros((4, 6, 3), np.uint16)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 65535, 257 * 128, 257 * 10
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, pixels, photometric="rgb")

    assert open_photo(path).image.getpixel((0, 0)) == (255, 128, 10)


# --- pixel formats -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_white(tmp_path, fmt):
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (5, 0, 10, 10))
    path = write(tmp_path / f"palette.{fmt.lower()}", encode(image, fmt, transparency=0))

    result = open_photo(path).image

    assert result.getpixel((1, 5)) == WHITE
    assert result.getpixel((8, 5)) == RED


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 64, 32896, 65535]], np.uint16)
    grey16 = Image.fromarray(values)
    assert grey16.mode == "I;16"
    path = write(tmp_path / "grey16.png", encode(grey16, "PNG"))

    result = open_photo(path).image

    assert [result.getpixel((x, 0)) for x in range(4)] == [(0, 0, 0), (64, 64, 64), (128, 128, 128), (255, 255, 255)]


def test_32_bit_integer_grey_is_treated_as_16_bit():
    image = Image.fromarray(np.array([[0, 32896, 70000]], np.int32))
    assert image.mode == "I"
    result = open_photo(image).image
    assert [result.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk(tmp_path, fmt):
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    path = write(tmp_path / f"cmyk.{fmt.lower()}", encode(cyan, fmt))
    assert_close(open_photo(path).image.getpixel((8, 8)), (0, 255, 255), 6)


def test_cmyk_with_unusable_icc_profile_falls_back_to_plain_conversion():
    cyan = Image.new("CMYK", (4, 4), (255, 0, 0, 0))
    cyan.info["icc_profile"] = b"not a profile"
    assert open_photo(cyan).image.getpixel((0, 0)) == (0, 255, 255)


def test_cmyk_uses_embedded_icc_profile(tmp_path, monkeypatch):
    calls = []

    def fake_transform(image, source, target, outputMode):
        calls.append((image.mode, source, outputMode))
        return Image.new("RGB", image.size, (0, 200, 0))

    monkeypatch.setattr(photos.ImageCms, "ImageCmsProfile", lambda file: file.read())
    monkeypatch.setattr(photos.ImageCms, "profileToProfile", fake_transform)
    cyan = Image.new("CMYK", (4, 4), (255, 0, 0, 0))
    path = write(tmp_path / "cmyk.jpg", encode(cyan, "JPEG", icc_profile=b"press profile"))

    assert open_photo(path).image.getpixel((0, 0)) == (0, 200, 0)
    assert calls == [("CMYK", b"press profile", "RGB")]


def test_alpha_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    path = write(tmp_path / "alpha.png", encode(image, "PNG"))

    result = open_photo(path).image

    assert result.getpixel((0, 0)) == WHITE  # hidden red must not show
    assert result.getpixel((1, 0)) == BLUE
    assert_close(result.getpixel((2, 0)), (127, 127, 127), 1)


def test_grey_with_alpha_and_one_bit(tmp_path):
    grey_alpha = Image.new("LA", (2, 1))
    grey_alpha.putdata([(0, 0), (0, 255)])
    assert open_photo(grey_alpha).image.getpixel((0, 0)) == WHITE
    assert open_photo(grey_alpha).image.getpixel((1, 0)) == (0, 0, 0)

    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    path = write(tmp_path / "bilevel.png", encode(bilevel, "PNG"))
    result = open_photo(path).image
    assert [result.getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), WHITE]


def test_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, BLUE, (0, 255, 0))]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    with Image.open(path) as check:
        assert check.n_frames == 3

    assert open_photo(path).image.getpixel((4, 4)) == RED


# --- limits and broken files ---------------------------------------------------------------


def test_header_beyond_pillow_bomb_limit_is_refused(tmp_path):
    path = write(tmp_path / "bomb.png", png_with_header_only(50_000, 50_000))
    with pytest.raises(PhotoError, match=r"bomb\.png: .*decompression bomb"):
        open_photo(path)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    # 108 MP: below Pillow's hard limit, above ours. The file holds no real pixel data, so
    # the size message (rather than "truncated") shows the header was checked before decoding.
    path = write(tmp_path / "huge.png", png_with_header_only(12_000, 9_000))
    with pytest.raises(PhotoError) as caught:
        open_photo(path)
    assert str(caught.value) == f"{path}: 12000x9000 pixels is more than the 100 MP limit"

    small = write(tmp_path / "small.png", encode(two_colour_image((100, 100)), "PNG"))
    with pytest.raises(PhotoError, match="100x100 pixels is more than the 0.005 MP limit"):
        open_photo(small, max_pixels=5_000)
    assert open_photo(small, max_pixels=None).image.size == (100, 100)


def test_byte_limit(tmp_path):
    path = write(tmp_path / "photo.png", encode(Image.effect_noise((64, 64), 40), "PNG"))
    with pytest.raises(PhotoError, match="MB limit"):
        open_photo(path, max_bytes=1000)


def test_truncated_jpeg_is_refused(tmp_path):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    data = encode(Image.effect_noise((128, 128), 60).convert("RGB"), "JPEG")
    path = write(tmp_path / "cut.jpg", data[: len(data) // 2])
    with pytest.raises(PhotoError, match=r"cut\.jpg: image is corrupt or truncated"):
        open_photo(path)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_damaged_png_header_is_called_corrupt_not_foreign(tmp_path):
    data = encode(two_colour_image(), "PNG")
    with pytest.raises(PhotoError, match="corrupt or truncated"):
        open_photo(data[:20], name="bad.png")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"just some notes\n", "not an image file (looks like a text file)"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "not an image file (looks like a PDF)"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "looks like an HTML page"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG drawing"),
        (bytes(range(1, 200)), "not an image file in a supported format"),
    ],
)
def test_non_image_file_named_jpg(tmp_path, content, expected):
    path = write(tmp_path / "x.jpg", content)
    with pytest.raises(PhotoError) as caught:
        open_photo(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in caught.value.reason


def test_empty_missing_and_folder(tmp_path):
    empty = write(tmp_path / "empty.png", b"")
    with pytest.raises(PhotoError, match="empty.png: file is empty"):
        open_photo(empty)
    with pytest.raises(PhotoError, match="nope.jpg: file not found"):
        open_photo(tmp_path / "nope.jpg")
    with pytest.raises(PhotoError, match="is a folder"):
        open_photo(tmp_path)


def test_zero_sized_images():
    with pytest.raises(PhotoError, match="zero size"):
        open_photo(Image.new("RGB", (0, 5)))
    with pytest.raises(PhotoError, match="zero size"):
        open_photo(np.zeros((0, 4, 3), np.uint8))


def test_photo_error_fields_and_pickling():
    error = PhotoError("a.jpg", "file not found")
    assert isinstance(error, ValueError)
    assert (error.name, error.reason) == ("a.jpg", "file not found")
    assert str(error) == "a.jpg: file not found"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.name, copy.reason) == ("a.jpg", "file not found")


def test_photo_requires_rgb():
    with pytest.raises(ValueError, match="RGB"):
        Photo("grey", Image.new("L", (2, 2)))


# --- in-memory inputs ----------------------------------------------------------------------


def test_bytes_and_custom_name():
    data = encode(two_colour_image(), "PNG")
    for source in (data, bytearray(data), memoryview(data)):
        photo = open_photo(source, name="upload.png")
        assert photo.name == "upload.png" and photo.path is None
        assert photo.image.getpixel((0, 0)) == RED
    assert open_photo(data).name == "<bytes>"
    with pytest.raises(PhotoError, match="upload.png: not an image"):
        open_photo(b"hello", name="upload.png")


def test_pil_input_is_copied_not_changed():
    original = two_colour_image()
    photo = open_photo(original)
    photo.image.putpixel((0, 0), (0, 255, 0))
    assert original.getpixel((0, 0)) == RED

    palette = original.convert("P")
    assert open_photo(palette).image.getpixel((39, 0)) == BLUE
    assert palette.mode == "P"


def test_numpy_inputs():
    grey = np.array([[0, 255]], np.uint8)
    assert open_photo(grey).image.getpixel((1, 0)) == WHITE
    assert open_photo(grey[..., None]).image.size == (2, 1)

    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 2] = 255
    photo = open_photo(rgb)
    assert (photo.name, photo.image.size, photo.image.getpixel((2, 1))) == ("<array>", (3, 2), BLUE)

    rgba = np.zeros((1, 1, 4), np.uint8)  # transparent black
    assert open_photo(rgba).image.getpixel((0, 0)) == WHITE

    floats = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert [open_photo(floats).image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]

    deep = np.array([[0, 129, 32896, 65535]], np.uint16)  # 129 / 257 rounds up, 129 // 256 not
    assert [open_photo(deep).image.getpixel((x, 0))[0] for x in range(4)] == [0, 1, 128, 255]
    deep_rgb = np.stack([deep] * 3, axis=-1)
    assert open_photo(deep_rgb).image.getpixel((2, 0)) == (128, 128, 128)

    transposed = np.ascontiguousarray(rgb.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not transposed.flags.c_contiguous
    assert open_photo(transposed).image.getpixel((2, 1)) == BLUE

    assert open_photo(np.array([[True, False]])).image.getpixel((0, 0)) == WHITE


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((2, 2), 1.5), r"\[0, 1\], found 1.5"),
        (np.full((2, 2), np.nan), r"\[0, 1\]"),
        (np.zeros((3, 8, 8), np.uint8), "channels first"),
        (np.zeros((2, 2, 2), np.uint8), "not HxW, HxWx3 or HxWx4"),
        (np.zeros((2, 2), np.int64), "unsupported pixel type int64"),
    ],
)
def test_bad_numpy_inputs(array, message):
    with pytest.raises(PhotoError, match=message):
        open_photo(array, name="frame")


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="cannot open a photo from int"):
        open_photo(42)


def test_image_digest_tracks_content_mode_and_size():
    image = two_colour_image()
    assert image_digest(image) == image_digest(image.copy())
    changed = image.copy()
    changed.putpixel((0, 0), (254, 0, 0))
    assert image_digest(changed) != image_digest(image)
    # Same bytes, different shape or mode must not collide.
    flat = Image.frombytes("RGB", (20, 40), image.tobytes())
    assert image_digest(flat) != image_digest(image)
    grey = Image.new("L", (3, 1))
    as_rgb_bytes = Image.frombytes("RGB", (1, 1), grey.tobytes())
    assert image_digest(grey) != image_digest(as_rgb_bytes)


# --- collecting and batches ----------------------------------------------------------------


@pytest.fixture
def album(tmp_path) -> Path:
    """album/{b.jpg, a.PNG, notes.txt, .hidden.jpg, sub/c.webp, sub/deeper/d.gif}"""
    root = tmp_path / "album"
    (root / "sub" / "deeper").mkdir(parents=True)
    small = two_colour_image((8, 8))
    write(root / "b.jpg", encode(small, "JPEG"))
    write(root / "a.PNG", encode(small, "PNG"))
    write(root / "notes.txt", b"not a photo")
    write(root / ".hidden.jpg", encode(small, "JPEG"))
    write(root / "sub" / "c.webp", encode(small, "WEBP"))
    write(root / "sub" / "deeper" / "d.gif", encode(small, "GIF"))
    return root


def names(paths: list[Path], root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in paths]


def test_collect_folder(album):
    assert names(collect_photo_paths([album]), album) == ["a.PNG", "b.jpg"]
    assert names(collect_photo_paths([str(album)], recursive=True), album) == [
        "a.PNG",
        "b.jpg",
        "sub/c.webp",
        "sub/deeper/d.gif",
    ]


def test_collect_explicit_file_keeps_any_extension(album):
    assert collect_photo_paths([album / "notes.txt"]) == [album / "notes.txt"]
    assert collect_photo_paths(album / "notes.txt") == [album / "notes.txt"]  # one pattern


def test_collect_globs(album):
    assert names(collect_photo_paths([f"{album}/*.jpg"]), album) == ["b.jpg"]
    assert names(collect_photo_paths([f"{album}/**/*.gif"]), album) == ["sub/deeper/d.gif"]
    assert names(collect_photo_paths([f"{album}/*"]), album) == ["a.PNG", "b.jpg", "sub/c.webp"]


def test_collect_deduplicates_in_stable_order(album, monkeypatch):
    monkeypatch.chdir(album)
    found = collect_photo_paths(["b.jpg", str(album), "./b.jpg", "*.PNG", "sub/c.webp"])
    assert found == [Path("b.jpg"), album / "a.PNG", Path("sub/c.webp")]


def test_collect_reports_patterns_matching_nothing(album):
    with pytest.raises(FileNotFoundError, match="missing.jpg: no such file or folder"):
        collect_photo_paths([album / "b.jpg", album / "missing.jpg"])
    with pytest.raises(FileNotFoundError, match=r"\*\.tif: no photos match"):
        collect_photo_paths([f"{album}/*.tif"])
    nested = album / "outer" / "inner"
    nested.mkdir(parents=True)
    write(nested / "e.png", encode(two_colour_image((4, 4)), "PNG"))
    with pytest.raises(FileNotFoundError, match="outer: is a folder with no photos.*recursive option"):
        collect_photo_paths([album / "outer"])
    assert collect_photo_paths([album / "outer"], recursive=True) == [nested / "e.png"]
    empty = album / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is a folder with no photos"):
        collect_photo_paths([empty], recursive=True)


def test_open_photos_keeps_the_good_ones(album):
    write(album / "broken.jpg", b"\xff\xd8\xff\xe0 then nothing useful")
    sources = [album / "a.PNG", album / "broken.jpg", album / "missing.png", album / "b.jpg"]

    opened, errors = open_photos(sources)

    assert [photo.path for photo in opened] == [album / "a.PNG", album / "b.jpg"]
    assert [error.name for error in errors] == [str(album / "broken.jpg"), str(album / "missing.png")]
    assert "corrupt or truncated" in errors[0].reason
    assert errors[1].reason == "file not found"


def test_open_photos_passes_limits(album):
    opened, errors = open_photos([album / "a.PNG"], max_pixels=10)
    assert opened == [] and "MP limit" in errors[0].reason


def test_collect_then_open_roundtrip(album):
    opened, errors = open_photos(collect_photo_paths([album], recursive=True))
    assert errors == [] and len(opened) == 4
    assert all(photo.image.mode == "RGB" and photo.image.size == (8, 8) for photo in opened)
    assert os.fspath(opened[0].path).endswith("a.PNG")
