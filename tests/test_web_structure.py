"""The web layer's structure: what app/web may import, small functions and modules, docstrings that name
what exists, and the page that ``build_ui`` lays out (components, labels and events, each event's outputs
keyed by component), checked without a browser."""

from __future__ import annotations

import ast
import importlib
import re
import time
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from app.config import PROJECT_ROOT
from app.service.search import SearchService
from app.web.handlers import Handlers
from app.web.layout import build_page, build_ui
from app.web.outputs import SearchOutputs
from app.web.view import View
from tests.fakes import SpyEmbedder

WEB = PROJECT_ROOT / "app" / "web"
MODULES = sorted(WEB.glob("*.py"))
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
ALLOWED_APP_PACKAGES = {"app.config", "app.errors", "app.files", "app.net", "app.core", "app.index", "app.service",
                        "app.metrics", "app.web"}
FORBIDDEN_PACKAGES = {"numpy", "torch", "faiss"}  # the UI holds no array, model or index code


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_web_imports_only_lower_layers(path):
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN_PACKAGES, f"{path.name} imports {name}"
        if top == "app":
            assert ".".join(name.split(".")[:2]) in ALLOWED_APP_PACKAGES, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_modules_are_small_and_say_what_they_own(path):
    text = path.read_text()
    tree = ast.parse(text)
    assert ast.get_docstring(tree), f"{path.name} has no module docstring"
    assert len(text.splitlines()) <= MAX_MODULE_LINES, path.name
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = node.end_lineno - start + 1
            reason = "long because" in (ast.get_docstring(node) or "").lower()
            assert length <= MAX_FUNCTION_LINES or reason, (
                f"{path.name}:{node.lineno} {node.name} is {length} lines; split it, or say why in its docstring "
                f"(\"Long because ...\")")


# Cross-references in docstrings (:mod:`app.web.x`, :class:`~app.web.x.Y`, ``app.web.x.y``) and comments.
_REFERENCE = re.compile(r"(?:`~?|``)(app(?:\.\w+)+)")
_LOCAL_REFERENCE = re.compile(r":(?:class|func|data|attr):`(?!~|app\.)([\w.]+)`|:meth:`(?!~|app\.)(\w+\.\w+)`")
# Imports inside functions, each for a measured reason (app/web/server.py's docstring gives the numbers).
LATE_IMPORTS = {("server.py", "gradio"), ("server.py", "fastapi"), ("server.py", "app.service.search"),
                ("server.py", "app.web.assets"), ("server.py", "app.web.handlers"), ("server.py", "app.web.layout"),
                ("server.py", "uvicorn"), ("guard.py", "starlette.responses")}


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_docstrings_name_modules_and_classes_that_exist(path):
    text = path.read_text()
    refs = set(_REFERENCE.findall(text))
    # A bare :class:`Name`, :func:`name`, :meth:`Class.method` or :data:`NAME` is one of the module's own names.
    module = f"app.web.{path.stem}" if path.stem != "__init__" else "app.web"
    refs |= {f"{module}.{name}" for pair in _LOCAL_REFERENCE.findall(text) for name in pair if name}
    missing = sorted(r for r in refs if not _resolves(r))
    assert not missing, f"{path.name} names what does not exist: {missing}"


def test_reference_check_fails_on_a_missing_name():
    assert _resolves("app.web.view.View") and _resolves("app.web.outputs.SearchOutputs.keyed")
    assert not _resolves("app.web.common.QueryRunner") and not _resolves("app.web.view.Query")


def test_imports_are_at_the_top_unless_measured():
    late = set()
    for path in MODULES:
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom):
                        late.add((path.name, node.module))
                    elif isinstance(node, ast.Import):
                        late |= {(path.name, a.name) for a in node.names}
    assert late <= LATE_IMPORTS, sorted(late - LATE_IMPORTS)


