"""Objects in the web app and the service (app/web/objects.py, app/service/query_objects.py,
app/service/object_upkeep.py): the query's objects after its results, one object searched alone, the
"objects inside photos" mode, no detector, boxes clipped and empty ones refused, object vectors kept by the
library's add and delete, and the API's /objects and /search_objects with a default gradio_client."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.detect import Detector
from app.errors import InvalidBoxError
from app.service.objects import build_objects, load_objects, object_crop
from app.service.search import SearchService
from app.web.gallery import caption
from app.web.handlers import Handlers
from app.web.objects_view import MODES, ObjectsShown
from app.web.view import SKIP
from tests.detector_fakes import SPEC, install_fake
from tests.fakes import SpyEmbedder, free_port, running_app
from tests.helpers import spy_load_image

CUP, CHAIR = SPEC.labels.index("cup"), SPEC.labels.index("chair")
# The stand-in detector answers these two objects for any input (boxes in its 320 px input).
OBJECTS = [(32, 1, 1, CUP, 0.9, (40.0, 40.0, 40.0, 40.0)), (16, 18, 20, CHAIR, 0.6, (30.0, 30.0, 60.0, 60.0))]


@pytest.fixture()
def objects_collection(small_collection, embedder, tmp_path):
    """A private copy of the small collection with its object vectors, and a stand-in detector installed in a
    cache of its own (the config's)."""
    config, _, data = small_collection
    shutil.copytree(config.indexes_dir, tmp_path / "indexes")
    shutil.copytree(config.features_dir, tmp_path / "features")
    install_fake(tmp_path / "cache", OBJECTS)
    config = config.with_(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features",
                          cache_dir=tmp_path / "cache")
    build_objects(config, "shapes", embedder, Detector(config.cache_dir))
    return config, data


@pytest.fixture()
def handlers(objects_collection, embedder, tmp_path):
    config, data = objects_collection
    service = SearchService(config, embedder=SpyEmbedder(embedder))
    return Handlers(service, config, work_dir=tmp_path / "queries"), data


def _upload(h: Handlers, data: Path, tmp_path: Path, name: str = "circles/img_01.jpg"):
    session = h.collections.initial_session("shapes")
    with Image.open(data / name) as im:
        im.convert("RGB").resize((192, 144)).save(tmp_path / "upload.png")
    view = h.queries.on_upload(str(tmp_path / "upload.png"), "shapes", 5, session)
    assert view.results is not SKIP and session.query is not None
    return session


def test_objects_follow_the_results_from_the_remembered_pixels(handlers, tmp_path, monkeypatch):
    h, data = handlers
    session = _upload(h, data, tmp_path)
    loads = spy_load_image(monkeypatch)
    view = h.objects.on_detect(session)
    assert loads == []  # no second decode: the pixels the service kept when it prepared the query
    shown = view.objects
    assert isinstance(shown, ObjectsShown) and [c for c, _ in shown.choices] == ["cup · 0.90", "chair · 0.60"]
    assert "2 objects found" in shown.note and all(v.startswith(session.query.key[:16]) for _, v in shown.choices)
    found = h.ctx.service.objects.detect(session.query.key)  # remembered by the service, not the session
    with Image.open(shown.image) as drawn:  # the query image (the page's copy) with the boxes drawn
        assert drawn.size == (192, 144)
        assert drawn.getpixel((int(found[0].box[0]) + 1, 20))[0] > 200  # the box's orange edge
    assert h.objects.on_detect(session).objects == shown  # asked again: the same objects, detected once


def test_a_picked_object_is_searched_alone_and_the_query_stays_the_photo(handlers, tmp_path):
    h, data = handlers
    session = _upload(h, data, tmp_path)
    picks = [v for _, v in h.objects.on_detect(session).objects.choices]
    photo = session.query
    view = h.objects.on_pick(picks[0], "shapes", 4, session)
    assert session.query.key == photo.key and view.query_image is SKIP
    assert "object: <b>cup</b>" in view.status and "cup" in view.message
    service = h.ctx.service
    with Image.open(photo.path) as im:  # the crop of the page's copy, with a little context
        expected = service.embed_image(object_crop(im.convert("RGB"), service.objects.detect(photo.key)[0].box))
    want = service.search_vector("shapes", expected, 4)
    assert [r[1] for r in view.results] == [caption(x) for x in want.hits]
    for stale_pick in ("0123456789abcdef:0", picks[0].split(":")[0] + ":5", 0):  # another image's, none such
        assert "another image" in h.objects.on_pick(stale_pick, "shapes", 4, session).message


def test_objects_mode_answers_objects_with_their_boxes(handlers, tmp_path):
    h, data = handlers
    session = _upload(h, data, tmp_path)
    view = h.objects.on_mode(MODES[1], "shapes", 4, session)
    assert session.objects_mode and "objects of 48 in" in view.status
    captions = [c for _, c in view.results]
    assert len(captions) == 4 and all(" in img_" in c for c in captions)
    assert {c.split(" in ")[0] for c in captions} <= {"cup", "chair"}
    assert all(Path(p).is_file() and "boxed" in Path(p).parts for p, _ in view.results)
    photo = session.results[0]
    clicked = h.queries.on_result(0, "shapes", 4, session)  # a hit's photo becomes the query (stored vector)
    assert session.query.item_id == photo.id and clicked.query_image == session.query.path
    picks = [v for _, v in h.objects.on_detect(session).objects.choices]
    picked = h.objects.on_pick(picks[1], "shapes", 3, session)  # the chair alone, against objects
    assert "object: <b>chair</b>" in picked.status and len(picked.results) == 3
    back = h.objects.on_mode(MODES[0], "shapes", 4, session)
    assert not session.objects_mode and "images in" in back.status


def test_without_the_detector_the_panel_names_the_install_command(small_collection, embedder, tmp_path):
    config = small_collection[0].with_(cache_dir=tmp_path / "empty-cache")
    h = Handlers(SearchService(config, embedder=embedder), config, work_dir=tmp_path / "q")
    session = _upload(h, small_collection[2], tmp_path)  # the search itself works
    shown = h.objects.on_detect(session).objects
    assert shown.image is None and shown.choices == []
    assert shown.note.count("\n") == 0 and "python -m app.cli detector install" in shown.note


def test_boxes_are_clipped_and_a_box_of_no_size_is_refused(handlers, tmp_path):
    h, data = handlers
    session = _upload(h, data, tmp_path)
    objects = h.ctx.service.objects
    result = objects.search_box(session.query.key, session.query.path, (-50, -20, 1e6, 1e6), "shapes", 3)
    assert len(result.hits) == 3
    found = objects.search_box(session.query.key, None, (10, 10, 60, 50), "shapes", 3, objects=True)
    assert found.box == (10.0, 10.0, 60.0, 50.0) and all(len(x.box) == 4 for x in found.hits)
    with pytest.raises(InvalidBoxError):
        objects.search_box(session.query.key, None, (30, 10, 30, 50), "shapes", 3)
    with pytest.raises(InvalidBoxError):
        objects.search_box(session.query.key, None, (500, 500, 900, 900), "shapes", 3)  # outside the image


def test_library_changes_keep_the_object_vectors(objects_collection, embedder, tmp_path):
    from app.service.library import add_paths, delete_items

    config, data = objects_collection
    before = load_objects(config, "shapes")
    gone = int(before.item_ids[0])
    deleted = delete_items(config, "shapes", ids=[gone])
    after = load_objects(config, "shapes")  # dropped at once, not at the next build
    assert deleted.objects == {"removed": 2} and gone not in set(after.item_ids.tolist()) and len(after) == 46
    extra = tmp_path / "extra.png"
    Image.new("RGB", (90, 70), (200, 30, 30)).save(extra)
    added = add_paths(config, "shapes", [extra], embedder=embedder)
    assert added.objects["photos_detected"] == 1 and added.objects["objects"] == 48
    assert len(load_objects(config, "shapes")) == 48


def test_a_folder_collection_without_the_detector_says_so_and_builds(tmp_path, embedder, model_cache):
    from app.config import Config
    from app.service.library import index_folder
    from tests.helpers import make_image_folder

    make_image_folder(tmp_path / "photos", per_class=2)
    config = Config(indexes_dir=tmp_path / "i", features_dir=tmp_path / "f", cache_dir=tmp_path / "no-detector",
                    weights="untrained", workers=0)
    summary = index_folder(config, "photos", tmp_path / "photos", embedder=embedder)
    assert summary.count == 8 and "detector install" in summary.objects["note"]


@pytest.mark.slow
def test_api_objects_and_search_objects_with_a_default_client(objects_collection, embedder, tmp_path):
    from gradio_client import Client, handle_file

    config, data = objects_collection
    config = config.with_(port=free_port())
    query = data / "circles" / "img_01.jpg"
    with running_app(config, SearchService(config, embedder=embedder)) as url:
        client = Client(url, verbose=False)  # download_files on, its default
        found = client.predict(handle_file(str(query)), api_name="/objects")
        assert [o["label"] for o in found["objects"]] == ["cup", "chair"]
        with Image.open(query) as im:
            width, height = im.size
        for o in found["objects"]:  # in the image's own pixels, inside it
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height and 0 < o["score"] <= 1
        r = client.predict(handle_file(str(query)), "shapes", 3, api_name="/search_objects")
        assert r["objects"] is True and r["k"] == 3 and len(r["hits"]) == 3
        for hit in r["hits"]:
            assert "path" not in hit and {"file", "box", "label", "score", "id", "thumbnail_url"} <= set(hit)
            assert hit["label"] in ("cup", "chair") and len(hit["box"]) == 4
        with urllib.request.urlopen(url.rstrip("/") + r["hits"][0]["thumbnail_url"], timeout=10) as resp:  # noqa: S310
            assert resp.read(3) == b"\xff\xd8\xff"
        from gradio_client.exceptions import AppError as ClientError

        with pytest.raises(ClientError, match="no collection named nope"):
            client.predict(handle_file(str(query)), "nope", 3, api_name="/search_objects")
        # One region searched alone: clipped to the image, the same as the region cut out and searched.
        region = client.predict(handle_file(str(query)), [-40, -40, 40, 30], "shapes", 3, "photos",
                                api_name="/search_box")
        with Image.open(query) as im:
            im.convert("RGB").crop((0, 0, 40, 30)).save(tmp_path / "region.png")
        same = client.predict(handle_file(str(tmp_path / "region.png")), "shapes", 3, api_name="/search_file")
        assert [x["id"] for x in region["hits"]] == [x["id"] for x in same["hits"]]
        objects = client.predict(handle_file(str(query)), [0, 0, 40, 30], "shapes", 2, "objects",
                                 api_name="/search_box")
        assert objects["objects"] is True and all(len(x["box"]) == 4 for x in objects["hits"])
        with pytest.raises(ClientError, match="no size|area|pixel"):
            client.predict(handle_file(str(query)), [20, 10, 20, 30], "shapes", 3, "photos", api_name="/search_box")
    assert np.isfinite(r["hits"][0]["score"])
