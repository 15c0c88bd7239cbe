"""The programmatic API (app.web.api): gradio_client against the real app, served on 127.0.0.1.

Search by file, by URL and by item id; the structured hits; the collection list; errors as the app's
messages; and only the named endpoints on the API page.
"""

from __future__ import annotations

import urllib.request

import pytest

from app.service.search import SearchService
from tests.fakes import SpyEmbedder, free_port, running_app, serve_directory
from tests.helpers import spy_load_image

pytestmark = pytest.mark.slow

HIT_KEYS = {"rank", "id", "label", "score", "band", "file", "meta", "thumbnail_url"}


@pytest.fixture(scope="module")
def api(small_collection, embedder):
    from gradio_client import Client

    config = small_collection[0].with_(port=free_port(), allow_loopback_urls=True)
    spy = SpyEmbedder(embedder)
    with running_app(config, SearchService(config, embedder=spy)) as url:
        client = Client(url, verbose=False, download_files=False)
        yield client, url, spy, small_collection[2]


def test_only_the_named_endpoints_are_public(api):
    client, *_ = api
    endpoints = client.view_api(print_info=False, return_format="dict")
    assert set(endpoints["named_endpoints"]) == {"/search_file", "/search_url", "/search_item", "/collections",
                                                 "/duplicates", "/objects", "/search_objects",
                                                 "/search_box"}
    assert not endpoints["unnamed_endpoints"]


def test_search_by_file_gives_structured_hits(api):
    from gradio_client import handle_file

    client, url, spy, data = api
    query = data / "circles" / "img_01.jpg"
    calls = spy.calls
    r = client.predict(handle_file(str(query)), "shapes", 4, api_name="/search_file")
    assert r["collection"] == "shapes" and r["model"] == "resnet50" and r["k"] == 4 and spy.calls == calls + 1
    assert r["weights_id"] == spy.weights_id and set(r["timings_ms"]) == {"hash", "decode", "copy", "preprocess", "embed", "search", "total"}
    hits = r["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4] and all(set(h) == HIT_KEYS for h in hits)
    assert hits[0]["file"] == "circles/img_01.jpg" and hits[0]["label"] == "circles"  # itself, relative path
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert all(h["score"] <= hits[0]["score"] for h in hits)  # re-ranked: the copy first, not always sorted
    with urllib.request.urlopen(url.rstrip("/") + hits[0]["thumbnail_url"], timeout=10) as resp:  # noqa: S310
        assert resp.status == 200 and resp.read(3) == b"\xff\xd8\xff"  # a JPEG the app rendered


def test_search_by_item_and_by_url_agree(api):
    client, _, spy, data = api
    by_file = client.predict(__import__("gradio_client").handle_file(str(data / "stripes" / "img_02.png")), "shapes",
                             5, api_name="/search_file")
    item = by_file["hits"][0]["id"]
    calls = spy.calls
    by_item = client.predict("shapes", item, 5, api_name="/search_item")
    assert spy.calls == calls  # stored vector: no model run
    assert [h["id"] for h in by_item["hits"]] == [h["id"] for h in by_file["hits"]]
    with serve_directory(data) as site:
        by_url = client.predict(f"{site}/stripes/img_02.png", "shapes", 5, api_name="/search_url")
    assert [h["id"] for h in by_url["hits"]] == [h["id"] for h in by_file["hits"]]


def test_a_default_client_searches_by_file_url_and_item(api):
    """``Client(url)`` as gradio_client's documentation shows it (``download_files`` on): no answer holds a
    ``{"path": ...}`` that the client would take for a server file and fail to download (403)."""
    from gradio_client import Client, handle_file

    _, url, _, data = api
    client = Client(url, verbose=False)  # the defaults
    by_file = client.predict(handle_file(str(data / "circles" / "img_01.jpg")), "shapes", 3, api_name="/search_file")
    assert by_file["hits"][0]["file"] == "circles/img_01.jpg" and len(by_file["hits"]) == 3
    with serve_directory(data) as site:
        by_url = client.predict(f"{site}/circles/img_01.jpg", "shapes", 3, api_name="/search_url")
    by_item = client.predict("shapes", by_file["hits"][0]["id"], 3, api_name="/search_item")
    assert [h["id"] for h in by_url["hits"]] == [h["id"] for h in by_item["hits"]] == [h["id"] for h in by_file["hits"]]
    assert "path" not in str(by_file) and "path" not in str(by_item)


def test_one_decode_per_new_query_through_the_api(api, monkeypatch):
    from gradio_client import handle_file

    client, _, _, data = api
    calls = spy_load_image(monkeypatch)

    client.predict(handle_file(str(data / "stripes" / "img_02.png")), "shapes", 3, api_name="/search_file")
    # the query's one decode; the hits' thumbnails, made the first time a file is shown, read collection files
    assert len([c for c in calls if not str(c[0]).startswith(str(data))]) == 1, calls


def test_rerank_false_gives_the_raw_neighbours_sorted_by_cosine(api):
    client, *_ = api
    raw = client.predict("shapes", 7, 8, rerank=False, api_name="/search_item")["hits"]
    default = client.predict("shapes", 7, 8, api_name="/search_item")["hits"]
    assert [h["score"] for h in raw] == sorted((h["score"] for h in raw), reverse=True)
    assert raw[0]["id"] == default[0]["id"] == 7
    assert {h["id"]: h["score"] for h in default}.items() <= {  # the same raw cosines, re-ranked order
        h["id"]: h["score"] for h in client.predict("shapes", 7, 20, rerank=False, api_name="/search_item")["hits"]}.items()


def test_collections_lists_count_model_and_status(api):
    client, *_ = api
    cols = {c["name"]: c for c in client.predict(api_name="/collections")}
    assert cols["shapes"]["count"] == 24 and cols["shapes"]["model"] == "resnet50" and cols["shapes"]["status"] == "ready"
    assert cols["caltech101"]["status"] == "not built" and "build_index.py" in cols["caltech101"]["build_command"]


def test_errors_are_the_apps_messages(api, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, *_ = api
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    cases = [
        ((handle_file(str(bad)), "shapes", 5), "/search_file", "not an image"),
        (("shapes", 999, 5), "/search_item", "no item 999"),
        (("nothing", 0, 5), "/search_item", "no collection named nothing"),
        (("http://10.0.0.1/a.jpg", "shapes", 5), "/search_url", "not allowed (private network)"),
    ]
    for args, name, text in cases:
        with pytest.raises(AppError) as exc:
            client.predict(*args, api_name=name)
        assert text in str(exc.value).lower() or text in str(exc.value), (name, str(exc.value))


def test_the_readme_example_script_runs(api):
    """scripts/api_example.py, as the README shows it, against the running app."""
    import subprocess
    import sys

    from app.config import PROJECT_ROOT

    _, url, _, data = api
    out = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "api_example.py"),
                          str(data / "circles" / "img_01.jpg"), "--url", url, "--collection", "shapes", "-k", "3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "collection shapes: 24 images, resnet50, ready" in lines
    assert any(line.strip().startswith("#1 id ") and line.endswith("circles/img_01.jpg") for line in lines)
    assert any(line.startswith("item ") and "no model run" in line for line in lines)
