"""Thumbnails and previews (:mod:`app.core.thumbnails`) and the new-query path
(:mod:`app.service.query_image`): made once, cached by path and mtime, re-encoded, placeholders for
missing or broken files, and one decode of an upload by the app's own loader."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.thumbnails import PREVIEW_SIZE, THUMB_SIZE, Thumbnails
from app.errors import InvalidImageError
from app.service.query_image import COPY_SIZE, image_key, prepare_query
from app.service.timings import Timings
from tests.helpers import png_claiming


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def thumbs(tmp_path) -> Thumbnails:
    return Thumbnails(tmp_path / "cache" / "thumbnails")


def test_thumbnail_fits_256_and_is_made_once(thumbs, tmp_path):
    src = tmp_path / "big.jpg"
    noise((1200, 800)).save(src, quality=90)
    r = thumbs.thumb(src)
    assert r.ok and r.path.is_relative_to(thumbs.root)
    with Image.open(r.path) as im:
        assert im.format == "JPEG" and max(im.size) == THUMB_SIZE and im.size == (256, 171)
    made = r.path.stat().st_mtime_ns
    again = thumbs.thumb(src)
    assert again.path == r.path and again.path.stat().st_mtime_ns == made  # read from the cache
    preview = thumbs.preview(src)
    assert preview.path != r.path and Image.open(preview.path).size == (PREVIEW_SIZE, 683)


def test_a_changed_file_gets_a_new_thumbnail(thumbs, tmp_path):
    src = tmp_path / "a.png"
    Image.new("RGB", (300, 300), (255, 0, 0)).save(src)
    first = thumbs.thumb(src)
    Image.new("RGB", (300, 300), (0, 0, 255)).save(src)
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 1_000_000_000))
    second = thumbs.thumb(src)
    assert second.path != first.path
    assert Image.open(second.path).convert("RGB").getpixel((10, 10))[2] > 200  # the new picture


def test_small_images_keep_their_size(thumbs, tmp_path):
    src = tmp_path / "small.png"
    noise((96, 72)).save(src)
    assert Image.open(thumbs.thumb(src).path).size == (96, 72)
    assert Image.open(thumbs.preview(src).path).size == (96, 72)


@pytest.mark.parametrize("kind", ["missing", "not-an-image", "empty", "bomb", "directory"])
def test_missing_or_broken_sources_give_a_placeholder(thumbs, tmp_path, kind):
    src = tmp_path / "x.jpg"
    if kind == "not-an-image":
        src.write_text("hello")
    elif kind == "empty":
        src.write_bytes(b"")
    elif kind == "bomb":
        src.write_bytes(png_claiming(30_000, 30_000))
    elif kind == "directory":
        src.mkdir()
    r = thumbs.thumb(src)
    assert not r.ok and r.path.is_file()
    with Image.open(r.path) as im:
        assert im.size == (THUMB_SIZE, THUMB_SIZE)
    assert thumbs.preview(src).path != r.path  # a placeholder per size


def test_renderings_hold_only_pixels(thumbs, tmp_path):
    """A JPEG with a ZIP appended (a polyglot) and EXIF metadata: the thumbnail is re-encoded from the
    pixels, so neither reaches a browser; EXIF orientation is applied."""
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° to show upright
    exif[0x010E] = "secret description"
    noise((120, 60)).save(buf, format="JPEG", exif=exif)
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as z:
        z.writestr("evil.html", "<script>alert(1)</script>")
    src = tmp_path / "poly.jpg"
    src.write_bytes(buf.getvalue() + payload.getvalue())
    data = thumbs.thumb(src).path.read_bytes()
    assert b"PK\x03\x04" not in data and b"secret description" not in data and b"<script>" not in data
    assert Image.open(io.BytesIO(data)).size == (60, 120)


def test_alpha_and_cmyk_sources_render(thumbs, tmp_path):
    rgba = tmp_path / "t.png"
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(rgba)
    cmyk = tmp_path / "c.jpg"
    Image.new("CMYK", (50, 50), (0, 255, 255, 0)).save(cmyk)
    assert Image.open(thumbs.thumb(rgba).path).convert("RGB").getpixel((5, 5)) >= (250, 250, 250)  # on white
    assert thumbs.thumb(cmyk).ok


# -- new query images --------------------------------------------------------------------------------
def test_prepare_query_hashes_the_bytes_and_copies_once(tmp_path):
    src = tmp_path / "photo.jpg"
    noise((2400, 1600)).save(src, quality=90)
    t = Timings()
    q = prepare_query(src, tmp_path / "copies", timings=t)
    assert q.key == hashlib.sha256(src.read_bytes()).hexdigest()
    assert min(q.image.size) >= 256 and q.image.size[0] < 2400  # decoded at a reduced JPEG scale
    assert max(q.shown.size) <= COPY_SIZE and Image.open(q.copy).size == q.shown.size
    assert set(t.ms) == {"hash", "decode", "copy"}
    made = q.copy.stat().st_mtime_ns
    again = prepare_query(src.read_bytes(), tmp_path / "copies")
    assert again.key == q.key and again.copy == q.copy and q.copy.stat().st_mtime_ns == made


def test_prepare_query_of_pixels_uses_the_pixel_key(tmp_path):
    img = noise((64, 48))
    q = prepare_query(img, tmp_path)
    assert q.key == image_key(img) and q.shown.size == (64, 48)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"just some text, not an image", "not an image"),
    (png_claiming(20_000, 20_000), "too large"),
])
def test_prepare_query_refuses_bad_files_with_the_loaders_message(tmp_path, data, reason):
    src = tmp_path / "upload.png"
    src.write_bytes(data)
    with pytest.raises(InvalidImageError, match=reason):
        prepare_query(src, tmp_path / "copies")
    assert not (tmp_path / "copies").exists() or not any((tmp_path / "copies").iterdir())


def test_prepare_query_refuses_files_over_the_size_limit(tmp_path):
    src = tmp_path / "big.png"
    noise((300, 300)).save(src)
    with pytest.raises(InvalidImageError, match="larger than the limit"):
        prepare_query(src, tmp_path, max_bytes=src.stat().st_size - 1)
    assert prepare_query(src, tmp_path, max_bytes=src.stat().st_size).shown.size == (300, 300)


def test_paths_are_not_followed_outside_a_file(tmp_path):
    with pytest.raises(InvalidImageError):
        prepare_query(Path(tmp_path / "nothing.png"), tmp_path)
