"""Issue 19, phone and camera formats: HEIC/HEIF (pillow-heif), AVIF (Pillow) and camera RAW files (rawpy,
from their embedded JPEG preview) go through the one loader, so folders, uploads and the CLI take them.

The files are tests/data/photos/, written by scripts/make_test_photos.py: each holds the same 64x48
picture of four coloured blocks (or a 320x240 one), so the decoded pixels can be compared.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.camera_formats import sniff_raw
from app.core.formats import sniff
from app.core.images import load_image
from app.core.scan import scan_folder
from app.errors import InvalidImageError
from scripts.make_test_photos import blocks
from tests.fakes import FakeEmbedder

PHOTOS = Path(__file__).parent / "data" / "photos"
UPRIGHT = blocks()
TURNED = UPRIGHT.transpose(Image.Transpose.ROTATE_270)  # EXIF orientation 6 displayed


def near(img: Image.Image, expected: Image.Image, tolerance: float = 8.0) -> bool:
    a, b = np.asarray(img).astype(int), np.asarray(expected).astype(int)
    return a.shape == b.shape and float(np.abs(a - b).mean()) <= tolerance


def sources(name: str) -> list:
    """A file the three ways it reaches the loader: a path (folders, CLI), bytes (URLs), a named upload."""
    data = (PHOTOS / name).read_bytes()
    upload = io.BytesIO(data)
    upload.name = name
    return [PHOTOS / name, data, upload]


@pytest.mark.parametrize("name, expected", [("blocks.heic", UPRIGHT), ("blocks.avif", UPRIGHT),
                                            ("blocks_exif6.heic", TURNED), ("blocks_orient6.dng", TURNED)])
def test_phone_and_camera_files_decode_to_the_right_pixels_upright(name, expected):
    for source in sources(name):
        img = load_image(source)
        assert img.mode == "RGB" and near(img, expected), (name, type(source))


def test_formats_are_told_by_their_first_bytes():
    assert sniff((PHOTOS / "blocks.heic").read_bytes()[:1024]) == "HEIF"
    assert sniff((PHOTOS / "blocks.avif").read_bytes()[:1024]) == "AVIF"
    assert sniff_raw((PHOTOS / "blocks_orient6.dng").read_bytes()[:1024])
    tiff = io.BytesIO()
    UPRIGHT.save(tiff, "TIFF")
    assert not sniff_raw(tiff.getvalue()[:1024])  # a plain TIFF stays Pillow's
    assert near(load_image(tiff.getvalue()), UPRIGHT, 0)


def test_a_heic_thumbnail_is_decoded_when_it_covers_the_size_asked_for():
    assert load_image(PHOTOS / "blocks_thumb.heic").size == (320, 240)
    small = load_image(PHOTOS / "blocks_thumb.heic", draft_size=48)
    assert small.size == (64, 48) and near(small, UPRIGHT, 12)  # the embedded 64x48 thumbnail
    assert load_image(PHOTOS / "blocks_thumb.heic", draft_size=100).size == (320, 240)  # too small: the image


def test_a_raw_preview_is_decoded_at_the_draft_scale():
    assert load_image(PHOTOS / "blocks_big_preview.dng").size == (320, 240)
    assert load_image(PHOTOS / "blocks_big_preview.dng", draft_size=30).size == (40, 30)  # JPEG DCT scaling


def test_a_raw_file_without_a_preview_is_refused_with_that_reason(tmp_path):
    for source in sources("no_preview.dng"):
        with pytest.raises(InvalidImageError, match="no readable embedded preview"):
            load_image(source)
    fake = tmp_path / "IMG_1.NEF"
    fake.write_bytes(b"this is not a raw file" * 50)
    with pytest.raises(InvalidImageError, match="not a camera RAW file"):
        load_image(fake)


def test_the_pixel_cap_applies_to_raw_previews_and_heic():
    with pytest.raises(InvalidImageError, match="too large"):
        load_image(PHOTOS / "blocks_big_preview.dng", max_pixels=320 * 240 - 1)
    with pytest.raises(InvalidImageError, match="too large"):
        load_image(PHOTOS / "blocks_thumb.heic", max_pixels=320 * 240 - 1)


@pytest.fixture
def phone_folder(tmp_path: Path) -> Path:
    root = tmp_path / "phone"
    (root / "2024").mkdir(parents=True)
    for name in ("blocks.heic", "blocks.avif", "blocks_orient6.dng", "no_preview.dng"):
        shutil.copy(PHOTOS / name, root / "2024" / name)
    shutil.copy(PHOTOS / "blocks_exif6.heic", root / "IMG_0001.HEIC")  # upper-case, as phones name them
    UPRIGHT.save(root / "2024" / "blocks.jpg", quality=90)
    return root


def test_a_folder_of_phone_files_builds_with_every_readable_one_indexed(phone_folder, tmp_path):
    """The issue's test folder: HEIC, AVIF, a DNG with a preview, 12 MP JPEGs, and NAS/app litter."""
    from app.config import Config
    from app.service.library import index_folder

    big = UPRIGHT.resize((4032, 3024))
    for i in range(2):
        big.save(phone_folder / "2024" / f"IMG_{i}.JPG", quality=90 - i)
    for litter in ("2024/@eaDir/blocks.heic", ".thumbnails/normal", "2024/@eaDir/IMG_0.JPG"):
        (phone_folder / litter).mkdir(parents=True)
        big.save(phone_folder / litter / "SYNOPHOTO_THUMB_XL.jpg", quality=80)
    (phone_folder / ".DS_Store").write_bytes(b"litter")
    scanned = scan_folder(phone_folder)
    assert {path for path, _ in scanned.files} == {
        "2024/blocks.heic", "2024/blocks.avif", "2024/blocks_orient6.dng", "2024/no_preview.dng", "2024/blocks.jpg",
        "2024/IMG_0.JPG", "2024/IMG_1.JPG", "IMG_0001.HEIC"}
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    summary = index_folder(config, "phone", phone_folder, embedder=FakeEmbedder())
    assert summary.count == 7 and summary.added == 7
    assert [(s["path"], "no readable embedded preview" in s["reason"]) for s in summary.skipped] == \
        [("2024/no_preview.dng", True)]
    assert dict(summary.excluded) == {"@eaDir/": 1, ".thumbnails/": 1, ".DS_Store": 1}


def test_a_heic_upload_becomes_a_query(tmp_path):
    from app.service.query_image import prepare_query

    upload = tmp_path / "IMG_0001.HEIC"
    shutil.copy(PHOTOS / "blocks_exif6.heic", upload)
    query = prepare_query(upload, tmp_path)
    assert near(query.image, TURNED) and query.copy.is_file()
    assert Image.open(query.copy).format == "JPEG"  # what the page shows is the app's own JPEG
