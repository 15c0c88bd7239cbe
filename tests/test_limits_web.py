"""Limits and bands in the page and the API (issue 19): the query panel's "Limit to" filter reaches the
service as ``where=`` through QueryRunner and stays with the session's later searches; result captions
show the band beside the raw score; the status line says "N of M matching"; the search endpoints take
optional folder / since / until / camera / min_band parameters after their old ones."""

from __future__ import annotations

import re

import pytest

from app.config import Config
from app.service.filters import BAND_NAMES, band
from app.service.library import index_folder
from app.service.search import SearchService
from app.web.handlers import Handlers
from app.web.limits import ANY_BAND
from app.web.view import SKIP
from tests.fakes import FakeEmbedder, free_port, running_app
from tests.test_photo_filters import library


@pytest.fixture
def mine(tmp_path):
    root = tmp_path / "photos"
    library(root)  # 36 photos: 30 at home, 6 on trips (2 on an iPhone)
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", cache_dir=tmp_path / "c",
                    workers=0)
    index_folder(config, "mine", root, embedder=FakeEmbedder())
    return config, root


def test_limits_reach_the_search_and_stay_with_the_session(mine, tmp_path):
    config, root = mine
    h = Handlers(SearchService(config, embedder=FakeEmbedder()), config, work_dir=tmp_path / "q")
    s = h.collections.initial_session("mine")
    view = h.queries.on_upload(str(root / "home" / "h00.jpg"), "mine", 5, s)
    assert "<b>5</b> of 36 images" in view.status and "matching" not in view.status
    for (_, cap), hit in zip(view.results, s.results, strict=True):  # label · band · score · file
        label, shown_band, score, name = cap.split(" · ")
        assert shown_band == band(hit.score) == hit.band and score == f"{hit.score:.3f}" and shown_band in BAND_NAMES
    view = h.limits.on_limits("trips", "", "", "", ANY_BAND, "mine", 5, s)
    assert "<b>5</b> of 6 matching (36 images) in <b>mine</b>" in view.status
    assert all(hit.path.startswith("trips/") for hit in s.results) and "Limited to: in trips" in view.message
    view = h.session.on_k(3, "mine", s)  # a new k keeps the limits
    assert "<b>3</b> of 6 matching" in view.status and all(hit.path.startswith("trips/") for hit in s.results)
    view = h.limits.on_limits("", "2021-01-01", "", "iphone", ANY_BAND, "mine", 5, s)
    assert "of 2 matching" in view.status and sorted(h.path for h in s.results) == ["trips/t0.jpg", "trips/t1.jpg"]
    view = h.limits.on_limits("", "", "", "", "same photo", "mine", 5, s)
    assert "same photo or closer" in view.status and s.results and all(hit.score >= 0.95 for hit in s.results)
    none = h.limits.on_limits("nowhere", "", "", "", ANY_BAND, "mine", 5, s)
    assert none.results == [] and "of 0 matching" in none.status and "No image passes the limits" in none.message
    before = s.where
    bad = h.limits.on_limits("", "2021-13-01", "", "", ANY_BAND, "mine", 5, s)
    assert "Taken since: '2021\\-13\\-01' is not a date" in bad.message and "YYYY\\-MM\\-DD" in bad.message
    assert bad.results is SKIP and s.where is before  # nothing changed
    later = h.limits.on_limits("", "2021-02-01", "2021-01-01", "", ANY_BAND, "mine", 5, s)
    assert "is after" in later.message and s.where is before
    h.limits.on_limits("", "", "", "", ANY_BAND, "mine", 5, s)
    assert s.where is None and "36 images" in h.session.on_k(4, "mine", s).status


def test_limits_before_any_search_are_kept_for_the_first(mine, tmp_path):
    config, root = mine
    h = Handlers(SearchService(config, embedder=FakeEmbedder()), config, work_dir=tmp_path / "q")
    s = h.collections.initial_session("mine")
    view = h.limits.on_limits("", "", "2018-12-31", "", ANY_BAND, "mine", 5, s)
    assert view.message == "Limited to: taken until 2018-12-31" and view.results is SKIP
    view = h.queries.on_example(0, "mine", 5, s)
    assert "of 3 matching" in view.status and sorted(h.path for h in s.results) == [f"trips/old{i}.jpg" for i in range(3)]


@pytest.mark.slow
def test_search_endpoints_take_optional_limits(mine):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError as ClientError

    config, root = mine
    config = config.with_(port=free_port())
    with running_app(config, SearchService(config, embedder=FakeEmbedder())) as url:
        client = Client(url, verbose=False)  # the default client: download_files on
        query = handle_file(str(root / "home" / "h00.jpg"))
        old = client.predict(query, "mine", 5, api_name="/search_file")  # the old call still works
        assert len(old["hits"]) == 5 and "filter" not in old and "matching" not in old
        first = old["hits"][0]
        assert first["band"] == band(first["score"]) and first["file"].startswith("home/") and "path" not in first
        assert re.match(r"2019-03-01", first["meta"]["taken"]) and first["meta"]["camera"].endswith("EOS R5")
        trips = client.predict(query, "mine", 5, "trips", "", "", "", "", api_name="/search_file")
        assert trips["matching"] == 6 and trips["filter"]["folder"] == "trips"
        assert len(trips["hits"]) == 5 and all(h["file"].startswith("trips/") for h in trips["hits"])
        item = client.predict("mine", first["id"], 5, camera="iphone", api_name="/search_item")
        assert sorted(h["file"] for h in item["hits"]) == ["trips/t0.jpg", "trips/t1.jpg"] and item["matching"] == 2
        same = client.predict("mine", first["id"], 5, min_band="same photo", api_name="/search_item")
        assert same["hits"] and all(h["band"] == "same photo" for h in same["hits"])
        assert client.predict("mine", first["id"], 3, api_name="/search_item")["k"] == 3
        with pytest.raises(ClientError, match="Unknown band"):
            client.predict("mine", 0, 5, min_band="great", api_name="/search_item")
        with pytest.raises(ClientError, match="YYYY-MM-DD"):
            client.predict(query, "mine", 5, "", "yesterday", api_name="/search_file")
