"""Handler tests for the web UI (the handler groups of :mod:`app.web.handlers`) and its server
(:mod:`app.web.server`).

The handlers are called directly, as Gradio would call them, over the ``small_collection``
fixture; a spy embedder counts model runs. No browser here (see ``test_browser.py``).
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from app.config import Config
from app.service.search import SearchService
from app.web import StartupError, allowed_hosts, check_bind, create_app, is_loopback, parse_auth
from app.web.handlers import Handlers
from app.web.session import Session
from app.web.signature import same_picture, signature
from app.web.view import SKIP, View
from tests.fakes import SpyEmbedder, serve_directory
from tests.helpers import make_image_folder, png_claiming, spy_load_image


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def spy(embedder) -> SpyEmbedder:
    return SpyEmbedder(embedder)


@pytest.fixture
def make_handlers(small_collection, spy, tmp_path):
    config, _, _ = small_collection

    def make(**changes) -> Handlers:
        cfg = config.with_(**changes)
        return Handlers(SearchService(cfg, embedder=spy), cfg, work_dir=tmp_path / "queries")

    return make


@pytest.fixture
def h(make_handlers) -> Handlers:
    return make_handlers()


@pytest.fixture(scope="module")
def two_collections(tmp_path_factory, embedder, model_cache):
    """A config with two built collections, ``shapes`` and ``tiles``."""
    from app.service.build import BuildSpec, build_collection

    base = tmp_path_factory.mktemp("two")
    config = Config(data_dir=base / "data", indexes_dir=base / "indexes", features_dir=base / "features",
                    cache_dir=model_cache, weights="untrained", workers=0)
    make_image_folder(base / "a", per_class=3)
    make_image_folder(base / "b", classes=("dots", "bars"), per_class=4, seed=5, size=(80, 80))
    build_collection(config, BuildSpec(kind="folder", data=base / "a", name="shapes"), embedder=embedder, progress_bar=False)
    build_collection(config, BuildSpec(kind="folder", data=base / "b", name="tiles"), embedder=embedder, progress_bar=False)
    return config, base


def crop_editor_value(img: Image.Image) -> dict:
    """What the crop editor (gr.ImageEditor(type="pil", image_mode="RGB")) hands to a handler."""
    return {"background": img, "layers": [], "composite": img}


_uploads = iter(range(10**6))


def upload(img: Image.Image | Path | bytes, folder: Path | None = None) -> str:
    """What the query image hands to a handler: the path of the uploaded file (in Gradio's upload folder)."""
    folder = folder or Path(tempfile.mkdtemp(prefix="gradio-upload-"))
    out = folder / f"upload-{next(_uploads)}.png"
    if isinstance(img, Image.Image):
        img.save(out, format="PNG")
    else:
        out.write_bytes(img if isinstance(img, bytes) else Path(img).read_bytes())
    return str(out)


def close_to(a: Image.Image, b: Image.Image) -> bool:
    """The same picture, at the same size, up to JPEG re-encoding (the app's copies and previews are JPEGs)."""
    return a.size == b.size and same_picture(signature(a), signature(b), tolerance=3.0)


def rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def only_skips(view: View) -> bool:
    return all(getattr(view, f) is SKIP for f in view.__dataclass_fields__)


@pytest.fixture
def query_img(small_collection) -> Image.Image:
    _, _, data = small_collection
    return rgb(data / "circles" / "img_01.jpg")


# -- searching -----------------------------------------------------------------------------------
def test_search_by_image_gives_k_results_with_captions(h, spy, query_img):
    s = Session()
    view = h.queries.on_upload(upload(query_img), "shapes", 5, s)
    assert len(view.results) == 5
    for (path, cap), hit in zip(view.results, s.results, strict=True):
        assert Path(path).is_file() and Path(path).is_relative_to(h.ctx.thumbs.root)  # a thumbnail, not the file
        label, band, score, name = cap.split(" · ")
        assert label in ("circles", "stripes", "squares", "checks") and band == hit.band
        assert -1.0 <= float(score) <= 1.0001
        assert name == Path(hit.path).name
    assert "embed" in view.status and "ms" in view.status and "24 images" in view.status
    assert view.message == ""
    assert spy.calls == 1
    assert s.searched is not None and s.searched.kind == "image"
    assert view.last == s.searched.path and Path(view.last).is_file()
    assert view.compare == (s.searched.path, str(h.ctx.thumbs.preview(s.results[0].abs_path).path))
    assert [c[1] for c in view.compare_choices] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("k, expected", [(0, 1), (-3, 1), (1, 1), (7, 7), (20, 20), (99, 20), (None, 5)])
def test_k_is_clamped(h, query_img, k, expected):
    view = h.queries.on_search(upload(query_img), "shapes", k, Session())
    assert len(view.results) == expected


def test_one_decode_per_new_query(h, query_img, monkeypatch):
    """An upload, a URL-less paste and a crop each decode their image once (the loader runs once)."""
    calls = spy_load_image(monkeypatch)
    s = Session()

    def query_decodes() -> int:  # result thumbnails, made the first time a file is shown, read collection files
        return sum(not isinstance(c[0], (str, Path)) for c in calls)

    h.queries.on_upload(upload(query_img), "shapes", 5, s)
    assert query_decodes() == 1
    h.queries.on_upload(upload(query_img.rotate(90)), "shapes", 5, s)
    assert query_decodes() == 2


def test_one_model_run_however_many_crop_editor_events(h, spy, query_img):
    """A repeated upload of the same file, and the crop editor's change/apply for the image it was opened
    on (no crop made): the model runs once."""
    s = Session()
    first = h.queries.on_upload(upload(query_img), "shapes", 5, s)
    assert first.results != SKIP
    assert only_skips(h.queries.on_upload(upload(query_img), "shapes", 5, s))
    assert h.queries.on_crop_open(s).crop == s.query.path
    for _ in range(2):
        assert only_skips(h.queries.on_crop(crop_editor_value(rgb(Path(s.query.path))), "shapes", 5, s))
    assert spy.calls == 1
    # The Search button always answers, but with the remembered vector.
    again = h.queries.on_search(s.query.path, "shapes", 5, s)
    assert len(again.results) == 5 and "model not run" in again.status
    assert spy.calls == 1
    # Events that carry no image yet (the crop editor sends those too) do nothing.
    assert only_skips(h.queries.on_upload(None, "shapes", 5, s))
    assert only_skips(h.queries.on_crop(None, "shapes", 5, s))


def test_a_different_image_runs_the_model_again(h, spy, small_collection):
    _, _, data = small_collection
    s = Session()
    h.queries.on_upload(upload(data / "circles" / "img_01.jpg"), "shapes", 5, s)
    h.queries.on_upload(upload(data / "squares" / "img_03.jpg"), "shapes", 5, s)
    assert spy.calls == 2


def test_changing_k_reuses_the_query(h, spy, query_img, monkeypatch):
    s = Session()
    h.queries.on_upload(upload(query_img), "shapes", 5, s)
    loads = spy_load_image(monkeypatch)
    view = h.session.on_k(12, "shapes", s)
    assert len(view.results) == 12 and not [c for c in loads if not isinstance(c[0], (str, Path))]  # no re-read
    assert only_skips(h.session.on_k(12, "shapes", s))
    assert spy.calls == 1


# -- reuse: collection images never run the model --------------------------------------------------
def test_example_click_uses_the_stored_vector(h, spy):
    s = h.collections.initial_session("shapes")
    assert len(s.examples) == 12
    view = h.queries.on_example(3, "shapes", 5, s)
    hit = s.examples[3]
    preview = h.ctx.thumbs.preview(hit.abs_path).path
    assert view.query_image == str(preview)  # the query image shows the example's preview
    assert close_to(rgb(preview), rgb(hit.abs_path))  # (a small image: its own size)
    assert view.results[0][0] == str(h.ctx.thumbs.thumb(hit.abs_path).path)  # an item is its own best match
    assert "stored vector" in view.status
    assert spy.calls == 0
    # The crop editor echoes the image it is opened on (through upload and change events, decoded by
    # the browser, so not always bit-exact): not a crop, not a new image.
    assert h.queries.on_crop_open(s).crop == str(preview)
    assert only_skips(h.queries.on_crop(crop_editor_value(rgb(preview)), "shapes", 5, s))
    buf = io.BytesIO()
    rgb(preview).save(buf, format="JPEG", quality=85)
    assert only_skips(h.queries.on_crop(crop_editor_value(rgb(buf)), "shapes", 5, s))
    assert spy.calls == 0
    # Search on the unchanged example (the query image's value): still the stored vector.
    assert "stored vector" in h.queries.on_search(str(preview), "shapes", 5, s).status
    assert spy.calls == 0
    # The query image never echoes: an upload of the same picture is the user's new image.
    assert len(h.queries.on_upload(upload(hit.abs_path), "shapes", 5, s).results) == 5 and spy.calls == 1


def test_late_echo_of_an_earlier_example_is_ignored(h, spy):
    """The crop editor may echo example A after the app already showed example B."""
    s = h.collections.initial_session("shapes")
    a, b = s.examples[1], s.examples[7]
    h.queries.on_example(1, "shapes", 5, s)
    h.queries.on_example(7, "shapes", 5, s)
    assert only_skips(h.queries.on_crop(crop_editor_value(rgb(a.abs_path)), "shapes", 5, s))
    assert only_skips(h.queries.on_crop(crop_editor_value(rgb(b.abs_path)), "shapes", 5, s))
    assert s.searched.item_id == b.id and spy.calls == 0
    # Search answers with what the query image shows (b), still from stored vectors.
    view = h.queries.on_search(s.query.path, "shapes", 5, s)
    assert s.searched.item_id == b.id and "stored vector" in view.status and spy.calls == 0


def test_late_echo_does_not_undo_k_or_collection_changes(two_collections, spy, tmp_path):
    config, _ = two_collections
    h = Handlers(SearchService(config, embedder=spy), config, work_dir=tmp_path)
    s = h.collections.initial_session("shapes")
    h.queries.on_example(2, "shapes", 5, s)
    h.session.on_k(8, "shapes", s)
    h.collections.on_collection("tiles", 8, s)
    echo = crop_editor_value(rgb(s.query.path))
    # The crop editor's echo was fired before those changes, so it carries k=5 and "shapes".
    assert only_skips(h.queries.on_crop(echo, "shapes", 5, s))
    assert s.shown[1:] == ("tiles", 8) and spy.calls == 0


def test_another_image_of_the_same_size_is_not_an_echo(h, spy, small_collection):
    _, _, data = small_collection
    s = h.collections.initial_session("shapes")
    h.queries.on_example(0, "shapes", 5, s)  # a 96x72 collection image
    other = rgb(data / "checks" / "img_05.png")  # also 96x72, another picture
    assert other.size == s.query.size
    view = h.queries.on_upload(upload(other), "shapes", 5, s)
    assert spy.calls == 1 and s.searched.kind == "image" and len(view.results) == 5


def test_result_click_becomes_the_query_without_a_model_run(h, spy, query_img):
    s = Session()
    h.queries.on_upload(upload(query_img), "shapes", 5, s)
    assert spy.calls == 1
    clicked = s.results[2]
    view = h.queries.on_result(2, "shapes", 5, s)
    assert spy.calls == 1  # search_item: no model run
    preview = str(h.ctx.thumbs.preview(clicked.abs_path).path)
    assert view.query_image == preview and view.last == preview
    assert s.searched.kind == "item" and s.searched.item_id == clicked.id
    assert s.results[0].id == clicked.id and view.results[0][0] == str(h.ctx.thumbs.thumb(clicked.abs_path).path)
    assert "stored vector" in view.status


def test_more_examples_shows_other_images(h):
    s = h.collections.initial_session("shapes")
    before = [x.id for x in s.examples]
    view = h.collections.on_more_examples("shapes", s)
    assert len(view.examples) == 12 and [x.id for x in s.examples] != before


def test_crop_of_an_example_is_a_new_image(h, spy):
    s = h.collections.initial_session("shapes")
    assert "Choose an image first" in h.queries.on_crop_open(s).message and h.queries.on_crop_open(s).crop is SKIP
    h.queries.on_example(0, "shapes", 5, s)
    full = rgb(s.examples[0].abs_path)
    cropped = full.crop((10, 10, 60, 50))
    view = h.queries.on_crop(crop_editor_value(cropped), "shapes", 5, s)
    assert spy.calls == 1 and len(view.results) == 5
    assert s.searched.label == "Cropped image" and s.searched.size == (50, 40)
    assert view.query_image == s.searched.path  # the query image shows the crop
    assert view.crop is None  # and the crop editor closes
    assert rgb(Path(s.searched.path)).size == (50, 40)  # what is shown is what was searched


def test_switching_collection_reuses_vectors(two_collections, spy, tmp_path):
    config, _ = two_collections
    h = Handlers(SearchService(config, embedder=spy), config, work_dir=tmp_path)
    s = h.collections.initial_session("shapes")
    h.queries.on_example(1, "shapes", 5, s)
    view = h.collections.on_collection("tiles", 5, s)
    assert spy.calls == 0  # the shapes item's stored vector searched in tiles
    assert "tiles" in view.status and len(view.examples) == 8
    assert all("/b/" in str(hit.abs_path) for hit in s.results) and len(view.results) == 5
    img = rgb(s.examples[0].abs_path).crop((0, 0, 40, 40))
    h.queries.on_upload(upload(img), "tiles", 5, s)
    h.collections.on_collection("shapes", 5, s)
    assert spy.calls == 1  # the uploaded image's vector is remembered


# -- URLs and errors -------------------------------------------------------------------------------
def test_url_is_fetched_and_searched(make_handlers, spy, small_collection):
    _, _, data = small_collection
    h = make_handlers(allow_loopback_urls=True)
    s = Session()
    with serve_directory(data) as base:
        view = h.queries.on_url(f"  {base}/stripes/img_02.png  ", "shapes", 4, s)
    assert view.message == "" and len(view.results) == 4
    assert view.query_image == s.searched.path and Path(view.query_image).is_file()  # the query image shows the fetched image
    assert close_to(rgb(Path(view.query_image)), rgb(data / "stripes" / "img_02.png"))  # the app's copy of it
    assert view.results[0][1].startswith("stripes")
    assert spy.calls == 1


def test_url_errors_are_messages(make_handlers, small_collection, tmp_path):
    _, _, data = small_collection
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "notes.txt").write_text("not an image at all")
    s = Session()
    h = make_handlers(allow_loopback_urls=True)
    with serve_directory(tmp_path / "site") as base:
        not_image = h.queries.on_url(f"{base}/notes.txt", "shapes", 5, s)
        missing = h.queries.on_url(f"{base}/nothing.png", "shapes", 5, s)
    assert "not an image" in not_image.message and not_image.results is SKIP
    assert "404" in missing.message
    refused = make_handlers().queries.on_url("http://127.0.0.1:9/x.png", "shapes", 5, s)  # loopback not allowed
    assert refused.message.startswith("⚠️") and "Traceback" not in refused.message
    assert "URL" in h.queries.on_url("   ", "shapes", 5, s).message
    assert "ftp" in h.queries.on_url("ftp://example.com/a.png", "shapes", 5, s).message
    assert s.searched is None


