"""Issue 12, hostile and unusual images: each gives the typed error with a clear message, or the right pixels.

Every file is generated here (seeded) or is a fixed regression file in tests/data/; each case goes
through ``load_image`` as bytes and as a file, the two ways images reach it (uploads and URLs as bytes,
builds and the CLI as paths).
"""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from app.core.datasets import image_files
from app.core.formats import sniff
from app.core.images import load_image
from app.core.models import get_model
from app.core.preprocess import preprocess
from app.errors import InvalidImageError
from scripts import make_test_photos

RED = (255, 0, 0)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(seed: int, size=(80, 64)) -> Image.Image:
    w, h = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def blocks(size=(48, 32)) -> Image.Image:
    """The phone-photo generator's test picture (scripts/make_test_photos.py), 48 x 32 unless asked."""
    return make_test_photos.blocks(size)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes, extra: bytes = b"",
            after_idat: bytes = b"") -> bytes:
    """A PNG from raw filtered-less scanlines (``rows`` without the filter bytes), with extra chunks."""
    stride = len(rows) // height
    raw = b"".join(b"\0" + rows[i * stride : (i + 1) * stride] for i in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw))
            + after_idat + png_chunk(b"IEND", b""))


def both_ways(data: bytes, tmp_path: Path, name: str) -> list:
    path = tmp_path / name
    path.write_bytes(data)
    return [data, path]


def refused(data: bytes, tmp_path: Path, name: str, *fragments: str) -> str:
    """Assert ``data`` is refused, as bytes and as a file called ``name``, with every fragment in the message."""
    messages = []
    for source in both_ways(data, tmp_path, name):
        start = time.monotonic()
        with pytest.raises(InvalidImageError) as info:
            load_image(source, draft_size=232)
        assert time.monotonic() - start < 2.0, "refusing took too long: something was decoded"
        message = info.value.user_message()
        assert "\n" not in message and "object at 0x" not in message, message
        for fragment in fragments:
            assert fragment.lower() in message.lower(), (fragment, message)
        messages.append(message)
    return messages[-1]


def near(img: Image.Image, expected: Image.Image | np.ndarray, tolerance: float) -> bool:
    a = np.asarray(img).astype(int)
    b = np.asarray(expected).astype(int)
    return a.shape == b.shape and float(np.abs(a - b).mean()) <= tolerance


# -- decompression bombs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pixel_bombs() -> dict[str, bytes]:
    """Real files of 52 megapixels to 3.6 gigapixels that hold a few kB each."""
    flat = Image.new("L", (7200, 7200), 0)  # 52 megapixels
    gif_header = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    jpeg = encode(noise(2, (16, 16)), "JPEG")
    sof = jpeg.index(b"\xff\xc0") + 5  # baseline frame header: precision, then height and width
    return {
        "bomb.png": encode(flat, "PNG"),
        "bomb.tif": encode(flat, "TIFF", compression="tiff_deflate"),
        "bomb.webp": encode(flat, "WEBP", lossless=True),
        "bomb.gif": encode(Image.new("P", (7500, 7500), 0), "GIF"),
        # a 10x10 GIF screen holding one 30000x30000 frame
        "frame.gif": gif_header + b"," + struct.pack("<HHHHB", 0, 0, 30000, 30000, 0) + b"\x02\x02\x4c\x01\x00\x00;",
        "header.bmp": b"BM" + struct.pack("<IHHI", 0, 0, 0, 54)
        + struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 24, 0, 0, 0, 0, 0, 0),
        "header.jpg": jpeg[:sof] + struct.pack(">HH", 60000, 60000) + jpeg[sof + 4 :],
    }


@pytest.mark.parametrize("name", ["bomb.png", "bomb.tif", "bomb.webp", "bomb.gif", "frame.gif", "header.bmp",
                                  "header.jpg"])
def test_pixel_bombs_are_refused_before_decoding(pixel_bombs, tmp_path, name):
    refused(pixel_bombs[name], tmp_path, name, "too large")


def test_the_pixel_limit_is_the_only_reason_a_bomb_is_refused(pixel_bombs, tmp_path):
    """The same 52-megapixel PNG decodes (correctly) when the caller allows that many pixels."""
    img = load_image(pixel_bombs["bomb.png"], max_pixels=7200 * 7200)
    assert img.size == (7200, 7200) and img.getextrema() == ((0, 0), (0, 0), (0, 0))


def _zlib_bomb(megabytes: int) -> bytes:
    return zlib.compress(b"\0" * (megabytes * 1024 * 1024), 9)


