"""The UI's data: queries, handler outputs, and how things are shown (captions, status, messages).

Pure Python (PIL for image fingerprints). The session state is :class:`app.web.session.Session`;
the handler groups (:mod:`app.web.handlers`) decide what happens, :mod:`app.web.layout` lays it out.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from app.service.search import Hit, QueryResult


class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


SKIP: Any = _Skip()  # "leave this component as it is"


@dataclass(frozen=True)
class Query:
    """What is (or was) searched: a collection item (stored vector) or a new image (model, once)."""

    kind: str  # "item" | "image"
    path: str  # the file shown for it: the collection file, or the saved copy of the new image
    key: str  # identity: "item:<collection>:<id>" or the sha256 of the pixels
    label: str
    collection: str = ""  # items: the collection the item belongs to
    item_id: int = -1
    size: tuple[int, int] | None = None
    origin: str = "user"  # "app": the app put it in the editor, so the editor's echo is not a new image
    sig: bytes = b""  # a 16x16 thumbnail, to recognise the editor's echo of an image the app gave it


@dataclass
class View:
    """The outputs of a handler; :data:`SKIP` leaves a component unchanged."""

    editor: Any = SKIP
    results: Any = SKIP
    status: Any = SKIP
    message: Any = SKIP
    last: Any = SKIP
    last_caption: Any = SKIP
    history: Any = SKIP
    examples: Any = SKIP
    compare: Any = SKIP
    compare_choices: Any = SKIP  # list of (label, index) for the result picker
    session: Any = SKIP
    crop: Any = SKIP  # the image to open in the crop editor (a path), or None to close it


# -- formatting ----------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_escape(text: str) -> str:
    """Text shown literally in a Markdown component: no HTML, no Markdown markup."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))


def error_md(text: str) -> str:
    return f"⚠️ {md_escape(text)}"


def caption(hit: Hit) -> str:
    return f"{hit.label} · {hit.score:.3f} · {Path(hit.path).name}"


def example_caption(hit: Hit) -> str:
    return f"{hit.label} · {Path(hit.path).name}"


def status_html(result: QueryResult, engine: str, seq: int) -> str:
    parts = [f"<b>{len(result.hits)}</b> of {result.size:,} images in <b>{html.escape(result.collection)}</b>"]
    if result.reused:
        parts.append("stored vector, model not run")
    elif result.ms("embed") == 0:
        parts.append(f"decode {result.ms('decode'):.1f} ms")
        parts.append("remembered query vector, model not run")
    else:
        parts.append(f"decode {result.ms('decode'):.1f} ms")
        parts.append(f"preprocess {result.ms('preprocess'):.1f} ms")
        parts.append(f"embed {result.ms('embed'):.1f} ms")
    parts.append(f"search {result.ms('search'):.2f} ms")
    parts.append(f"total {result.ms('total'):.1f} ms")
    parts.append(html.escape(engine))
    spans = " · ".join(f"<span>{p}</span>" for p in parts)
    top = html.escape(caption(result.hits[0]), quote=True) if result.hits else ""
    return f'<div class="ris-status" data-seq="{seq}" data-top="{top}">{spans}</div>'


def idle_status(text: str) -> str:
    return f'<div class="ris-status" data-seq="0"><span>{html.escape(text)}</span></div>'


def signature(img: Image.Image) -> bytes:
    return img.convert("RGB").resize((16, 16), Image.Resampling.BOX).tobytes()


def same_picture(a: bytes, b: bytes, tolerance: float = 6.0) -> bool:
    """Two signatures of the same picture (decoders differ by a few levels; other pictures by far more)."""
    return bool(a) and len(a) == len(b) and sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a) <= tolerance


def file_size_and_signature(path: str | Path) -> tuple[tuple[int, int] | None, bytes]:
    """Size and signature of an image file as a browser shows it (EXIF orientation applied)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            im.draft("RGB", (64, 64))
            return (w, h), signature(ImageOps.exif_transpose(im))
    except (OSError, ValueError, SyntaxError):
        return None, b""


def composite_image(value: Any) -> Image.Image | None:
    """The image the editor shows (crop applied) from an ImageEditor value."""
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        img = value.get("composite") or value.get("background")
        return img if isinstance(img, Image.Image) else None
    return None