def test_no_image_in_the_query_image_is_a_message(h):
    view = h.queries.on_search(None, "shapes", 5, Session())
    assert "Choose an image first" in view.message


@pytest.mark.parametrize("data, reason", [
    (png_claiming(30_000, 30_000), "too large"),
    (b"just some notes, not an image", "not an image"),
    (b"%PDF-1.4 a document", "unsupported format: PDF"),
    (b"", "empty"),
])
def test_bad_uploads_get_the_loaders_message(h, spy, data, reason):
    """Uploads reach the app's own loader undecoded: its checks (pixel cap before decoding, allow-list) apply."""
    s = Session()
    view = h.queries.on_upload(upload(data), "shapes", 5, s)
    assert reason in view.message and view.message.startswith("⚠️") and "Traceback" not in view.message
    assert view.results is SKIP and s.searched is None and spy.calls == 0


def test_missing_result_files_show_a_placeholder_and_a_warning(tmp_path, spy):
    """Images deleted from disk after indexing: the results still show, as placeholders, with a warning."""
    import shutil

    from app.service.build import BuildSpec, build_collection

    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", cache_dir=tmp_path / "cache",
                    weights="untrained", workers=0)
    photos = tmp_path / "photos"
    make_image_folder(photos, per_class=3)
    build_collection(config, BuildSpec(kind="folder", data=photos, name="mine", factory="Flat"),
                     embedder=spy.inner, progress_bar=False)
    h = Handlers(SearchService(config, embedder=spy), config, work_dir=tmp_path / "q")
    s = h.collections.initial_session("mine")
    shutil.rmtree(photos / "circles")
    view = h.queries.on_example(0, "mine", 12, s)
    gone = [hit for hit in s.results if not hit.abs_path.exists()]
    assert len(view.results) == 12 and len(gone) == 3
    placeholder = str(h.ctx.thumbs.placeholder(256))
    assert [p for p, _ in view.results].count(placeholder) == 3
    assert "3 result images are missing on disk" in view.message and "Rebuild mine" in view.message
    again = h.queries.on_result(next(i for i, hit in enumerate(s.results) if not hit.abs_path.exists()), "mine", 5, s)
    assert len(again.results) == 5 and again.query_image == str(h.ctx.thumbs.placeholder(1024))  # still searchable


