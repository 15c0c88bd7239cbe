"""What a file's first bytes say it is, for messages: a damaged file of a format we read, or a format
we do not read (SVG, PDF, JPEG XL...) named as such. Decoding is :mod:`app.core.images`' job.
"""

from __future__ import annotations

HEAD_BYTES = 1024  # how much of a file :func:`sniff` looks at

# ISO base media ("ftyp") brands: AV1 images (AVIF, Pillow's plugin) and HEVC images (HEIC/HEIF, pillow-heif's
# plugin, whose format name is "HEIF").
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIC_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}

_MAGIC: tuple[tuple[bytes, int, str], ...] = (  # (signature, offset, format name as Pillow spells it)
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)

UNSUPPORTED = {
    "SVG": "SVG drawings (vector graphics, not pixels)",
    "PDF": "PDF documents",
    "JXL": "JPEG XL images",
}


def sniff(head: bytes) -> str | None:
    """The format ``head`` (a file's first bytes) belongs to: a Pillow format name (``JPEG``, ``AVIF``...),
    a key of :data:`UNSUPPORTED`, or None when it is none of those."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brands = _ftyp_brands(head)
        if brands & _AVIF_BRANDS:
            return "AVIF"
        return "HEIF" if brands & _HEIC_BRANDS else None
    for signature, offset, name in _MAGIC:
        if head[offset : offset + len(signature)] == signature and (name != "WEBP" or head[:4] == b"RIFF"):
            return name
    if head.startswith(b"%PDF-"):
        return "PDF"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JXL"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!doctype svg", b"<!--")) and b"<svg" in text):
        return "SVG"
    return None


def _ftyp_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of the ``ftyp`` box at the start of ``head`` (as far as it goes)."""
    size = int.from_bytes(head[:4], "big")
    end = min(len(head), size if 16 <= size <= HEAD_BYTES else len(head))
    brands = {head[8:12]}
    brands.update(head[i : i + 4] for i in range(16, end - 3, 4))
    return brands
