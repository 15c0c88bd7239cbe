"""Gradio components of the app's own: the query image, which hands its upload to the app undecoded."""

from __future__ import annotations

import base64
from typing import Any, Callable

import gradio as gr
from gradio import component_meta


def _without_pyi_stub(define: Callable[[], type]) -> type:
    """Define a subclass of a Gradio component without Gradio writing a ``.pyi`` stub beside this module
    (its component metaclass does that for custom components, at import time)."""
    write_stub = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        return define()
    finally:
        component_meta.create_or_modify_pyi = write_stub


def _query_image_class() -> type:
    class QueryImageInput(gr.Image):
        """The query image: a ``gr.Image`` whose value reaches the app undecoded.

        ``gr.Image`` decodes an upload with Pillow before the app sees it, so the app's format allow-list
        and pixel cap would never apply. This one hands over the uploaded file's path (in Gradio's upload
        folder: Gradio checks that before calling it), or the bytes of a ``data:`` URL sent by an API
        client; :func:`app.service.query_image.prepare_query` decodes it once. In the browser it is the
        same component (``is_template``).
        """

        is_template = True

        def preprocess(self, payload: Any) -> str | bytes | None:
            if payload is None:
                return None
            url = getattr(payload, "url", None) or ""
            if url.startswith("data:") and not payload.path:
                return base64.b64decode(url.partition(",")[2] or b"", validate=False)
            return payload.path

    return QueryImageInput


QueryImageInput = _without_pyi_stub(_query_image_class)
