"""What is (or was) searched: :class:`Query`, a collection item or a new image, as the session keeps it
(the query image, the last searched, the history)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Query:
    """What is (or was) searched: a collection item (stored vector) or a new image (model, once)."""

    kind: str  # "item" | "image"
    path: str  # the file shown for it: the collection file's preview, or the saved copy of the new image
    key: str  # identity: "item:<collection>:<id>" or the sha256 of the pixels
    label: str
    collection: str = ""  # items: the collection the item belongs to
    item_id: int = -1
    size: tuple[int, int] | None = None
    origin: str = "user"  # "app": the app put it in the query image, so the crop editor's echo is not a crop
    sig: bytes = b""  # a 16x16 thumbnail, to recognise the crop editor's echo of it (app.web.signature)