def test_unexpected_errors_are_logged_not_shown(h, monkeypatch, caplog, query_img):
    def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(h.service, "search_new_image", boom)
    toasts = []
    h.toast = toasts.append
    with caplog.at_level(logging.ERROR, logger="app.web.guarded"):
        view = h.queries.on_upload(upload(query_img), "shapes", 5, Session())
    assert "Something went wrong" in view.message and "secret" not in view.message
    assert toasts and "secret" not in toasts[0]
    assert "secret internals" in caplog.text  # the traceback is in the server log


def test_missing_collection_shows_the_build_command(h):
    choices = dict((v, label) for label, v in h.collections.collection_choices())
    assert choices["caltech101"].endswith("not built") and choices["voc2012"].endswith("not built")
    assert choices["shapes"] == "shapes · 24 images · resnet50"  # the model it was built with
    assert h.collections.default_collection() == "shapes"
    s = Session()
    view = h.collections.on_collection("caltech101", 5, s)
    assert "not built" in view.message
    assert "python scripts/build_index.py --kind caltech101 --data data/caltech101" in view.message
    assert view.results == [] and view.examples == []
    search = h.queries.on_search(upload(Image.new("RGB", (40, 40))), "voc2012", 5, s)
    assert "voc2012" in search.message and "build" in search.message.lower()


