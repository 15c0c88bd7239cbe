"""app.core.images.load_image: the one loader used by the CLI, the index build and the UI."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.images import ALLOWED_FORMATS, BACKGROUND_RGB, load_image
from app.errors import InvalidImageError
from tests.helpers import png_claiming

DATA = Path(__file__).parent / "data"
WHITE = BACKGROUND_RGB
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def two_halves(size=(40, 20), left=RED, right=BLUE) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, w // 2, h))
    return img


# -- EXIF orientation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, size, red_at, blue_at",
    [
        (1, (40, 20), (5, 10), (35, 10)),  # no rotation: red on the left
        (3, (40, 20), (35, 10), (5, 10)),  # 180 degrees: red on the right
        (6, (20, 40), (10, 5), (10, 35)),  # display rotated 90 clockwise: left edge goes to the top
        (8, (20, 40), (10, 35), (10, 5)),  # display rotated 90 counter-clockwise: left edge to the bottom
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, size, red_at, blue_at):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    two_halves().save(path, "JPEG", quality=95, exif=exif.tobytes())
    for source in (path, path.read_bytes(), Image.open(path)):
        img = load_image(source)
        assert img.size == size
        px = pixels(img)
        assert np.abs(px[red_at[1], red_at[0]] - RED).max() < 40
        assert np.abs(px[blue_at[1], blue_at[0]] - BLUE).max() < 40


def test_real_exif_rotated_photo_decodes_upright():
    upright = load_image(DATA / "photo_chelsea.jpg")
    rotated_file = Image.open(DATA / "photo_chelsea_exif6.jpg")
    assert rotated_file.size == upright.size[::-1]  # stored sideways
    rotated = load_image(DATA / "photo_chelsea_exif6.jpg")
    assert rotated.size == upright.size
    assert np.abs(pixels(rotated) - pixels(upright)).mean() < 3  # same picture, up to JPEG noise


# -- modes -----------------------------------------------------------------------------------


def _mode_1():
    img = Image.new("1", (2, 1), 0)
    img.putpixel((1, 0), 1)
    return img, [(0, 0, 0), (255, 255, 255)]


def _mode_l():
    img = Image.new("L", (2, 1), 77)
    img.putpixel((1, 0), 200)
    return img, [(77, 77, 77), (200, 200, 200)]


def _palette(transparent: bool):
    img = Image.new("P", (3, 1), 0)
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    img.putpixel((1, 0), 1)
    img.putpixel((2, 0), 2)
    if transparent:
        img.info["transparency"] = 0  # index 0 (red) is fully transparent
        return img, [WHITE, GREEN, BLUE]
    return img, [RED, GREEN, BLUE]


def _mode_la():
    img = Image.new("LA", (3, 1))
    img.putpixel((0, 0), (0, 0))  # transparent black
    img.putpixel((1, 0), (0, 255))  # opaque black
    img.putpixel((2, 0), (100, 255))
    return img, [WHITE, (0, 0, 0), (100, 100, 100)]


def _mode_rgba():
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    img.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black on white: mid grey
    return img, [WHITE, RED, (127, 127, 127)]


def _mode_cmyk():
    img = Image.new("CMYK", (2, 1), (0, 255, 255, 0))  # red
    img.putpixel((1, 0), (0, 0, 0, 255))  # black
    return img, [RED, (0, 0, 0)]


def _mode_i16():
    img = Image.new("I;16", (3, 1), 0)
    img.putpixel((0, 0), 65535)
    img.putpixel((1, 0), 32768)
    return img, [(255,) * 3, (128,) * 3, (0,) * 3]


def _mode_i():
    img = Image.new("I", (3, 1), 0)
    img.putpixel((0, 0), 65535)
    img.putpixel((1, 0), 32768)
    return img, [(255,) * 3, (128,) * 3, (0,) * 3]


def _mode_f():
    img = Image.new("F", (3, 1), 0.0)
    img.putpixel((0, 0), 1.0)
    img.putpixel((1, 0), 0.5)
    return img, [(255,) * 3, (128,) * 3, (0,) * 3]


# (name, factory, file formats the mode survives a round trip through)
MODES = [
    ("1", _mode_1, ["PNG", "BMP", "TIFF"]),
    ("L", _mode_l, ["PNG", "BMP", "TIFF", "WEBP"]),
    ("P", lambda: _palette(False), ["PNG", "GIF", "BMP"]),
    ("P+transparency", lambda: _palette(True), ["PNG", "GIF"]),
    ("LA", _mode_la, ["PNG", "TIFF"]),
    ("RGBA", _mode_rgba, ["PNG", "TIFF", "WEBP"]),
    ("CMYK", _mode_cmyk, ["TIFF", "JPEG"]),
    ("I;16", _mode_i16, ["PNG", "TIFF"]),
    ("I", _mode_i, ["TIFF"]),
    ("F", _mode_f, ["TIFF"]),
]


@pytest.mark.parametrize("name, factory, formats", MODES, ids=[m[0] for m in MODES])
def test_every_mode_reaches_rgb(name, factory, formats):
    img, expected = factory()
    out = load_image(img)
    assert out.mode == "RGB" and out.size == img.size
    assert np.abs(pixels(out)[0] - np.array(expected)).max() <= 1, name

    for fmt in formats:
        kw = {"lossless": True} if fmt == "WEBP" else {"quality": 100} if fmt == "JPEG" else {}
        data = encode(img, fmt, **kw)
        reopened = Image.open(io.BytesIO(data))
        if fmt in ("PNG", "TIFF"):
            assert reopened.mode.split(";")[0] == img.mode.split(";")[0], (fmt, reopened.mode)
        out = load_image(data)
        assert out.mode == "RGB" and out.size == img.size
        tolerance = 12 if fmt in ("JPEG", "WEBP") else 1
        assert np.abs(pixels(out)[0] - np.array(expected)).max() <= tolerance, (name, fmt)


@pytest.mark.parametrize("mode, key", [("L", 10), ("RGB", (255, 0, 0))])
def test_png_colour_key_transparency_gets_the_background(mode, key):
    img = Image.new(mode, (2, 1), key)
    img.putpixel((1, 0), 200 if mode == "L" else (0, 0, 255))
    out = pixels(load_image(encode(img, "PNG", transparency=key)))
    assert tuple(out[0, 0]) == WHITE
    assert tuple(out[0, 1]) == ((200,) * 3 if mode == "L" else BLUE)


def test_sixteen_bit_greyscale_photo_is_rescaled_not_clipped():
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 65536, size=(16, 16), dtype=np.uint16)
    img = Image.fromarray(arr)  # I;16
    out = pixels(load_image(encode(img, "PNG")))[..., 0]
    assert np.abs(out - arr / 257.0).max() <= 1  # the whole 16-bit range maps onto 0..255


# -- animation ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
@pytest.mark.parametrize("colours", [(RED, BLUE, GREEN), (BLUE, GREEN, RED)])
def test_animated_images_give_their_first_frame(tmp_path, fmt, colours):
    frames = [Image.new("RGB", (16, 12), c) for c in colours]
    path = tmp_path / f"anim.{fmt.lower()}"
    kw = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kw)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    out = load_image(path)
    assert out.size == (16, 12)
    assert np.abs(pixels(out) - colours[0]).max() <= 2


def test_mpo_phone_photo_is_accepted():
    frames = [Image.new("RGB", (16, 12), RED), Image.new("RGB", (16, 12), BLUE)]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    assert np.abs(pixels(load_image(data)) - RED).max() < 10


# -- refused formats, bombs and broken files --------------------------------------------------


@pytest.mark.parametrize("fmt", ["ICO", "PCX", "TGA", "PPM", "SGI"])
def test_formats_outside_the_allow_list_are_refused(tmp_path, fmt):
    assert fmt not in ALLOWED_FORMATS
    data = encode(Image.new("RGB", (16, 16), RED), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would decode it
    path = tmp_path / "disguised.jpg"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data), Image.open(io.BytesIO(data))):
        with pytest.raises(InvalidImageError, match="support"):
            load_image(source)


def test_a_lower_pixel_limit_refuses_larger_images(tmp_path):
    img = Image.new("RGB", (20, 20), RED)
    path = tmp_path / "a.png"
    img.save(path)
    for source in (path, path.read_bytes(), img):
        with pytest.raises(InvalidImageError, match="too large"):
            load_image(source, max_pixels=399)
        assert load_image(source, max_pixels=400).size == (20, 20)


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 10_000), (9_000, 9_000)])
def test_png_header_claiming_huge_dimensions_is_refused(tmp_path, size):
    data = png_claiming(*size)
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data)):
        with pytest.raises(InvalidImageError, match="too large"):
            load_image(source, draft_size=232)


def _valid_files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8))
    return {"jpg": encode(noise, "JPEG", quality=90), "png": encode(noise, "PNG")}


BROKEN = {
    "truncated-jpeg-half": lambda f: f["jpg"][: len(f["jpg"]) // 2],
    "truncated-jpeg-header": lambda f: f["jpg"][:200],
    "truncated-jpeg-no-eoi": lambda f: f["jpg"][:-300],
    "truncated-png-half": lambda f: f["png"][: len(f["png"]) // 2],
    "truncated-png-signature": lambda f: f["png"][:8],
    "truncated-png-ihdr": lambda f: f["png"][:40],
    "empty": lambda f: b"",
    "random-bytes": lambda f: np.random.default_rng(1).bytes(5000),
    "text": lambda f: b"Dear diary,\nthis is not a picture.\n" * 20,
    "html": lambda f: b"<!doctype html><html><body>404 Not Found</body></html>",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_input_raises_the_one_typed_error(tmp_path, case):
    data = BROKEN[case](_valid_files())
    path = tmp_path / "renamed.jpg"  # e.g. a .txt renamed .jpg
    path.write_bytes(data)
    sources = [data, path, str(path), io.BytesIO(data)]
    for source in sources:
        with pytest.raises(InvalidImageError) as info:
            load_image(source, draft_size=232)
        message = str(info.value)
        assert message and "\n" not in message


def test_missing_path_and_directory_raise_invalid_image(tmp_path):
    with pytest.raises(InvalidImageError, match="No such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(InvalidImageError, match="Not a file"):
        load_image(tmp_path)


def test_random_corruption_never_escapes_as_another_exception():
    files = _valid_files()
    rng = np.random.default_rng(7)
    outcomes = set()
    for i in range(80):
        data = bytearray(files["jpg" if i % 2 else "png"])
        if i % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        for _ in range(int(rng.integers(1, 6))):
            pos = int(rng.integers(0, len(data)))
            data[pos] = int(rng.integers(0, 256))
        try:
            img = load_image(bytes(data), draft_size=32)
        except InvalidImageError:
            outcomes.add("refused")
        else:
            assert img.mode == "RGB" and min(img.size) > 0
            outcomes.add("decoded")
    assert outcomes == {"refused", "decoded"}  # the corruption really hit both outcomes


# -- input kinds, draft mode, file handles ----------------------------------------------------


def test_bytes_path_file_like_and_pil_inputs_agree(tmp_path):
    path = DATA / "photo_coffee.png"
    data = path.read_bytes()
    reference = pixels(load_image(path))
    assert reference.shape[:2] == Image.open(path).size[::-1]
    with open(path, "rb") as fh:
        sources = [str(path), data, bytearray(data), memoryview(data), io.BytesIO(data), fh, Image.open(path)]
        for source in sources:
            assert np.array_equal(pixels(load_image(source)), reference), type(source)
        assert not fh.closed  # the caller's file stays the caller's


@pytest.mark.parametrize("name", ["photo_chelsea.jpg", "photo_rocket.jpg", "photo_coffee.png", "photo_camera.png"])
def test_real_photos_load_as_rgb(name):
    src = Image.open(DATA / name)
    img = load_image(DATA / name)
    assert img.mode == "RGB" and img.size == src.size
    assert (DATA / name).stat().st_size <= 60_000
    if src.mode == "L":
        px = pixels(img)
        assert np.array_equal(px[..., 0], px[..., 2]) and np.array_equal(px[..., 0], np.asarray(src))


def test_jpeg_draft_decodes_smaller_but_never_below_the_requested_size(tmp_path):
    rng = np.random.default_rng(5)
    arr = np.kron(rng.integers(0, 256, size=(150, 200, 3)), np.ones((10, 10, 1))).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr).save(path, quality=90)  # 2000 x 1500
    full = load_image(path)
    assert full.size == (2000, 1500)
    for want in (232, 300, 700, 1499):
        small = load_image(path, draft_size=want)
        assert min(small.size) >= want
        assert small.size[0] * small.size[1] < 2000 * 1500 or want > 750
        assert abs(small.size[0] / small.size[1] - 4 / 3) < 0.01
    assert load_image(path, draft_size=232).size == (500, 375)  # the largest scale that keeps >= 232
    # PNG: no draft mode, the full image
    png = tmp_path / "big.png"
    Image.fromarray(arr).save(png)
    assert load_image(png, draft_size=232).size == (2000, 1500)


def test_draft_with_exif_rotation_keeps_both_sides_large_enough(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (1600, 1200), RED).save(path, quality=80, exif=exif.tobytes())
    img = load_image(path, draft_size=232)
    assert img.size[1] > img.size[0]  # portrait after rotation
    assert min(img.size) >= 232 and img.size[0] < 1200


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
def test_no_file_handles_left_open(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    bad = tmp_path / "bad.png"
    bad.write_bytes(_valid_files()["png"][:300])
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        load_image(gif)
        with pytest.raises(InvalidImageError):
            load_image(bad)
        with pytest.raises(InvalidImageError):
            load_image(png_claiming(100_000, 100_000))
    assert len(os.listdir("/proc/self/fd")) <= before
