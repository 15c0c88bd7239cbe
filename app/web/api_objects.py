"""The API's object endpoints (registered by :func:`wire_object_api`, which :func:`app.web.layout.build_ui` calls):

* ``/objects``: an image file -> ``{"objects": [{"box": [x1, y1, x2, y2], "label", "score"}]}``, boxes in the
  image's own pixels, best first;
* ``/search_box``: an image file, a box [x1, y1, x2, y2] in its pixels (clipped to it; a box of no size is
  refused with a message), a collection, k and a mode ("photos" or "objects"): that region searched alone;
* ``/search_objects``: an image file, a collection and k -> the collection's most similar objects: each hit
  its photo (``id``, ``file``), the object's ``box`` (in the photo's pixels), ``label``, ``score``,
  ``object_score``, ``photo_label`` and a ``thumbnail_url`` of the photo with the box drawn.

Without the detector, ``/objects`` answers an error naming the command that installs it; a collection
without object vectors, one naming the build command.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.core.box_draw import boxed_thumb
from app.core.detect import crop_box
from app.errors import AppError, InvalidBoxError
from app.service.query_image import read_source
from app.web.api import API_CONCURRENCY, ApiHandlers, api_errors
from app.web.components import QueryImageInput
from app.web.context import Context


class ObjectApi:
    """What the object endpoints do (the same service as the page)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def objects(self, image: str | bytes | None) -> dict[str, Any]:
        """The objects a detector finds in an uploaded image file: box (x1, y1, x2, y2 in its pixels), label, score."""
        if image is None:
            raise _missing()
        return {"objects": [o.to_json() for o in self.ctx.service.objects.detect_image(image)]}

    def search_objects(self, image: str | bytes | None, collection: str, k: int) -> dict[str, Any]:
        """Search the objects inside a collection's photos with an uploaded image file; each hit has its box."""
        if image is None:
            raise _missing()
        name = self.ctx.searchable(collection)
        return self._objects_answer(self.ctx.service.objects.search_new_image(image, name, k), "uploaded image")


    def search_box(self, image: str | bytes | None, box: Any, collection: str, k: int,
                   mode: str = "photos") -> dict[str, Any]:
        """Search with one region of an uploaded image file: ``box`` [x1, y1, x2, y2] in its pixels (clipped to
        it; a box of no size is refused); ``mode`` "photos" (whole photos) or "objects" (objects inside photos)."""
        if image is None:
            raise _missing()
        if mode not in ("photos", "objects"):
            raise AppError('mode is "photos" or "objects".')
        if not isinstance(box, (list, tuple)):
            raise InvalidBoxError("The box is four numbers: [x1, y1, x2, y2] in the image's pixels.")
        name = self.ctx.searchable(collection)
        region = crop_box(read_source(image, self.ctx.config.max_upload_bytes), box)
        if mode == "objects":
            return self._objects_answer(self.ctx.service.objects.search_new_image(region, name, k), "image region")
        return ApiHandlers(self.ctx).answer(self.ctx.service.search_new_image(region, name, k), "image region")

    def _objects_answer(self, result, query: str) -> dict[str, Any]:
        hits = []
        for h in result.hits:
            entry = h.to_json()
            drawn = boxed_thumb(self.ctx.thumbs, result.abs_path(h), h.box, h.label)
            entry["thumbnail_url"] = f"/gradio_api/file={drawn.path}"
            hits.append(entry)
        embedder = self.ctx.service.embedder
        return {"collection": result.collection, "model": embedder.model.name, "weights_id": embedder.weights_id,
                "objects": True, "k": len(hits), "query": query,
                "timings_ms": {stage: round(ms, 3) for stage, ms in result.timings_ms.items()}, "hits": hits}


def _missing() -> AppError:
    return AppError("Give an image file.")


def wire_object_api(ctx: Context) -> None:
    """``/objects`` and ``/search_objects``: events of hidden components, as ``/search_file`` (the file is
    uploaded first and handed over undecoded), in the same concurrency group as the other API calls."""
    api = ObjectApi(ctx)
    endpoint = dict(concurrency_id="api", concurrency_limit=API_CONCURRENCY, api_visibility="public")
    with gr.Group(visible=False):
        image = QueryImageInput(type="filepath", image_mode=None, label="image", sources=["upload"])
        collection = gr.Textbox(label="collection")
        k = gr.Number(value=5, precision=0, label="k", minimum=1)
        out = gr.JSON(label="result")
        find = gr.Button("objects", elem_id="api-objects")
        search = gr.Button("search_objects", elem_id="api-search-objects")
        box = gr.JSON(label="box")
        mode = gr.Textbox(value="photos", label="mode")
        search_box = gr.Button("search_box", elem_id="api-search-box")
    find.click(api_errors(api.objects), [image], out, api_name="objects", api_description=api.objects.__doc__,
               show_progress="hidden", **endpoint)
    search.click(api_errors(api.search_objects), [image, collection, k], out, api_name="search_objects",
                 api_description=api.search_objects.__doc__, show_progress="hidden", **endpoint)
    search_box.click(api_errors(api.search_box), [image, box, collection, k, mode], out, api_name="search_box",
                     api_description=api.search_box.__doc__, show_progress="hidden", **endpoint)