def test_no_collection_at_all_explains_how_to_build(tmp_path, spy):
    config = Config(indexes_dir=tmp_path / "i", features_dir=tmp_path / "f", weights="untrained")
    h = Handlers(SearchService(config, embedder=spy), config, work_dir=tmp_path / "q")
    assert h.collections.default_collection() is None
    setup = h.collections.setup_md()
    assert "No collection is built yet" in setup and "--kind caltech101" in setup
    view = h.queries.on_search(upload(Image.new("RGB", (40, 40))), None, 5, h.collections.initial_session(None))
    assert "No collection is built yet" in view.message
    assert spy.calls == 0


def test_untrained_notice_is_shown(h):
    assert "UNTRAINED" in h.collections.notices_md()


# -- history, last searched, compare ---------------------------------------------------------------
def test_history_most_recent_first_without_duplicates(h, spy, small_collection):
    _, _, data = small_collection
    s = h.collections.initial_session("shapes")
    h.queries.on_example(0, "shapes", 5, s)
    shown = {s.examples[0].abs_path.resolve(), s.examples[5].abs_path.resolve()}
    uploaded = next(p for p in sorted(data.rglob("*.jpg")) if p.resolve() not in shown)
    h.queries.on_upload(upload(uploaded), "shapes", 5, s)
    h.queries.on_example(5, "shapes", 5, s)
    view = h.queries.on_example(0, "shapes", 5, s)  # again: moves to the front
    keys = [q.key for q in s.history]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert keys[0] == f"item:shapes:{s.examples[0].id}"
    assert [p for p, _ in view.history] == [str(h.ctx.thumbs.thumb(q.path).path) for q in s.history]
    # Click the uploaded image in the history: searched again with its remembered vector.
    assert [q.kind for q in s.history] == ["item", "item", "image"]
    back = h.session.on_history(2, "shapes", 5, s)
    assert back.query_image == s.history[0].path and s.searched.kind == "image"
    assert spy.calls == 1
    for i in range(14):
        h.queries.on_example(i % 12, "shapes", 5, s)
    assert len(s.history) == 12


