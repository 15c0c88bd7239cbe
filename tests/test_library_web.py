"""The Collections tab's behaviour (app.web.library) and the management API endpoints, without a browser.

Library roots confine every path; an index job runs in a thread while searches go on, reports its
progress, can be cancelled, and ends with a summary; management changes are the service's.
"""

from __future__ import annotations

import os
import time

import pytest

from app.config import Config
from app.errors import AppError
from app.service.search import SearchService
from app.web.handlers import Handlers
from app.web.library import LibraryRootError, library_path
from tests.fakes import FakeEmbedder, SpyEmbedder, free_port, running_app
from tests.helpers import make_image_folder


def wait_done(lib, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while lib.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not lib.running(), "the index job did not finish"


@pytest.fixture
def setup(tmp_path):
    root = tmp_path / "library"
    make_image_folder(root / "trip", per_class=3)
    (root / "trip" / "notes.jpg").write_text("not a picture")
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features",
                    cache_dir=tmp_path / "cache", workers=0, library_roots=(root,))
    spy = SpyEmbedder(FakeEmbedder())
    h = Handlers(SearchService(config, embedder=spy), config, work_dir=tmp_path / "q")
    return h, root, tmp_path


def test_paths_must_be_under_a_library_root(tmp_path):
    root = tmp_path / "lib"
    (root / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "escape")
    assert library_path((root,), str(root / "a")) == (root / "a").resolve()
    for bad in (str(tmp_path / "outside"), str(root / "escape"), str(root / ".." / "outside"), "/etc", ""):
        with pytest.raises(LibraryRootError):
            library_path((root,), bad)
    with pytest.raises(LibraryRootError, match="off"):
        library_path((), str(root / "a"))


def test_index_a_folder_in_the_background_then_search_it(setup, monkeypatch):
    h, root, _ = setup
    lib = h.library
    assert "can be indexed" in lib.roots_md()
    real = lib.ctx.service.embedder.embed_arrays
    started = []

    def slow(batch):  # the job takes a while: meanwhile a second one is refused, and searching works
        started.append(1)
        time.sleep(0.3)
        return real(batch)

    monkeypatch.setattr(lib.ctx.service.embedder, "embed_arrays", slow)
    message = lib.start(str(root / "trip"), "trip", None)
    assert "Indexing" in message and lib.running()
    with pytest.raises(AppError, match="being indexed"):  # one job at a time
        lib.start(str(root / "trip"), "trip2", None)
    deadline = time.monotonic() + 30
    while not started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lib.running() and "running" in lib.progress_html()
    wait_done(lib)
    monkeypatch.undo()
    summary = lib.summary_md()
    assert "**trip**: 12 images" in summary and "added 12, changed 0, removed 0, unchanged 0" in summary
    assert "Skipped 1" in summary and "notes\\.jpg" in summary  # Markdown-escaped
    assert "Finished" in lib.progress_html()
    rows = {r[0]: r for r in lib.rows()}
    assert rows["trip"][1:4] == [12, "resnet50", "ready"]
    assert rows["trip"][4] == str((root / "trip").resolve()) and rows["trip"][6:] == ["no", 1]
    assert rows["trip"][5][:2] == "20"  # the last update: YYYY-MM-DD HH:MM
    assert ("trip · 12 images · resnet50", "trip") in h.collections.collection_choices()
    s = h.collections.initial_session("trip")
    view = h.queries.on_example(0, "trip", 5, s)
    assert len(view.results) == 5 and "trip" in view.status
    # a re-run with nothing changed embeds nothing
    calls = h.service.embedder.calls
    lib.start(str(root / "trip"), "trip", None)
    wait_done(lib)
    assert "added 0, changed 0, removed 0, unchanged 12" in lib.summary_md() and h.service.embedder.calls == calls