# Every component the page has, by elem_id, and the events each one triggers.
ELEM_IDS = {"crop-src", "ris-header-row", "ris-header", "collection", "ris-notice", "ris-setup", "query",
            "crop", "crop-box", "crop-editor", "crop-close", "url", "fetch", "k", "search", "ris-message", "results", "status", "compare-box", "compare-pick",
            "compare", "tab-examples", "examples", "more-examples", "tab-history", "last", "last-caption",
            "last-to-query", "query-to-last", "history", "api-search-file", "tab-collections", "lib-table",
            "lib-roots", "lib-folder", "lib-name", "lib-model", "lib-index", "lib-cancel", "lib-progress", "lib-summary",
            "lib-root", "lib-up", "lib-browse", "lib-collection", "lib-details", "lib-watch", "lib-watch-status",
            "lib-skipped-box", "lib-skipped", "lib-add-use-folder",
            *(f"lib-{c}{part}" for c in ("add", "delete", "rename", "drop") for part in ("", "-arg", "-msg")),
            "limits", "limit-folder", "limit-since", "limit-until", "limit-camera", "limit-band", "limit-apply",
            "tab-duplicates", "dup-collection", "dup-tier",
            "dup-strictness", "dup-find", "dup-roots", "dup-status", "dup-groups", "dup-members", "dup-left",
            "dup-right", "dup-compare", "dup-facts", "dup-keep", "dup-clean", "dup-undo", "dup-confirm-box",
            "dup-confirm-text", "dup-confirm", "dup-cancel", "search-mode", "objects-box", "objects-note",
            "objects-image", "objects", "api-objects", "api-search-objects", "api-search-box"}
EVENTS = {("query", "upload"): "on_upload", ("crop", "click"): "on_crop_open",
          ("crop-close", "click"): "on_crop_close", ("crop-editor", "change"): "on_crop",
          ("crop-editor", "apply"): "on_crop", ("crop-src", "change"): None, ("search", "click"): "on_search",
          ("query-to-last", "click"): "on_search", ("url", "submit"): "on_url", ("fetch", "click"): "on_url",
          ("k", "release"): "on_k", ("k", "change"): "on_k", ("collection", "change"): "on_collection",
          ("more-examples", "click"): "on_more_examples", ("examples", "select"): "on_example",
          ("results", "select"): "on_result", ("history", "select"): "on_history",
          ("compare-pick", "input"): "on_compare", ("last-to-query", "click"): "on_use_last",
          ("api-search-file", "click"): "search_file",
          **{(f"limit-{c}", "submit"): "on_limits" for c in ("folder", "since", "until", "camera")},
          ("limit-band", "input"): "on_limits", ("limit-apply", "click"): "on_limits",
          ("tab-duplicates", "select"): "refresh_choices", ("dup-find", "click"): "start", (None, "tick"): "poll",
          ("dup-groups", "select"): "on_group", ("dup-members", "select"): "on_member", ("dup-left", "input"): "on_pair",
          ("dup-right", "input"): "on_pair", ("dup-clean", "click"): "on_ask", ("dup-confirm", "click"): "on_clean",
          ("dup-cancel", "click"): "on_cancel", ("dup-undo", "click"): "on_undo",
          (None, "success"): "on_detect", ("objects", "input"): "on_pick", ("search-mode", "input"): "on_mode",
          ("api-objects", "click"): "objects", ("api-search-objects", "click"): "search_objects",
          ("api-search-box", "click"): "search_box"}


def test_build_ui_lays_out_and_wires_every_component(small_collection, embedder, tmp_path):
    config = small_collection[0]
    h = Handlers(SearchService(config, embedder=SpyEmbedder(embedder)), config, work_dir=tmp_path / "q")
    demo = build_ui(h)
    blocks = demo.blocks.values()
    by_elem = {b.elem_id: b for b in blocks if getattr(b, "elem_id", None)}
    assert set(by_elem) == ELEM_IDS
    assert by_elem["collection"].value == "shapes" and by_elem["collection"].label == "Collection"
    assert by_elem["k"].label == "Results (k)" and by_elem["k"].maximum == config.max_k
    assert "24 images in shapes" in by_elem["status"].value
    assert len(by_elem["examples"].value) == 12
    wired = {}
    for dep in demo.fns.values():
        for block_id, event in dep.targets:
            name = getattr(dep.fn, "__name__", None) if dep.fn else None
            wired[(_elem_id(demo, block_id), event)] = name
    assert wired == EVENTS
    # The API: exactly the named endpoints are public; every UI event is hidden from the API page. Without a
    # library root, the Collections tab only lists (no index or change events, no management endpoints).
    public = {dep.api_name for dep in demo.fns.values() if dep.api_visibility == "public"}
    assert public == {"search_file", "search_url", "search_item", "collections", "duplicates", "objects",
                      "search_objects", "search_box"}
    lib = Handlers(SearchService(config, embedder=SpyEmbedder(embedder)), config.with_(library_roots=(tmp_path,)),
                   work_dir=tmp_path / "q2")
    demo2 = build_ui(lib)
    public2 = {dep.api_name for dep in demo2.fns.values() if dep.api_visibility == "public"}
    assert public2 == public | {"index_folder", "count", "add", "delete", "rename", "drop"}
    wired2 = {(_elem_id(demo2, b), ev) for dep in demo2.fns.values() for b, ev in dep.targets}
    assert {("lib-index", "click"), ("lib-cancel", "click"), ("lib-browse", "input"), ("lib-up", "click"),
            ("lib-watch", "input"), ("lib-collection", "change"), ("lib-add-use-folder", "click")} <= wired2
    for change in ("add", "delete", "rename", "drop"):  # each change: its own button (and Enter in its box)
        assert {(f"lib-{change}", "click"), (f"lib-{change}-arg", "submit")} <= wired2


