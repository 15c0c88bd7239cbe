"""Image loading and validation: the one loader used by the CLI, the index build and the UI.

Everything that reaches the model goes through :func:`load_image`, which returns an RGB
``PIL.Image`` or raises :class:`~app.errors.InvalidImageError` with a readable reason.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from app.core.camera_formats import apply_flip, jpeg_orientation, raw_kind, raw_preview, register_heif
from app.core.formats import HEAD_BYTES, UNSUPPORTED, sniff
from app.errors import InvalidImageError

# Formats we decode. Anything else (including PIL's long tail of exotic plugins) is refused.
# JPEG covers MPO (phone photos); AVIF is Pillow's own plugin (libavif in its wheels since 11.3);
# HEIF (HEIC) is pillow-heif's plugin (libheif). Camera RAW files are read from their embedded
# preview (app.core.camera_formats), which then comes through here as a JPEG.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF")
# Formats with a cheaper decode at a reduced size: JPEG's DCT scaling, a HEIF's embedded thumbnail.
_DRAFT_FORMATS = ("JPEG", "MPO", "HEIF")
_CONVERT_HINT = "Convert it to JPEG or PNG and try again."
# 50 megapixels covers every phone camera's default output; larger is treated as a bomb.
DEFAULT_MAX_PIXELS = 50_000_000
# Alpha is composited on this fixed background, so transparent areas embed the same way every time.
BACKGROUND_RGB = (255, 255, 255)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], Image.Image]

# Never decode half an image silently.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode ``source`` into an RGB image ready for preprocessing.

    ``draft_size``: when set and the file is a JPEG, decode at the smallest DCT scale that still
    gives at least ``draft_size`` pixels on each side (up to 8x less decoding work for photos).
    Any failure, whatever Pillow raises underneath, comes out as :class:`InvalidImageError`.
    """
    if isinstance(source, Image.Image):
        img = source
        if img.format is not None and img.format not in ALLOWED_FORMATS + ("MPO",):
            raise InvalidImageError(
                f"{img.format} images are not supported ({', '.join(ALLOWED_FORMATS)})."
            )
        _check_pixels(img, max_pixels)
        try:
            img.load()
            return to_rgb(ImageOps.exif_transpose(img) or img)
        except InvalidImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many untyped errors
            raise InvalidImageError(f"The image could not be decoded ({exc}).") from exc

    fp, owned, name = _stream(source)
    if raw_kind(name, _peek(fp)):
        try:
            return _load_raw(fp, name, max_pixels, draft_size)
        finally:
            if owned is not None:
                owned.close()
    img = _open(fp, owned, name)
    try:
        _check_pixels(img, max_pixels)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # Pillow's "Corrupt EXIF data": EXIF is optional
            if draft_size and img.format in _DRAFT_FORMATS:
                img.draft("RGB", (draft_size, draft_size))
            img.seek(0)  # animated GIF/WebP/MPO: the first frame
            img.load()
            out = to_rgb(ImageOps.exif_transpose(img) or img)
            if out is img:
                out = img.copy()  # detached from the file, which is closed below
            return out
    except InvalidImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InvalidImageError(
            f"The image is too large to decode safely ({exc})."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - truncated data: OSError, SyntaxError, struct.error...
        if _is_chunk_bomb(exc):
            raise _chunk_bomb_error(exc) from exc
        raise InvalidImageError(f"The image file is damaged or truncated ({_one_line(exc)}).") from exc
    finally:
        if owned is not None:
            img.close()  # our own handle: never leave it open (multi-frame files keep it)
            owned.close()


def _stream(source: ImageSource) -> tuple[IO[bytes], IO[bytes] | None, str]:
    """A readable stream for ``source``, the handle we opened (None: the caller's) and a name for messages."""
    owned: IO[bytes] | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidImageError("The file is empty (0 bytes).")
        fp: IO[bytes] = io.BytesIO(bytes(source))
        owned = fp
        name = "the data"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = path.name
        try:
            if not path.is_file():
                raise InvalidImageError(f"No such file: {path}." if not path.exists() else f"Not a file: {path}.")
            if path.stat().st_size == 0:
                raise InvalidImageError(f"The file {name} is empty (0 bytes).")
            fp = owned = open(path, "rb")  # noqa: SIM115 - closed by load_image
        except OSError as exc:
            raise InvalidImageError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    else:
        fp = source
        name = getattr(source, "name", "the data")
    return fp, owned, name


def _open(fp: IO[bytes], owned: IO[bytes] | None, name: str) -> Image.Image:
    """Open without decoding (Pillow reads the header: the declared size, not the pixels)."""
    register_heif()
    start = _tell(fp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": the decode decides
            return Image.open(fp, formats=ALLOWED_FORMATS)
    except BaseException as exc:
        head = _head(fp, start) if isinstance(exc, Exception) else b""
        if owned is not None:
            owned.close()
        if isinstance(exc, (Image.DecompressionBombWarning, Image.DecompressionBombError)):
            raise InvalidImageError(f"The image is too large to decode safely ({exc}).") from exc
        if isinstance(exc, Exception) and _is_chunk_bomb(exc):
            raise _chunk_bomb_error(exc) from exc
        if isinstance(exc, Exception):  # unidentified, OSError, SyntaxError, EOFError, struct.error...
            raise _unreadable(name, head, exc) from exc
        raise


def _peek(fp: IO[bytes]) -> bytes:
    """The first bytes of ``fp``, leaving its position where it was (b"" when it cannot go back)."""
    start = _tell(fp)
    head = _head(fp, start)
    if start is not None:
        try:
            fp.seek(start)
        except (OSError, AttributeError, ValueError):
            return b""
    return head


def _load_raw(fp: IO[bytes], name: str, max_pixels: int, draft_size: int | None) -> Image.Image:
    """A camera RAW file's embedded preview, decoded by this loader (pixel cap, draft) and turned upright."""
    try:
        data = fp.read()
    except OSError as exc:
        raise InvalidImageError(f"Cannot read {name}: {exc.strerror or exc}.") from exc
    if not data:
        raise InvalidImageError(f"{_display(name)} is empty (0 bytes).")
    preview = raw_preview(data, str(name), max_pixels)
    if preview.jpeg is None:
        return apply_flip(preview.image, preview.flip)
    img = load_image(preview.jpeg, max_pixels=max_pixels, draft_size=draft_size)
    # A preview with its own EXIF orientation was turned by load_image; otherwise the RAW's tag says.
    return img if jpeg_orientation(preview.jpeg) != 1 else apply_flip(img, preview.flip)


def _unreadable(name: object, head: bytes, exc: Exception) -> InvalidImageError:
    """The error for a file Pillow would not open: an unsupported format named as such, a damaged
    file of a format we read, or not an image at all."""
    kind = sniff(head)
    if kind in UNSUPPORTED:
        return InvalidImageError(
            f"{_display(name)} is in an unsupported format: {UNSUPPORTED[kind]} cannot be read "
            f"(supported: {', '.join(ALLOWED_FORMATS)}).", hint=_CONVERT_HINT)
    if kind in ALLOWED_FORMATS:
        detail = "" if isinstance(exc, UnidentifiedImageError) else f" ({_one_line(exc)})"  # its text: a repr of fp
        return InvalidImageError(f"{_display(name)} is a damaged or truncated {kind} file{detail}.")
    if isinstance(exc, UnidentifiedImageError):
        return InvalidImageError(
            f"{_display(name)} is not an image in a supported format ({', '.join(ALLOWED_FORMATS)}).")
    return InvalidImageError(f"{_display(name)} could not be read ({_one_line(exc)}).")


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (libheif's messages end in a newline)."""
    return " ".join(str(exc).split())


def _tell(fp: IO[bytes]) -> int | None:
    try:
        return fp.tell()
    except (OSError, AttributeError, ValueError):
        return None


def _head(fp: IO[bytes], start: int | None) -> bytes:
    """The first bytes of the image in ``fp`` (from ``start``), or b"" when the stream cannot go back."""
    if start is None:
        return b""
    try:
        fp.seek(start)
        head = fp.read(HEAD_BYTES)
        return head if isinstance(head, bytes) else b""
    except (OSError, AttributeError, ValueError):
        return b""


def _is_chunk_bomb(exc: BaseException) -> bool:
    """Pillow's refusal of a PNG text or ICC-profile chunk that decompresses to too much (zTXt, iTXt, iCCP)."""
    return isinstance(exc, ValueError) and "MAX_TEXT" in str(exc)


def _chunk_bomb_error(exc: BaseException) -> InvalidImageError:
    from PIL import PngImagePlugin

    if "MAX_TEXT_MEMORY" in str(exc):
        what = f"its PNG text chunks hold more than {PngImagePlugin.MAX_TEXT_MEMORY // (1024 * 1024)} MB in all"
    else:
        what = (f"its PNG metadata (a text or colour-profile chunk) decompresses to more than "
                f"{PngImagePlugin.MAX_TEXT_CHUNK // (1024 * 1024)} MB")
    return InvalidImageError(f"The image is too large to decode safely: {what}.")


def _display(name: object) -> str:
    text = str(name)
    return "The data" if text == "the data" else f"The file {os.path.basename(text)}"


def _check_pixels(img: Image.Image, max_pixels: int) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise InvalidImageError("The image has no pixels.")
    if w * h > max_pixels:
        raise InvalidImageError(
            f"The image is too large ({w}x{h} = {_megapixels(w * h)} megapixels; "
            f"the limit is {_megapixels(max_pixels)})."
        )


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f}" if pixels >= 10_000_000 else f"{pixels / 1e6:.3g}"


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: 16-bit and float rescaled, alpha composited on a fixed colour."""
    mode = img.mode
    if mode in ("1", "L", "RGB") and "transparency" in img.info:
        # A PNG colour key (tRNS): those pixels are transparent, so they get the background too.
        img = img.convert("RGBA")
        mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_rescale_to_uint8(img), mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV, ...


def _rescale_to_uint8(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype.kind in "ui" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        # 16-bit samples (PNG/TIFF "I;16" opens as I;16 or I): full 16-bit range to 8 bits.
        max_value = 255 if img.mode == "I" and arr.max() <= 255 else 65535
        return np.clip(np.rint(arr.astype(np.float64) * (255.0 / max_value)), 0, 255).astype(np.uint8)
    arr = arr.astype(np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0  # float images in [0, 1]
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.nan_to_num((arr - lo) * scale, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