def test_last_searched_and_copy_buttons(h, query_img):
    s = Session()
    assert "Nothing has been searched" in h.session.on_use_last(s).message
    h.queries.on_upload(upload(query_img), "shapes", 5, s)
    view = h.session.on_use_last(s)
    assert view.query_image == s.searched.path and view.results is SKIP
    assert s.query.origin == "app"


def test_compare_picks_a_result(h, query_img):
    s = Session()
    h.queries.on_upload(upload(query_img), "shapes", 5, s)
    view = h.session.on_compare(3, s)
    assert view.compare == (s.searched.path, str(h.ctx.thumbs.preview(s.results[3].abs_path).path))
    assert only_skips(h.session.on_compare(99, s))


# -- the server: host check, file route, auth, bind rules -----------------------------------------
@pytest.fixture
def app_client(small_collection, spy):
    from starlette.testclient import TestClient

    config = small_collection[0].with_(port=7861)
    app, handlers = create_app(config, SearchService(config, embedder=spy))
    with TestClient(app, base_url="http://127.0.0.1:7861") as client:
        yield client, handlers


def test_host_header_is_checked(app_client):
    client, _ = app_client
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"host": "localhost:7861"}).status_code == 200
    for bad in ("evil.example:7861", "evil.example", "127.0.0.1:9999", "127.0.0.1", "localhost.evil.example:7861"):
        r = client.get("/", headers={"host": bad})
        assert r.status_code == 400, bad
        assert "Invalid Host" in r.text
    assert client.get("/config", headers={"host": "attacker.example:7861"}).status_code == 400
    config = client.get("/config").json()
    assert config["show_error"] is False  # unexpected errors reach the browser without their text