@pytest.mark.parametrize("kind", ["zTXt", "iTXt", "iCCP", "zTXt-after-IDAT"])
def test_png_chunk_bombs_are_refused(tmp_path, kind):
    bomb = _zlib_bomb(100)  # 100 MB of metadata in ~100 kB
    body = {"zTXt": b"Comment\0\0", "iTXt": b"Comment\0\1\0\0\0", "iCCP": b"icc\0\0"}[kind.split("-")[0]] + bomb
    chunk = png_chunk(kind[:4].encode(), body)
    pixels = bytes(8 * 8 * 3)
    after = kind.endswith("IDAT")
    data = raw_png(8, 8, 8, 2, pixels, extra=b"" if after else chunk, after_idat=chunk if after else b"")
    refused(data, tmp_path, "meta.png", "too large to decode safely", "PNG metadata", "1 MB")


def test_png_with_too_much_text_in_all_is_refused(tmp_path):
    limit_mb = PngImagePlugin.MAX_TEXT_MEMORY // (1024 * 1024)
    texts = b"".join(png_chunk(b"tEXt", b"k%d\0" % i + b"x" * 1_000_000) for i in range(limit_mb + 8))
    data = raw_png(8, 8, 8, 2, bytes(8 * 8 * 3), extra=texts)
    refused(data, tmp_path, "talkative.png", "too large to decode safely", f"more than {limit_mb} MB")


def test_png_chunk_longer_than_the_file_is_refused(tmp_path):
    data = raw_png(8, 8, 8, 2, bytes(192))
    data = data[:33] + struct.pack(">I", 0x7FFFFFFF) + b"tEXtabc"  # a 2 GB chunk in 40 bytes
    refused(data, tmp_path, "liar.png", "damaged or truncated PNG")


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (1, 5000), (5000, 1), (3, 40000)])
def test_crop_box_far_larger_than_the_image_gives_the_right_pixels(size):
    """The centre crop (224) is far larger than a tiny or thin image: the crop is the image, scaled."""
    model = get_model("resnet50")
    pp = model.preprocessing
    colour = (90, 160, 30)
    img = load_image(encode(Image.new("RGB", size, colour), "PNG"))
    arr = preprocess(img, pp)
    assert arr.shape == (3, pp.crop, pp.crop) and np.isfinite(arr).all()
    expected = (np.asarray(colour, np.float32) / 255.0 - np.asarray(pp.mean, np.float32)) / np.asarray(pp.std,
                                                                                                          np.float32)
    assert np.allclose(arr, expected[:, None, None], atol=0.02)


def test_a_lazily_opened_image_claiming_a_huge_size_is_refused_before_loading(pixel_bombs):
    with Image.open(io.BytesIO(pixel_bombs["bomb.png"])) as lazy:
        with pytest.raises(InvalidImageError, match="too large"):
            load_image(lazy)


# -- truncated files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, name", [("JPEG", "t.jpg"), ("PNG", "t.png"), ("GIF", "t.gif")])
@pytest.mark.parametrize("keep", [0.02, 0.3, 0.6, 0.9])
def test_truncated_files_are_refused(tmp_path, fmt, name, keep):
    data = encode(noise(3), fmt)
    refused(data[: max(8, int(len(data) * keep))], tmp_path, name, "truncated")


# -- formats, modes and metadata -------------------------------------------------------------------------


def test_cmyk_jpeg_named_gif_loads_by_its_content(tmp_path):
    data = encode(Image.new("CMYK", (32, 24), (0, 255, 255, 0)), "JPEG", quality=95)  # pure red in CMYK
    for source in both_ways(data, tmp_path, "scan.gif"):
        img = load_image(source)
        assert img.mode == "RGB" and near(img, np.full((24, 32, 3), RED), tolerance=3)


def test_sixteen_bit_png_grey_and_colour_keep_their_values(tmp_path):
    rng = np.random.default_rng(16)
    grey = rng.integers(0, 65536, (12, 10), dtype=np.uint16)
    colour = rng.integers(0, 65536, (12, 10, 3), dtype=np.uint16)
    cases = [(raw_png(10, 12, 16, 0, grey.astype(">u2").tobytes()), np.repeat(grey[..., None], 3, axis=2)),
             (raw_png(10, 12, 16, 2, colour.astype(">u2").tobytes()), colour)]
    for data, sixteen in cases:
        expected = sixteen.astype(np.float64) * 255 / 65535
        for source in both_ways(data, tmp_path, "deep.png"):
            got = np.asarray(load_image(source)).astype(np.float64)
            assert got.shape == expected.shape and np.abs(got - expected).max() <= 1.0


@pytest.mark.parametrize("compression", ["raw", "group4", "tiff_lzw"])
def test_one_bit_tiff_is_black_and_white(tmp_path, compression):
    bits = np.random.default_rng(1).integers(0, 2, (30, 41)).astype(bool)
    data = encode(Image.fromarray(bits), "TIFF", compression=compression)
    for source in both_ways(data, tmp_path, "fax.tif"):
        got = np.asarray(load_image(source))
        assert np.array_equal(got, np.repeat((bits * 255).astype(np.uint8)[..., None], 3, axis=2))


