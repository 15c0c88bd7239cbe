"""The Collections tab made for people (app.web.library and its helpers), without a browser: the roots shown
literally, a folder browser confined to the library roots, one control per change, the table's folder /
last update / watched / skipped columns with the skipped reasons on demand, and the "Watch this folder"
switch (a FolderWatcher in a thread of the web layer's, stopped on demand, on rename and drop)."""

from __future__ import annotations

import os
import time

import pytest

from app.config import Config
from app.errors import AppError
from app.service.search import SearchService
from app.web.handlers import Handlers
from app.web.library_info import code_span, details_md, skipped_md
from tests.fakes import FakeEmbedder
from tests.helpers import make_image_folder, synthetic_image

WAIT_S = 30


def handlers(tmp_path, root):
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features",
                    cache_dir=tmp_path / "cache", workers=0, library_roots=(root,))
    return Handlers(SearchService(config, embedder=FakeEmbedder()), config, work_dir=tmp_path / "q")


@pytest.fixture
def lib(tmp_path):
    root = tmp_path / "library"
    make_image_folder(root / "trip", classes=("dots", "bars"), per_class=3, seed=3)
    (root / "trip" / "notes.jpg").write_text("not a picture")
    (root / "trip" / ".cache").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", root / "escape")
    h = handlers(tmp_path, root)
    yield h.library, root
    h.library.watchers.stop_all()


def wait_for(check, seconds: float = WAIT_S) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_roots_are_shown_literally_in_code_spans(tmp_path):
    root = tmp_path / "my-photos_2021*best"
    root.mkdir()
    md = handlers(tmp_path, root).library.roots_md()
    assert f"`{root}`" in md and "\\" not in md  # no stray backslash inside the code span
    assert code_span("a`b") == "`` a`b ``" and code_span("x-y_z*") == "`x-y_z*`"


def test_the_folder_browser_stays_under_the_roots(lib, tmp_path):
    lib, root = lib
    start = lib.browse("")
    assert start.folder == str(root.resolve()) and start.subfolders == ["escape", "trip"]
    trip = lib.browse(start.folder, "trip")
    assert trip.folder == str((root / "trip").resolve())
    assert trip.subfolders == ["bars", "dots"]  # hidden folders are not listed
    assert lib.browse(trip.folder, "dots").note == "no sub-folders"
    assert lib.browse(trip.folder, up=True).folder == start.folder
    assert lib.browse(start.folder, up=True).folder == start.folder  # never above the root
    with pytest.raises(AppError, match="not under a library root"):
        lib.browse(start.folder, "escape")  # a link out of the root
    for bad in ("..", "trip/dots", ""):
        with pytest.raises(AppError):
            lib.browse(start.folder, bad) if bad else lib.browse(str(tmp_path / "outside"))


def test_each_change_has_its_own_control_and_the_table_says_what_a_person_needs(lib):
    lib, root = lib
    photos = sorted(p for p in root.rglob("*") if p.is_file())
    lib.index_now(str(root / "trip"), "trip")
    row = {r[0]: r for r in lib.rows()}["trip"]
    assert row[1] == 6 and row[4] == str((root / "trip").resolve()) and row[6] == "no" and row[7] == 2
    details = details_md(lib.ctx, "trip", False)
    assert "6 images" in details and f"`{(root / 'trip').resolve()}`" in details and "not watched" in details
    assert "last update 20" in details and "2 skipped" in details
    skipped = skipped_md(lib.ctx, "trip").splitlines()
    assert skipped[0] == "The last scan skipped 2 files:"
    assert skipped[1].startswith("- `.cache`: hidden folder") and skipped[2].startswith("- `notes.jpg`: ")
    assert "not an image" in skipped[2]
    synthetic_image(1, 40, seed=4).save(root / "extra.jpg")
    assert "added 1" in lib.add_text("trip", str(root / "extra.jpg")) and lib.count("trip") == 7
    assert "removed 1" in lib.delete_text("trip", "0") and lib.count("trip") == 6
    assert "Renamed trip to holiday" in lib.rename_text("trip", "holiday")
    with pytest.raises(AppError, match="give its name again"):
        lib.drop_text("holiday", "trip")
    assert "Dropped holiday" in lib.drop_text("holiday", "holiday")
    assert "holiday" not in {r[0] for r in lib.rows()}
    assert sorted(p for p in root.rglob("*") if p.is_file()) == sorted([*photos, root / "extra.jpg"])  # none deleted


def test_the_watch_switch_keeps_the_collection_current_and_stops(lib):
    lib, root = lib
    lib.index_now(str(root / "trip"), "trip")
    assert "Watching" in lib.watch("trip", True)
    assert lib.watchers._watches["trip"].watcher._embedder is lib.ctx.service.embedder  # built with the app's model
    assert lib.watchers.watching("trip") and {r[0]: r for r in lib.rows()}["trip"][6] == "yes"
    assert wait_for(lambda: lib.watchers.status_line("trip").startswith("watching")), lib.watchers.status_line("trip")
    synthetic_image(2, 50, seed=5).save(root / "trip" / "dots" / "new.jpg")
    assert wait_for(lambda: lib.count("trip") == 7), lib.watchers.status_line("trip")
    assert "7 images" in lib.watchers.status_line("trip")
    assert "Stopped watching trip" in lib.watch("trip", False)
    assert not lib.watchers.watching("trip") and lib.watchers.status_line("trip") == ""
    synthetic_image(3, 51, seed=6).save(root / "trip" / "dots" / "later.jpg")
    time.sleep(1.0)
    assert lib.count("trip") == 7  # not watched any more
    lib.watch("trip", True)
    thread = lib.watchers._watches["trip"].thread
    assert "Renamed" in lib.rename_text("trip", "album")  # a rename stops the watcher first
    assert not thread.is_alive() and not lib.watchers.names()


def test_watching_needs_a_folder_under_a_root(lib, tmp_path):
    lib, root = lib
    with pytest.raises(AppError, match="no collection named"):
        lib.watch("nothing", True)
    lib.index_now(str(root / "trip"), "trip")
    outside = handlers(tmp_path, tmp_path / "outside").library
    with pytest.raises(AppError, match="not under a library root"):
        outside.watch("trip", True)


def test_several_roots_are_browsed_one_at_a_time(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "x").mkdir(parents=True)
    (b / "y" / "z").mkdir(parents=True)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features",
                    cache_dir=tmp_path / "cache", workers=0, library_roots=(a, b))
    h = Handlers(SearchService(config, embedder=FakeEmbedder()), config, work_dir=tmp_path / "q")
    lib = h.library
    assert lib.browse("").folder == str(a.resolve()) and lib.browse("").subfolders == ["x"]
    y = lib.browse(str(b), "y")
    assert y.subfolders == ["z"] and lib.browse(y.folder, up=True).folder == str(b.resolve())
    assert lib.browse(str(b), up=True).folder == str(b.resolve())  # b's root: not up into tmp_path
    assert "`" + str(a) + "`, `" + str(b) + "`" in lib.roots_md()