def test_file_route_serves_renderings_never_collection_files(app_client, small_collection, tmp_path):
    client, handlers = app_client
    _, _, data = small_collection
    inside = data / "circles" / "img_00.jpg"
    thumb = handlers.ctx.thumbs.thumb(inside)
    assert thumb.ok
    ok = client.get(f"/gradio_api/file={thumb.path}")
    assert ok.status_code == 200 and ok.content == thumb.path.read_bytes()
    assert Image.open(io.BytesIO(ok.content)).format == "JPEG"  # re-encoded by the app
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(secret)
    for path in (inside, secret, Path("/etc/passwd"), data.parent / "indexes" / "shapes.manifest.json",
                 Path(f"{data}/../indexes/shapes.manifest.json"), Path(f"{thumb.path.parent}/../../../../etc/passwd")):
        r = client.get(f"/gradio_api/file={path}")
        assert r.status_code == 403, path
        assert "Traceback" not in r.text
    for url in ("/gradio_api/file=http://example.com/a.png", "/gradio_api/file=HTTPS://example.com/a.png",
                "/gradio_api/file/https://example.com/a.png", "/gradio_api/proxy=http://example.com/a"):
        assert client.get(url).status_code == 403, url


def test_upload_limit_and_bounded_queue(small_collection, spy):
    from starlette.testclient import TestClient

    config = small_collection[0].with_(port=7863, max_upload_mb=1, queue_size=7)
    app, _ = create_app(config, SearchService(config, embedder=spy))
    gradio_app = next(r.app for r in app.routes if hasattr(getattr(r, "app", None), "get_blocks"))
    assert gradio_app.get_blocks()._queue.max_size == 7
    assert gradio_app.get_blocks().state_session_capacity == config.state_sessions == 256  # memory is bounded
    with TestClient(app, base_url="http://127.0.0.1:7863") as client:
        assert client.get("/config").json()["max_file_size"] == 1024 * 1024
        big = client.post("/gradio_api/upload", files={"files": ("big.png", b"x" * (1024 * 1024 + 1), "image/png")})
        assert big.status_code == 413
        small = client.post("/gradio_api/upload", files={"files": ("small.png", b"x" * 1000, "image/png")})
        assert small.status_code == 200


