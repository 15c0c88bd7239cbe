"""Objects in the real browser, with the real models: upload a photo with several objects (a scene made from
committed photos: a coffee cup, a laptop, a cat, an astronaut), see their boxes, click one, and the results
are that object's class. The real EfficientNet-Lite0 and the installed NanoDet-m detector
(``python -m app.cli detector install``); without the detector it skips, unless ``RIS_REQUIRE_DETECTOR=1``
(CI) says it must not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from app.config import Config
from app.service.search import SearchService
from tests.fakes import free_port, running_app
from tests.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, WAIT_S, captions, seq, wait_results

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DATA = Path(__file__).parent / "data"
SCENE = ("photo_coffee.png", "cats_and_cups/laptop/image_0001.jpg", "photo_chelsea.jpg", "engine_astronaut.jpg")


def make_scene(out: Path, width: int = 400, gap: int = 16) -> Path:
    """The four committed photos in a 2 x 2 grid on white, each ``width`` px wide."""
    tiles = []
    for name in SCENE:
        with Image.open(DATA / name) as im:
            tiles.append(im.convert("RGB").resize((width, round(im.height * width / im.width))))
    height = max(t.height for t in tiles)
    scene = Image.new("RGB", (2 * width + 3 * gap, 2 * height + 3 * gap), (255, 255, 255))
    for n, tile in enumerate(tiles):
        scene.paste(tile, (gap + (n % 2) * (width + gap), gap + (n // 2) * (height + gap)))
    scene.save(out)
    return out


@pytest.fixture(scope="module")
def objects_app(tmp_path_factory, lite0_embedder):
    from app.core.detect import Detector
    from app.core.detectors import detector_model_path, get_detector
    from app.errors import DetectorUnavailableError
    from app.service.build import BuildSpec, build_collection
    from app.service.objects import build_objects
    from app.web import warm_up

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    user_cache = Config().cache_dir
    try:
        detector_model_path(user_cache, get_detector(None))
    except DetectorUnavailableError as exc:
        if os.environ.get("RIS_REQUIRE_DETECTOR") == "1":
            raise
        pytest.skip(f"the real detector is not installed: {exc.user_message()}")
    base = tmp_path_factory.mktemp("browser-objects")
    config = Config(indexes_dir=base / "indexes", features_dir=base / "features", model="efficientnet-lite0",
                    cache_dir=lite0_embedder.cache_dir, workers=0, port=free_port())
    build_collection(config, BuildSpec(kind="folder", data=DATA / "cats_and_cups", name="cats-and-cups",
                                       factory="Flat"), embedder=lite0_embedder, progress_bar=False)
    detector = Detector(user_cache).load()
    build_objects(config, "cats-and-cups", lite0_embedder, detector)
    service = SearchService(config, embedder=lite0_embedder)
    service.objects.use_detector(detector)
    warm_up(service)
    with running_app(config, service) as url:
        yield url, make_scene(base / "scene.png")


def _labels(page) -> list[str]:
    return [c.split(" · ")[0] for c in captions(page)]


def test_click_an_object_and_the_results_are_its_class(objects_app):
    from playwright.sync_api import sync_playwright

    url, scene = objects_app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.set_default_timeout(WAIT_S * 1000)
        try:
            page.goto(url)
            page.wait_for_selector("#query input[type=file]", state="attached")
            page.locator("#query input[type=file]").set_input_files(str(scene))
            wait_results(page, 0, k=5)
            # The objects follow the results: the query image with their boxes, and a row to pick from.
            page.wait_for_function("""() => {
                const img = document.querySelector('#objects-image img');
                return img && img.complete && img.naturalWidth > 0 && document.querySelectorAll('#objects label').length >= 3;
            }""", timeout=WAIT_S * 1000)
            row = page.locator("#objects label").all_inner_texts()
            assert any(t.startswith("cup") for t in row) and any(t.startswith("cat") for t in row), row
            box = page.locator("#objects-image img").bounding_box()
            assert box and box["width"] > 100  # the drawn boxes are on screen
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "objects.png"), full_page=True)

            before = seq(page)
            page.locator("#objects label", has_text="cup").first.click()
            wait_results(page, before, k=5, status="object: cup")
            labels = _labels(page)
            assert labels[0] == "cup" and labels[:4].count("cup") >= 3, labels

            before = seq(page)
            page.locator("#objects label", has_text="cat").first.click()
            wait_results(page, before, k=5, status="object: cat")
            labels = _labels(page)
            assert labels[0] == "wild_cat" and labels[:4].count("wild_cat") >= 3, labels

            # Objects inside photos: the hits are objects, named "label in file" and drawn on their photos.
            before = seq(page)
            page.get_by_label("objects inside photos").check()
            wait_results(page, before, k=5, status="objects of")
            assert all(" in image_" in c for c in captions(page)), captions(page)
            page.screenshot(path=str(ARTIFACTS / "objects_mode.png"), full_page=True)
        finally:
            browser.close()