def test_the_query_image_hands_over_the_file_undecoded(tmp_path):
    """The query image is Gradio's image component in the browser, but its value reaches the app as the
    uploaded file's path (or a data: URL's bytes), not decoded by Pillow; defining it writes no .pyi stub."""
    import base64

    from gradio.data_classes import ImageData

    from app.web.components import QueryImageInput

    comp = QueryImageInput(type="filepath")
    assert comp.get_block_name() == "image"
    assert not list((Path(__file__).parents[1] / "app" / "web").glob("*.pyi"))
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    assert comp.preprocess(ImageData(path=str(bad))) == str(bad)  # gr.Image would raise here
    assert comp.preprocess(None) is None
    data = base64.b64encode(b"\x89PNG...").decode()
    assert comp.preprocess(ImageData(url=f"data:image/png;base64,{data}")) == b"\x89PNG..."


def _elem_id(demo: gr.Blocks, block_id: int | None) -> str | None:
    """A trigger's component's elem_id (None for a chained ``.then`` / ``.success``, which has none)."""
    return demo.blocks[block_id].elem_id if block_id is not None else None


def _events(demo: gr.Blocks) -> dict[tuple[str, str], object]:
    return {(_elem_id(demo, b), ev): dep for dep in demo.fns.values() for b, ev in dep.targets}


def _ids(blocks) -> list[int]:
    return [b._id for b in blocks]


def test_search_events_answer_dicts_keyed_by_their_outputs(small_collection, embedder, tmp_path):
    """Every search event's outputs are the components that a View can name, and what it answers is a dict
    keyed by some of them (the rest stay as they are); an event that changes nothing skips every output."""
    config, _, data = small_collection
    h = Handlers(SearchService(config, embedder=SpyEmbedder(embedder)), config, work_dir=tmp_path / "q")
    demo, page = build_page(h)
    out = SearchOutputs(page)
    everything = View(**{name: None for name in View.__dataclass_fields__})
    assert set(_ids(out.keyed(everything))) == set(_ids(out.components))
    assert len(_ids(out.components)) == len(set(_ids(out.components)))
    events = _events(demo)
    search = [dep for dep in demo.fns.values() if dep.concurrency_id == "search"]
    assert len(search) == 17  # 14 searches, the limits, an object picked, the mode
    detect = [dep for dep in demo.fns.values() if dep.concurrency_id == "objects"]
    assert len(detect) == 6  # each new image's query's objects, in a queue of their own: the next search never waits for them
    assert all(dep.concurrency_limit == 1 for dep in detect)
    search += detect
    for dep in search:
        assert _ids(dep.outputs) == _ids(out.components)
    session, outputs = h.collections.initial_session("shapes"), set(_ids(out.components))
    with Image.open(data / "circles" / "img_01.jpg") as im:
        im.convert("RGB").save(tmp_path / "query.png")
    answer = events[("query", "upload")].fn(str(tmp_path / "query.png"), "shapes", 5, session)
    assert isinstance(answer, dict) and set(_ids(answer)) <= outputs
    assert {page.results.gallery, page.results.status, page.session, page.history.gallery} <= set(answer)
    assert page.query.image not in answer  # an upload is already in the query image
    assert len(answer[page.results.gallery].value) == 5 and answer[page.session] is session
    picked = events[("examples", "select")].fn(gr.SelectData(None, {"index": 2, "value": None}), "shapes", 5,
                                                 session)
    assert picked[page.query.image] == session.query.path and picked[page.query.crop_box].visible is False
    closed = events[("crop-close", "click")].fn()
    assert set(closed) == {page.query.crop_src, page.query.crop_box} and closed[page.query.crop_src] == ""
    unchanged = events[("k", "change")].fn(5, "shapes", session)  # the results on screen are for k=5
    assert unchanged == gr.skip()


