"""The real model in the real browser: upload a cat photo into a small collection of wild cats and
other things (cups, cameras, laptops, chairs, butterflies) and the top result is a cat."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import Config
from app.service.search import SearchService
from tests.fakes import free_port, running_app
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_S, captions, wait_results

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def real_app(tmp_path_factory, lite0_embedder):
    from app.service.build import BuildSpec, build_collection
    from app.web import warm_up

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    base = tmp_path_factory.mktemp("browser-real")
    config = Config(indexes_dir=base / "indexes", features_dir=base / "features", model="efficientnet-lite0",
                    cache_dir=lite0_embedder.cache_dir, workers=0, port=free_port())
    build_collection(config, BuildSpec(kind="folder", data=DATA / "cats_and_cups", name="cats-and-cups", factory="Flat"), embedder=lite0_embedder, progress_bar=False)
    service = SearchService(config, embedder=lite0_embedder)
    warm_up(service)
    with running_app(config, service) as url:
        yield url


def test_uploaded_cat_finds_a_cat(real_app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.set_default_timeout(WAIT_S * 1000)
            page.goto(real_app)
            page.wait_for_selector("#query input[type=file]", state="attached")
            # the collection menu says which model the collection was built with
            assert "efficientnet-lite0" in page.locator("#collection input").input_value()
            assert "UNTRAINED" not in page.locator("body").inner_text()
            page.locator("#query input[type=file]").set_input_files(str(DATA / "photo_chelsea.jpg"))
            wait_results(page, 0, k=5)
            labels = [c.split(" · ")[0] for c in captions(page)]
            assert labels[0] == "wild_cat", labels
            assert labels[:4].count("wild_cat") >= 3, labels  # 4 wild cats among 20 images
        finally:
            browser.close()
