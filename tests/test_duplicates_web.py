"""The Duplicates tab's behaviour (app.web.duplicates) and the ``/duplicates`` endpoint, without a browser.

A folder with planted exact copies (byte copies and a PNG of the same pixels: the exact tier needs no real
weights): Find runs in a thread and the poll shows the groups; a group's members compared with their facts;
keep one and the others move to the trash folder (only under a library root, after a confirmation), gone from
the collection and from search; undo restores the last clean-up only.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from app.config import Config
from app.service.dedup_trash import TRASH
from app.service.library import count_items, delete_items
from app.service.search import SearchService
from app.web.duplicates_view import DupView, Finding
from app.web.handlers import Handlers
from app.web.view import SKIP
from tests.fakes import FakeEmbedder, free_port, running_app
from tests.helpers import make_image_folder


def plant_copies(folder: Path) -> dict[str, set[str]]:
    """Two groups of exact copies in a generated folder: the stored paths of each."""
    make_image_folder(folder, per_class=3, seed=3)
    shutil.copyfile(folder / "circles" / "img_00.jpg", folder / "circles" / "img_00 copy.jpg")
    Image.open(folder / "circles" / "img_00.jpg").convert("RGB").save(folder / "circles" / "img_00 again.png")
    shutil.copyfile(folder / "stripes" / "img_01.jpg", folder / "stripes" / "img_01 copy.jpg")
    return {"circles": {"circles/img_00.jpg", "circles/img_00 copy.jpg", "circles/img_00 again.png"},
            "stripes": {"stripes/img_01.jpg", "stripes/img_01 copy.jpg"}}


def make_handlers(tmp_path: Path, roots: tuple[Path, ...] | None = None) -> tuple[Handlers, Path, dict]:
    from app.service.build import BuildSpec, build_collection

    root = tmp_path / "library"
    planted = plant_copies(root / "pics")
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", cache_dir=tmp_path / "cache",
                    workers=0, library_roots=(root,) if roots is None else roots)
    embedder = FakeEmbedder()
    build_collection(config, BuildSpec(kind="folder", data=root / "pics", name="pics"), embedder=embedder,
                     progress_bar=False)
    return Handlers(SearchService(config, embedder=embedder), config, work_dir=tmp_path / "q"), root / "pics", planted


def found(h: Handlers, tier: str = "exact") -> DupView:
    """Find, then poll until the groups are shown (bounded)."""
    started = h.duplicates.start("pics", tier, "default")
    assert started.timer is True and "Finding duplicates" in started.status
    deadline = time.monotonic() + 60
    while h.duplicates.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    view = h.duplicates.poll()
    assert view.timer is False, view.status
    return view


def files(view: DupView, finding: Finding) -> list[set[str]]:
    return [{m.file for m in g.members} for g in finding.groups]


def test_find_compare_clean_up_and_undo(tmp_path):
    h, folder, planted = make_handlers(tmp_path)
    dups = h.duplicates
    view = found(h)
    finding = view.finding
    assert files(view, finding) == [planted["circles"], planted["stripes"]]  # largest first
    assert [c for _, c in view.groups] == ["1 · exact · 3 photos · 1.000", "2 · exact · 2 photos · 1.000"]
    assert "**pics**: 2 groups (5 photos)" in view.status
    # the first group is on screen: its members, the keeper marked, compared with another one
    g = finding.group
    assert len(view.members) == 3 and sum(c.startswith("★ keep") for _, c in view.members) == 1
    choices, left, right = view.pair
    assert left == g.keeper and right != left and {v for _, v in choices} == {m.id for m in g.members}
    assert all(Path(p).is_file() for p in view.compare)
    assert "96 × 72 px" in view.facts and "file size" in view.facts and "date (modified)" in view.facts
    assert view.keep == (choices, g.keeper) and view.confirm is None
    # pick another pair; a click on the left photo in the gallery compares it with another one
    other = g.others(g.keeper)[1].id
    picked = dups.on_pair(g.keeper, other, finding)
    assert picked.pair is SKIP and g.member(other).name.replace(" ", " ") in picked.facts.replace("\\", "")
    index = [m.id for m in g.members].index(g.keeper)
    clicked = dups.on_member(index, g.keeper, finding)
    assert clicked.pair[2] == g.keeper and clicked.pair[1] != g.keeper
    # keep a photo that is not the suggested keeper: a question first, nothing moves
    keep = next(m for m in g.members if m.file == "circles/img_00 copy.jpg")
    asked = dups.on_ask(keep.id, finding)
    assert "move 2 other photos" in asked.confirm and TRASH in asked.confirm.replace("\\", "")
    assert all((folder / f).exists() for f in planted["circles"])
    assert "Nothing was moved" in dups.on_cancel().status
    cleaned = dups.on_clean(keep.id, finding)
    trash = folder / TRASH / "pics"
    moved = planted["circles"] - {keep.file}
    assert all((trash / f).is_file() and not (folder / f).exists() for f in moved)
    assert (folder / keep.file).is_file()
    assert "Moved 2 photos" in cleaned.status and "removed 2" in cleaned.status
    assert files(cleaned, cleaned.finding) == [planted["stripes"]] and len(cleaned.groups) == 1
    assert count_items(h.config, "pics") == 15 - 2
    # gone from search: the kept photo's exact copies are not among its results any more
    hits = h.service.search_new_image(folder / keep.file, "pics", 5).hits
    assert not {x.path for x in hits} & moved
    # undo: back in place and in the collection
    undone = dups.on_undo("pics")
    assert "Restored 2 photos" in undone.status and undone.finding is None and undone.groups == []
    assert all((folder / f).is_file() for f in planted["circles"])
    assert count_items(h.config, "pics") == 15
    hits = h.service.search_new_image(folder / keep.file, "pics", 5).hits
    assert moved <= {x.path for x in hits}
    assert "Nothing to undo" in dups.on_undo("pics").status


def test_undo_restores_the_last_clean_up_only(tmp_path):
    h, folder, planted = make_handlers(tmp_path)
    dups = h.duplicates
    finding = found(h).finding
    first = finding.group
    dups.on_clean(first.keeper, finding)  # the circles; the stripes' group is shown next
    second = finding.group
    assert {m.file for m in second.members} == planted["stripes"]
    dups.on_clean(second.keeper, finding)
    assert finding.groups == []
    back = dups.on_undo("pics")
    assert "Restored 1 photo" in back.status
    assert all((folder / f).is_file() for f in planted["stripes"])
    assert sum((folder / f).exists() for f in planted["circles"]) == 1  # the first clean-up stays
    assert "Restored 2 photos" in dups.on_undo("pics").status
    assert all((folder / f).is_file() for f in planted["circles"])


def test_clean_up_only_under_a_library_root(tmp_path):
    h, folder, planted = make_handlers(tmp_path / "off", roots=())
    assert "is off" in h.duplicates.roots_md()
    view = found(h)
    assert "off" in view.status  # finding works; the status says clean-up does not
    g = view.finding.group
    refused = h.duplicates.on_ask(g.keeper, view.finding)
    assert "off" in refused.status and refused.confirm is None
    assert "off" in h.duplicates.on_clean(g.keeper, view.finding).status
    assert all((folder / f).is_file() for f in planted["circles"])
    elsewhere, folder2, planted2 = make_handlers(tmp_path / "elsewhere", roots=(tmp_path,))
    elsewhere.duplicates.roots = (tmp_path / "another",)
    (tmp_path / "another").mkdir()
    view = found(elsewhere)
    refused = elsewhere.duplicates.on_clean(view.finding.group.keeper, view.finding)
    assert "not under a library root" in refused.status
    assert "not under a library root" in elsewhere.duplicates.on_undo("pics").status
    assert all((folder2 / f).is_file() for f in planted2["circles"])


def test_bad_choices_and_stale_groups_are_messages(tmp_path):
    h, folder, planted = make_handlers(tmp_path)
    dups = h.duplicates
    assert "no collection named nope" in dups.start("nope", "all", "default").status
    assert "Unknown tier" in dups.start("pics", "similar", "default").status
    assert "Unknown strictness" in dups.start("pics", "all", "lax").status
    assert not dups.running()
    assert dups.on_group(0, None) == DupView()
    assert "click a group first" in dups.on_ask(1, None).status
    finding = found(h).finding
    assert "Choose the photo to keep" in dups.on_ask(None, finding).status
    g = finding.group
    doomed = next(m for m in g.members if m.id != g.keeper)
    delete_items(h.config, "pics", ids=[doomed.id])  # the collection changed since the groups were found
    stale = dups.on_clean(g.keeper, finding)
    assert "no longer item" in stale.status and "Find the duplicates again" in stale.status
    assert all((folder / f).is_file() for f in planted["circles"])


@pytest.mark.slow
def test_the_duplicates_endpoint_with_a_default_client(tmp_path):
    """``/duplicates`` answers the groups as JSON to ``Client(url)`` with its defaults (``download_files`` on):
    members carry ``file``, never ``path``."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError as ClientError

    h, folder, planted = make_handlers(tmp_path)
    config = h.config.with_(port=free_port())
    with running_app(config, SearchService(config, embedder=FakeEmbedder())) as url:
        client = Client(url, verbose=False)
        assert "/duplicates" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        answer = client.predict("pics", "exact", "default", api_name="/duplicates")
        assert answer["collection"] == "pics" and answer["tier"] == "exact"
        groups = answer["groups"]
        assert [{m["file"] for m in g["members"]} for g in groups] == [planted["circles"], planted["stripes"]]
        member = groups[0]["members"][0]
        assert set(member) == {"id", "file", "width", "height", "bytes", "mtime_ns"}
        assert member["bytes"] == (folder / member["file"]).stat().st_size and member["width"] == 96
        assert groups[0]["keeper"] in {m["id"] for m in groups[0]["members"]} and groups[0]["score"] == 1.0
        with pytest.raises(ClientError, match="Unknown tier"):
            client.predict("pics", "similar", "default", api_name="/duplicates")


def test_the_gallery_shows_the_largest_groups_only(tmp_path, monkeypatch):
    from app.web import duplicates

    h, _, planted = make_handlers(tmp_path)
    monkeypatch.setattr(duplicates, "SHOWN_GROUPS", 1)
    view = found(h)
    assert len(view.finding.groups) == 2 and [c for _, c in view.groups] == ["1 · exact · 3 photos · 1.000"]
    assert "The largest 1 are shown" in view.status