def test_cancel_leaves_the_collection_as_it_was(setup, monkeypatch):
    h, root, _ = setup
    lib = h.library
    make_image_folder(root / "big", per_class=30)

    real = lib.ctx.service.embedder.embed_arrays

    def slow(batch):
        time.sleep(0.05)
        return real(batch)

    monkeypatch.setattr(lib.ctx.service.embedder, "embed_arrays", slow)
    lib.start(str(root / "big"), "big", None)
    deadline = time.monotonic() + 30
    while lib.job.progress is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "Cancelling" in lib.cancel()
    wait_done(lib)
    assert "Cancelled" in lib.summary_md()
    assert "big" not in {r[0] for r in lib.rows() if r[3] == "ready"}


def test_refusals_are_messages(setup, tmp_path):
    h, root, _ = setup
    for args, text in (((str(tmp_path / "q"), "x", None), "not under a library root"),
                       ((str(root / "nothing"), "x", None), "does not exist"),
                       ((str(root / "trip"), "x", "no-such-model"), "Unknown model")):
        with pytest.raises(AppError, match=text):
            h.library.start(*args)
    off = Handlers(h.service, h.config.with_(library_roots=()), work_dir=tmp_path / "q2").library
    assert not off.enabled and "--library-root" in off.roots_md()
    with pytest.raises(AppError, match="off"):
        off.start(str(root / "trip"), "trip", None)


def test_manage_add_delete_rename_drop(setup):
    h, root, _ = setup
    lib = h.library
    lib.index_now(str(root / "trip"), "trip")
    make_image_folder(root / "more", classes=("dots",), per_class=2, seed=9)
    assert "added 2" in lib.add_text("trip", str(root / "more"))
    assert lib.count("trip") == 14
    assert "removed 2" in lib.delete_text("trip", "0, 1")
    assert lib.count("trip") == 12
    with pytest.raises(AppError, match="confirm"):
        lib.drop_text("trip", "nope")
    assert "Renamed trip to holiday" in lib.rename_text("trip", "holiday")
    assert "Dropped holiday" in lib.drop_text("holiday", "holiday")
    assert "holiday" not in {r[0] for r in lib.rows()}
    with pytest.raises(AppError, match="not under a library root"):
        lib.add_text("caltech101", "/etc")


@pytest.mark.slow
def test_management_endpoints_only_with_a_library_root(setup, tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError as ClientError

    h, root, _ = setup
    config = h.config.with_(port=free_port())
    with running_app(config, SearchService(config, embedder=FakeEmbedder())) as url:
        client = Client(url, verbose=False, download_files=False)
        names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        assert {"/index_folder", "/count", "/add", "/delete", "/rename", "/drop"} <= names
        summary = client.predict(str(root / "trip"), "trip", "", api_name="/index_folder")
        assert summary["summary"] == "added 12, changed 0, removed 0, unchanged 0" and summary["count"] == 12
        assert client.predict("trip", api_name="/count") == 12
        assert client.predict("trip", [0, 1], [], api_name="/delete")["count"] == 10
        found = client.predict("trip", 3, 2, api_name="/search_item")  # the new collection is searchable at once
        assert found["collection"] == "trip" and found["hits"][0]["id"] == 3
        with pytest.raises(ClientError, match="not under a library root"):
            client.predict("/etc", "etc", "", api_name="/index_folder")
    off = config.with_(port=free_port(), library_roots=())
    with running_app(off, SearchService(off, embedder=FakeEmbedder())) as url:
        names = set(Client(url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"])
        assert names == {"/search_file", "/search_url", "/search_item", "/collections", "/duplicates", "/objects",
                         "/search_objects", "/search_box"}


def test_the_library_root_flag(tmp_path):
    """``python -m app --library-root DIR`` (repeatable): resolved folders; a missing one stops start-up."""
    from app.__main__ import library_roots, make_parser
    from app.web import StartupError

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    args = make_parser().parse_args(["--library-root", str(tmp_path / "a"), "--library-root", str(tmp_path / "b")])
    assert library_roots(args.library_root) == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    with pytest.raises(StartupError, match="not a folder"):
        library_roots([str(tmp_path / "missing")])