def test_auth_is_required_when_configured(small_collection, spy):
    from starlette.testclient import TestClient

    config = small_collection[0].with_(port=7862, auth=("ann", "s3cret"))
    app, _ = create_app(config, SearchService(config, embedder=spy))
    with TestClient(app, base_url="http://localhost:7862") as client:
        assert client.get("/config").status_code == 401
        assert client.post("/login", data={"username": "ann", "password": "nope"}).status_code == 400
        assert client.post("/login", data={"username": "ann", "password": "s3cret"}).status_code == 200
        assert client.get("/config").status_code == 200


def test_bind_rules(capsys):
    from app.__main__ import main
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(StartupError):
        check_bind(Config(host="0.0.0.0"))
    check_bind(Config(host="0.0.0.0", auth=("a", "b")))
    check_bind(Config())
    assert parse_auth("ann:pa:ss") == ("ann", "pa:ss") and parse_auth(None) is None
    for bad in ("ann", ":x", "ann:"):
        with pytest.raises(StartupError):
            parse_auth(bad)
    assert allowed_hosts("127.0.0.1", 7860) == {"127.0.0.1:7860", "localhost:7860", "[::1]:7860"}
    assert allowed_hosts("192.168.1.5", 80, ["photos.lan"]) == {"192.168.1.5:80", "192.168.1.5", "photos.lan:80",
                                                               "photos.lan"}
    assert main(["--host", "0.0.0.0", "--port", "1"]) == 2  # refused before anything starts
    assert "--auth" in capsys.readouterr().err


def test_collection_of_another_model_is_listed_with_its_rebuild_command(tmp_path):
    """Built with EfficientNet-Lite0 (1280-d), served by an app running ResNet-50: listed, not searchable,
    with both ways out (restart with its model, or the command that rebuilds it for the running one)."""
    from app.service.build import BuildSpec, build_collection
    from tests.fakes import FakeEmbedder

    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", workers=0)
    make_image_folder(tmp_path / "photos", per_class=2)
    lite = FakeEmbedder("efficientnet-lite0/fake", dim=1280)
    build_collection(config, BuildSpec(kind="folder", data=tmp_path / "photos", name="mine", factory="Flat"), embedder=lite, progress_bar=False)
    h = Handlers(SearchService(config, embedder=FakeEmbedder("resnet50/fake")), config, work_dir=tmp_path / "q")
    choices = dict((v, label) for label, v in h.collections.collection_choices())
    assert choices["mine"] == "mine · built with efficientnet-lite0"
    view = h.collections.on_collection("mine", 5, Session())
    text = view.message.replace("\\", "")  # as rendered: Markdown escapes removed
    assert "built with the model efficientnet-lite0" in text and "`--model efficientnet-lite0`" in text
    assert f"python scripts/build_index.py --kind folder --data {tmp_path / 'photos'} --name mine" in text
    assert view.results == [] and view.examples == []
    # the same collection under an app running its model is ready and names the model
    h2 = Handlers(SearchService(config, embedder=lite), config, work_dir=tmp_path / "q2")
    choices2 = dict((v, label) for label, v in h2.collections.collection_choices())
    assert choices2["mine"] == "mine · 8 images · efficientnet-lite0"
    assert h2.ctx.engine().startswith("efficientnet-lite0 · ")
