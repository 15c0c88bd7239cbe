"""What a handler answers: :class:`View`, one field a part of the page, and :data:`SKIP` for "leave it as it
is". Plain data: :mod:`app.web.outputs` keys it by the page's components for Gradio."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


SKIP: Any = _Skip()  # "leave this component as it is"


@dataclass
class View:
    """The outputs of a handler; :data:`SKIP` leaves a part of the page unchanged."""

    query_image: Any = SKIP  # the image shown in the query image (a path)
    results: Any = SKIP  # gallery items: (thumbnail path, caption)
    status: Any = SKIP  # the status line (HTML)
    message: Any = SKIP  # the message line (Markdown)
    last: Any = SKIP  # the last searched image (a path)
    last_caption: Any = SKIP
    history: Any = SKIP  # gallery items of the recent queries
    examples: Any = SKIP  # gallery items of the collection's examples
    compare: Any = SKIP  # (query path, result preview path), or None to hide the compare box
    compare_choices: Any = SKIP  # list of (label, index) for the result picker
    session: Any = SKIP  # the :class:`~app.web.session.Session`
    crop: Any = SKIP  # the image to open in the crop editor (a path), or None to close it
    objects: Any = SKIP  # the objects panel: an :class:`~app.web.objects_view.ObjectsShown`

    def changed(self) -> dict[str, Any]:
        """The fields this view sets (not :data:`SKIP`), by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not SKIP}
