#!/usr/bin/env python3
"""Writes the small phone and camera files the tests read (tests/data/photos/, tests/data/fuzz/).

    python scripts/make_test_photos.py            # (re)write them; deterministic
    python scripts/make_test_photos.py --check    # exit 1 when a committed file differs (encoders aside)

HEIC is encoded by pillow-heif (libheif + x265), AVIF by Pillow (libavif). The DNG files are written
by :func:`dng_bytes` below, a minimal DNG 1.4 writer: a first directory holding a JPEG preview
(NewSubFileType 1, Compression 7) and a sub-directory holding a 64x64 16-bit CFA "sensor" image,
which is what LibRaw (rawpy) needs to accept the file as a RAW (it refuses sensors under 22 px).
The bombs are valid small files whose container declares a size over the loader's 50-megapixel cap.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "data" / "photos"
FUZZ = ROOT / "tests" / "data" / "fuzz"
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 10: 8}
_TYPE_FMT = {1: "B", 3: "H", 4: "I"}


def blocks(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Four flat colours in quadrants and a white corner: lossy codecs keep it, and a turn changes it."""
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (220, 30, 30)
    a[: h // 2, w // 2 :] = (30, 200, 40)
    a[h // 2 :, : w // 2] = (40, 40, 210)
    a[h // 2 :, w // 2 :] = (230, 220, 40)
    a[: h // 4, : w // 8] = (250, 250, 250)
    return Image.fromarray(a)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _ifd(entries: list[tuple[int, int, object]], at: int) -> tuple[bytes, bytes]:
    """One TIFF directory written at offset ``at``: its bytes, then the values too long to sit inline."""
    entries = sorted(entries, key=lambda e: e[0])
    head = bytearray(struct.pack("<H", len(entries)))
    extra = bytearray()
    extra_at = at + 2 + 12 * len(entries) + 4
    for tag, typ, values in entries:
        if isinstance(values, bytes):
            data = values
        elif typ == 10:
            data = b"".join(struct.pack("<ii", n, d) for n, d in values)
        else:
            data = struct.pack("<" + _TYPE_FMT[typ] * len(values), *values)
        count = len(data) // _TYPE_SIZE[typ]
        if len(data) <= 4:
            head += struct.pack("<HHI", tag, typ, count) + data.ljust(4, b"\0")
        else:
            head += struct.pack("<HHII", tag, typ, count, extra_at + len(extra))
            extra += data + b"\0" * (len(data) % 2)
    return bytes(head + struct.pack("<I", 0)), bytes(extra)


def dng_bytes(preview: bytes | None, preview_size: tuple[int, int] = (0, 0), orientation: int = 1) -> bytes:
    """A minimal DNG: a JPEG ``preview`` (or none) of ``preview_size``, and a 64x64 CFA sensor image."""
    sensor = (np.arange(64 * 64, dtype=np.uint32) * 37 % 4096).astype("<u2").tobytes()
    cfa = [(254, 4, [0]), (256, 4, [64]), (257, 4, [64]), (258, 3, [16]), (259, 3, [1]), (262, 3, [32803]),
           (277, 3, [1]), (278, 4, [64]), (279, 4, [len(sensor)]), (33421, 3, [2, 2]), (33422, 1, [0, 1, 1, 2])]
    common = [(271, 2, b"Test\0"), (272, 2, b"Synthetic DNG\0"), (274, 3, [orientation]), (50706, 1, [1, 4, 0, 0]),
              (50708, 2, b"Test Synthetic DNG\0"), (50721, 10, [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1),
                                                                 (0, 1), (0, 1), (1, 1)])]

    def layout(offsets: tuple[int, int, int]) -> list[bytes]:
        sub_at, preview_at, sensor_at = offsets
        if preview is None:  # the sensor image is the first directory; no sub-directory
            first, extra = _ifd(common + cfa + [(273, 4, [sensor_at])], 8)
            return [first, extra, b"", b"", b"", sensor]
        w, h = preview_size
        entries = common + [(254, 4, [1]), (256, 4, [w]), (257, 4, [h]), (258, 3, [8, 8, 8]), (259, 3, [7]),
                            (262, 3, [6]), (277, 3, [3]), (278, 4, [h]), (273, 4, [preview_at]),
                            (279, 4, [len(preview)]), (330, 4, [sub_at])]
        first, extra = _ifd(entries, 8)
        sub_ifd, sub_extra = _ifd(cfa + [(273, 4, [sensor_at])], sub_at)
        return [first, extra, sub_ifd, sub_extra, preview, sensor]

    parts = layout((0, 0, 0))
    for _ in range(2):  # offsets depend only on lengths, which the first pass fixed
        sub_at = 8 + len(parts[0]) + len(parts[1])
        preview_at = sub_at + len(parts[2]) + len(parts[3])
        parts = layout((sub_at, preview_at, preview_at + len(parts[4])))
    return b"II*\x00" + struct.pack("<I", 8) + b"".join(parts)


def patch_ispe(data: bytes, width: int, height: int) -> bytes:
    """The first ``ispe`` box (the primary item's declared size in HEIF/AVIF) set to ``width`` x ``height``."""
    out = bytearray(data)
    at = out.find(b"ispe")
    out[at + 8 : at + 16] = struct.pack(">II", width, height)  # after the box's version and flags
    return bytes(out)


def heic_grid_bomb(width: int, height: int) -> bytes:
    """A 128x128 HEIC of four 64x64 tiles whose grid item declares ``width`` x ``height`` (its ``ispe``
    and its grid payload). libheif takes a single image's size from its coded stream, but a grid's from
    these two, which is how a phone's 12-megapixel HEIC is stored."""
    out = bytearray(patch_ispe(encode(Image.new("RGB", (128, 128), (200, 10, 10)), "HEIF", quality=50,
                                      tile_size=64), width, height))
    at = out.find(b"idat") + 4  # version, flags, rows - 1, columns - 1, output width, output height
    out[at + 4 : at + 8] = struct.pack(">HH", width, height)
    return bytes(out)


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose start-of-frame declares ``width`` x ``height`` (the scan data stays the small one)."""
    at = data.find(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def files() -> dict[Path, bytes]:
    img = blocks()
    exif = Image.Exif()
    exif[0x0112] = 6
    heic = encode(img, "HEIF", quality=90)
    avif = encode(img, "AVIF", quality=90)
    preview = encode(img, "JPEG", quality=90)
    dng = dng_bytes(preview, img.size, orientation=6)
    big_preview = encode(blocks((320, 240)), "JPEG", quality=85)
    return {
        PHOTOS / "blocks.heic": heic,
        PHOTOS / "blocks_thumb.heic": encode(blocks((320, 240)), "HEIF", quality=80, thumbnails=[64]),
        PHOTOS / "blocks_exif6.heic": encode(img, "HEIF", quality=90, exif=exif.tobytes()),
        PHOTOS / "blocks.avif": avif,
        PHOTOS / "blocks_orient6.dng": dng,
        PHOTOS / "blocks_big_preview.dng": dng_bytes(big_preview, (320, 240)),
        PHOTOS / "no_preview.dng": dng_bytes(None),
        FUZZ / "heic-truncated.bin": heic[: len(heic) * 2 // 3],
        FUZZ / "heic-grid-bomb.bin": heic_grid_bomb(8000, 8000),
        FUZZ / "avif-ispe-bomb.bin": patch_ispe(avif, 10000, 10000),
        FUZZ / "dng-truncated-preview.bin": dng[: dng.find(preview) + len(preview) // 2],
        FUZZ / "dng-preview-bomb.bin": dng_bytes(patch_jpeg_size(preview, 20000, 20000), img.size),
        FUZZ / "dng-no-preview.bin": dng_bytes(None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = parser.parse_args(argv)
    differ = []
    for path, data in files().items():
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                differ.append(path.relative_to(ROOT))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{path.relative_to(ROOT)}: {len(data)} bytes")
    for path in differ:
        print(f"differs: {path}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