def test_collections_tab_events_answer_dicts_keyed_by_their_outputs(small_collection, embedder, tmp_path):
    config, _, _ = small_collection
    config = config.with_(library_roots=(tmp_path,))
    (tmp_path / "album" / "2021").mkdir(parents=True)
    h = Handlers(SearchService(config, embedder=SpyEmbedder(embedder)), config, work_dir=tmp_path / "q")
    demo, page = build_page(h)
    events, tab = _events(demo), page.library
    drop = events[("lib-drop", "click")]
    answer = drop.fn("shapes", "not the name")  # unconfirmed: its own message, nothing dropped
    assert set(_ids(answer)) <= set(_ids(drop.outputs))
    assert set(_ids(drop.outputs)) == set(_ids([tab.drop.message, tab.table, tab.collection, page.header.collection,
                                               tab.drop.arg]))
    assert "give its name again" in answer[tab.drop.message] and "shapes" in [row[0] for row in answer[tab.table]]
    assert tab.drop.arg not in answer  # the box keeps what was typed
    cancel = events[("lib-cancel", "click")]
    assert cancel.fn() == {tab.summary: "Nothing is being indexed."} and _ids(cancel.outputs) == [tab.summary._id]
    tick = next(dep for dep in demo.fns.values() if any(ev == "tick" for _, ev in dep.targets)
                and tab.timer._id in _ids(dep.outputs))
    polled = tick.fn()  # no job: the last state, the timer off, the table and menus read again
    assert set(_ids(polled)) == set(_ids(tick.outputs))
    start = events[("lib-index", "click")]
    started = start.fn(str(tmp_path / "nowhere"), "x", "")
    assert set(_ids(started)) == set(_ids(start.outputs)) and "does not exist" in started[tab.summary]
    browse = events[("lib-browse", "input")]
    into = browse.fn(str(tmp_path), "album")
    assert set(_ids(into)) <= set(_ids(browse.outputs)) and into[tab.folder] == str((tmp_path / "album").resolve())
    assert into[tab.browse].choices == [("2021", "2021")]
    up = events[("lib-up", "click")].fn(into[tab.folder])
    assert up[tab.folder] == str(tmp_path.resolve())
    shown = events[("lib-collection", "change")]
    picked = shown.fn("shapes")
    assert set(_ids(picked)) == set(_ids(shown.outputs)) and picked[tab.watch] is False
    assert "shapes" in picked[tab.details] and "not watched" in picked[tab.details]


def test_duplicates_tab_events_answer_dicts_keyed_by_their_outputs(tmp_path):
    """Every event of the Duplicates tab has the components a DupView can name as outputs (each once), and
    answers a dict keyed by some of them; one that changes nothing skips every output."""
    from app.web.duplicates_tab import DupOutputs
    from app.web.duplicates_view import DupView
    from tests.test_duplicates_web import make_handlers

    h, _, planted = make_handlers(tmp_path)
    demo, page = build_page(h)
    tab, out = page.duplicates, DupOutputs(page.duplicates)
    everything = DupView(**{name: None for name in DupView.__dataclass_fields__})
    everything.pair, everything.keep = ([], None, None), ([], None)
    assert set(_ids(out.keyed(everything))) == set(_ids(out.components))
    assert len(_ids(out.components)) == len(set(_ids(out.components)))
    events = _events(demo)
    wired = [dep for key, dep in events.items() if (key[0] or "").startswith("dup-") or key == (None, "tick")]
    assert len(wired) == 10 and all(_ids(dep.outputs) == _ids(out.components) for dep in wired)
    outputs = set(_ids(out.components))
    started = events[("dup-find", "click")].fn("pics", "exact", "default")
    assert set(_ids(started)) <= outputs and started[tab.timer].active is True
    deadline = time.monotonic() + 60
    while h.duplicates.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    polled = events[(None, "tick")].fn()
    assert set(_ids(polled)) <= outputs and polled[tab.timer].active is False
    finding = polled[tab.finding]
    assert [{m.file for m in g.members} for g in finding.groups] == [planted["circles"], planted["stripes"]]
    assert len(polled[tab.groups].value) == 2 and polled[tab.confirm_box].visible is False
    picked = events[("dup-groups", "select")].fn(gr.SelectData(None, {"index": 1, "value": None}), finding)
    assert len(picked[tab.members].value) == 2 and picked[tab.left].value == finding.groups[1].keeper
    asked = events[("dup-clean", "click")].fn(finding.group.keeper, finding)
    assert set(asked) == {tab.confirm_box, tab.confirm_text} and asked[tab.confirm_box].visible is True
    assert events[("dup-members", "select")].fn(gr.SelectData(None, {"index": 9, "value": None}), None,
                                                finding) == gr.skip()
    refreshed = events[("tab-duplicates", "select")].fn()
    assert refreshed[tab.collection].choices == [("pics", "pics")]
