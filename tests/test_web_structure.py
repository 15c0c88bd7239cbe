"""The web layer's structure: what app/web may import, small functions and modules, and the page that
``build_ui`` lays out (components, labels and events), checked without a browser."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT
from app.service.search import SearchService
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


# Every component the page has, by elem_id, and the events each one triggers.
ELEM_IDS = {"editor-src", "ris-header-row", "ris-header", "collection", "ris-notice", "ris-setup", "query",
            "crop", "crop-box", "crop-editor", "crop-close", "url", "fetch", "k", "search", "ris-message", "results", "status", "compare-box", "compare-pick",
            "compare", "tab-examples", "examples", "more-examples", "tab-history", "last", "last-caption",
            "last-to-query", "query-to-last", "history", "api-search-file", "tab-collections", "lib-table",
            "lib-roots", "lib-folder", "lib-name", "lib-model", "lib-index", "lib-cancel", "lib-progress", "lib-summary",
            "lib-collection", "lib-action", "lib-arg", "lib-apply"}
EVENTS = {("query", "upload"): "on_upload", ("crop", "click"): "on_crop_open",
          ("crop-close", "click"): "on_crop_close", ("crop-editor", "change"): "on_crop",
          ("crop-editor", "apply"): "on_crop", ("editor-src", "change"): None, ("search", "click"): "on_search",
          ("query-to-last", "click"): "on_search", ("url", "submit"): "on_url", ("fetch", "click"): "on_url",
          ("k", "release"): "on_k", ("k", "change"): "on_k", ("collection", "change"): "on_collection",
          ("more-examples", "click"): "on_more_examples", ("examples", "select"): "on_example",
          ("results", "select"): "on_result", ("history", "select"): "on_history",
          ("compare-pick", "input"): "on_compare", ("last-to-query", "click"): "on_use_last",
          ("api-search-file", "click"): "search_file"}


def test_build_ui_lays_out_and_wires_every_component(small_collection, embedder, tmp_path):
    from app.web.handlers import Handlers
    from app.web.layout import build_ui

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
            wired[(demo.blocks[block_id].elem_id, event)] = name
    assert wired == EVENTS
    # The API: exactly the named endpoints are public; every UI event is hidden from the API page. Without a
    # library root, the Collections tab only lists (no index or change events, no management endpoints).
    public = {dep.api_name for dep in demo.fns.values() if dep.api_visibility == "public"}
    assert public == {"search_file", "search_url", "search_item", "collections"}
    lib = Handlers(SearchService(config, embedder=SpyEmbedder(embedder)), config.with_(library_roots=(tmp_path,)),
                   work_dir=tmp_path / "q2")
    demo2 = build_ui(lib)
    public2 = {dep.api_name for dep in demo2.fns.values() if dep.api_visibility == "public"}
    assert public2 == public | {"index_folder", "count", "add", "delete", "rename", "drop"}
    wired2 = {(demo2.blocks[b].elem_id, ev) for dep in demo2.fns.values() for b, ev in dep.targets}
    assert {("lib-index", "click"), ("lib-cancel", "click"), ("lib-apply", "click")} <= wired2


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