# Each EXIF orientation as the stored picture, given the upright one: what a camera writes (EXIF 2.3, 4.6.4).
STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, 1),  # shown after a quarter turn clockwise
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, -1),  # shown after a quarter turn anticlockwise
}


def test_the_eight_stored_orientations_are_all_different():
    upright = np.asarray(blocks())
    stored = [STORED[o](upright) for o in STORED]
    assert all(not (a.shape == b.shape and np.array_equal(a, b)) for i, a in enumerate(stored) for b in stored[i + 1:])


@pytest.mark.parametrize("orientation", sorted(STORED))
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_every_exif_orientation_loads_upright(tmp_path, orientation, fmt):
    upright = blocks()
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](np.asarray(upright))))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    tolerance = 0 if fmt == "PNG" else 4
    for source in both_ways(data, tmp_path, f"o{orientation}.{fmt.lower()}"):
        img = load_image(source)
        assert img.size == upright.size and near(img, upright, tolerance), orientation
    if fmt == "JPEG":  # the build path decodes JPEGs in draft mode (here at half size), then turns them
        small = upright.resize((upright.width // 2, upright.height // 2), Image.BOX)
        assert near(load_image(data, draft_size=16), small, tolerance=8), orientation


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_images_give_their_first_frame(tmp_path, fmt):
    frames = [Image.new("RGB", (40, 30), c) for c in ((200, 30, 30), (30, 200, 30), (30, 30, 200))] * 20
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=40, loop=0,
                  **({"lossless": True} if fmt == "WEBP" else {}))
    with Image.open(io.BytesIO(data)) as check:
        assert check.n_frames == 60
    for source in both_ways(data, tmp_path, f"anim.{fmt.lower()}"):
        assert near(load_image(source), np.full((30, 40, 3), (200, 30, 30)), tolerance=2)


def test_avif_is_decoded_natively(tmp_path):
    upright = blocks((64, 48))
    data = encode(upright, "AVIF", quality=95)
    assert sniff(data) == "AVIF"
    for source in both_ways(data, tmp_path, "photo.avif"):
        img = load_image(source)
        assert img.size == upright.size and near(img, upright, tolerance=6)
    assert image_files(tmp_path) == ["photo.avif"]  # folder collections pick AVIF files up


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    box = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(box)) + b"ftyp" + box + struct.pack(">I", 8) + b"meta" + bytes(200)


@pytest.mark.parametrize("data", [_ftyp(b"heic", b"mif1", b"heic"), _ftyp(b"mif1", b"mif1", b"heic"),
                                  _ftyp(b"heix", b"mif1")], ids=["heic", "mif1-heic", "heix"])
def test_a_heic_header_alone_is_a_damaged_heif(tmp_path, data):
    assert sniff(data) == "HEIF"
    refused(data, tmp_path, "IMG_0001.HEIC", "damaged or truncated HEIF")


def test_truncated_avif_is_called_damaged_not_unsupported(tmp_path):
    data = encode(blocks(), "AVIF")
    refused(data[: len(data) // 2], tmp_path, "half.avif", "damaged or truncated AVIF")


@pytest.mark.parametrize("data", [
    b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9">'
    b'<rect width="9" height="9" fill="red"/></svg>',
    b'\xef\xbb\xbf  <svg xmlns="http://www.w3.org/2000/svg"/>',
    b'<!-- made by hand -->\n<svg viewBox="0 0 1 1"></svg>',
], ids=["xml-prolog", "bom", "comment"])
def test_svg_is_refused_as_an_unsupported_format(tmp_path, data):
    refused(data, tmp_path, "logo.svg", "unsupported format", "SVG")


def test_pdf_is_refused_as_an_unsupported_format(tmp_path):
    refused(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", tmp_path, "scan.pdf", "unsupported", "PDF")


@pytest.mark.parametrize("length", [0, 1, 7, 100, 4096, 100_000])
def test_zero_and_random_bytes_are_refused(tmp_path, length):
    data = np.random.default_rng(length).bytes(length)
    assert sniff(data) is None
    message = refused(data, tmp_path, "random.jpg", "empty" if length == 0 else "not an image")
    assert "random.jpg" in message or "data" in message.lower()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_polyglot_with_a_zip_appended_loads_as_the_image(tmp_path, fmt):
    image = encode(noise(5), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("payload.txt", "not for the image decoder " * 100)
    polyglot = image + archive.getvalue()
    assert zipfile.is_zipfile(io.BytesIO(polyglot))  # it really is a valid ZIP too
    alone = np.asarray(load_image(image))
    for source in both_ways(polyglot, tmp_path, f"poly.{fmt.lower()}"):
        assert np.array_equal(np.asarray(load_image(source)), alone)


def test_zip_first_is_not_an_image(tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.jpg", encode(noise(6), "JPEG"))
    refused(archive.getvalue(), tmp_path, "archive.jpg", "not an image")
