"""End-to-end tests: the real app in Debian's Chromium, driven by Playwright (sync API).

A module fixture serves the app from a thread (``app.web.server``: FastAPI + Gradio + uvicorn) on a
free 127.0.0.1 port, over two small generated collections built with untrained weights; a spy
embedder counts model runs. Every wait is bounded. Writes ``test-artifacts/results.png`` and
``test-artifacts/search_timing.json``.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from PIL import Image

from app.config import PROJECT_ROOT, Config
from app.service.search import SearchService
from tests.fakes import SpyEmbedder, free_port, running_app, serve_directory
from tests.helpers import make_image_folder, png_claiming

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
WAIT_S = 30  # the longest any single wait may take


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, embedder, model_cache):
    from app.service.build import BuildSpec, build_collection
    from app.web import warm_up

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    base = tmp_path_factory.mktemp("browser")
    config = Config(data_dir=base / "data", indexes_dir=base / "indexes", features_dir=base / "features",
                    cache_dir=model_cache, weights="untrained", workers=0, port=free_port(),
                    allow_loopback_urls=True)
    make_image_folder(base / "shapes")
    make_image_folder(base / "tiles", classes=("dots", "bars"), per_class=4, seed=5, size=(80, 80))
    for name in ("shapes", "tiles"):
        build_collection(config, BuildSpec(kind="folder", data=base / name, name=name), embedder=embedder, progress_bar=False)
    spy = SpyEmbedder(embedder)
    service = SearchService(config, embedder=spy)
    warm_up(service)
    spy.calls = 0
    with running_app(config, service) as url:
        yield {"url": url, "spy": spy, "base": base, "service": service}


@pytest.fixture(scope="module")
def browser(app_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1300},
                              permissions=["camera", "clipboard-read", "clipboard-write"])
    ctx.set_default_timeout(WAIT_S * 1000)
    pg = ctx.new_page()
    pg.goto(app_server["url"])
    pg.wait_for_selector("#query input[type=file]", state="attached")  # the query image is ready
    pg.wait_for_selector("#examples img")
    yield pg
    ctx.close()


# -- helpers -------------------------------------------------------------------------------------
def seq(page) -> int:
    return int(page.locator("#status .ris-status").get_attribute("data-seq") or 0)


def wait_results(page, after: int, k: int | None = None, status: str = "") -> None:
    """Wait until a search newer than ``after`` is on screen (its status containing ``status``, its
    results in the gallery, their images loaded); on a timeout, save a screenshot and say what is shown."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """([after, k, status]) => {
                const st = document.querySelector('#status .ris-status');
                if (!st || Number(st.dataset.seq) <= after || !st.innerText.includes(status)) return false;
                const imgs = [...document.querySelectorAll('#results .thumbnail-item img')];
                if (!imgs.length || (k !== null && imgs.length !== k)) return false;
                const first = document.querySelector('#results .caption-label');  // this search's results?
                if (!first || first.innerText.trim() !== st.dataset.top) return false;
                return imgs.slice(0, 8).every(i => i.complete && i.naturalWidth > 0);
            }""",
            arg=[after, k, status], timeout=WAIT_S * 1000,
        )
    except PlaywrightTimeout:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
        raise AssertionError(
            f"no new results within {WAIT_S} s; status {page.locator('#status').inner_text()!r}, "
            f"message {page.locator('#ris-message').inner_text()!r} (screenshot: test-artifacts/failure.png)"
        ) from None


def captions(page, which: str = "results") -> list[str]:
    return page.locator(f"#{which} .caption-label").all_inner_texts()


def click_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def settle(spy: SpyEmbedder, seconds: float = 1.0) -> int:
    """The crop editor fires late duplicate events; give them time, then read the model-run count."""
    time.sleep(seconds)
    return spy.calls


# -- tests ---------------------------------------------------------------------------------------
def test_upload_shows_k_results(page, app_server):
    spy, base = app_server["spy"], app_server["base"]
    before_calls = spy.calls
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url.split("/gradio_api/", 1)[-1].split("?")[0])
            if r.method == "POST" else None)
    page.locator("#query input[type=file]").set_input_files(str(base / "shapes" / "circles" / "img_01.jpg"))
    wait_results(page, 0, k=5)
    time.sleep(0.3)
    # one upload, one event: one search; then at most the query's objects (an event chained after it)
    assert sent[:2] == ["upload", "queue/join"] and sent[2:] in ([], ["queue/join"]), sent
    caps = captions(page)
    assert len(caps) == 5 and all(c.count(" · ") == 3 for c in caps)  # label · band · score · file
    assert "embed" in page.locator("#status").inner_text()
    assert "UNTRAINED" in page.locator("#ris-notice").inner_text()
    assert settle(spy) - before_calls == 1  # one model run for one new image


def test_click_example_then_result(page, app_server):
    spy = app_server["spy"]
    calls = spy.calls
    example = page.locator("#examples .thumbnail-item").nth(4)
    label = example.locator(".caption-label").inner_text()
    example.click()
    wait_results(page, 0, k=5)
    assert captions(page)[0].startswith(label.split(" · ")[0])
    assert "stored vector" in page.locator("#status").inner_text()
    # Click a result: it becomes the query and is searched again, in one request and without an upload.
    target = captions(page)[3]
    before = seq(page)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    page.locator("#results .thumbnail-item").nth(3).click()
    wait_results(page, before, k=5)
    assert [u.split("/gradio_api/", 1)[-1].split("?")[0] for u in sent] == ["queue/join"], sent
    name = target.split(" · ")[-1]
    click_tab(page, "History")
    assert name in page.locator("#last-caption").inner_text()
    assert page.locator("#history .thumbnail-item").count() == 2
    # Compare the query with a result, side by side (an image slider).
    page.wait_for_function("document.querySelectorAll('#compare img').length >= 2", timeout=WAIT_S * 1000)
    # Back to the first query through the history.
    before = seq(page)
    page.locator("#history .thumbnail-item").nth(1).click()
    wait_results(page, before, k=5)
    assert label in page.locator("#last-caption").inner_text()
    assert settle(spy) == calls  # collection images never run the model


def test_paste_image_url(page, app_server):
    spy, base = app_server["spy"], app_server["base"]
    calls = spy.calls
    with serve_directory(base / "shapes") as site:
        page.locator("#url input, #url textarea").first.fill(f"{site}/stripes/img_02.png")
        page.locator("#url input, #url textarea").first.press("Enter")
        wait_results(page, 0, k=5)
    assert captions(page)[0].startswith("stripes")
    assert settle(spy) - calls == 1


def test_non_image_gives_a_readable_error(page, app_server, tmp_path):
    (tmp_path / "notes.txt").write_text("definitely not an image")
    with serve_directory(tmp_path) as site:
        page.locator("#url input, #url textarea").first.fill(f"{site}/notes.txt")
        page.locator("#fetch").click()
        page.wait_for_function("document.querySelector('#ris-message').innerText.includes('not an image')",
                               timeout=WAIT_S * 1000)
    # A non-image dropped into the query image: the browser cannot open it, and the page says so.
    page.locator("#query input[type=file]").set_input_files(str(tmp_path / "notes.txt"))
    page.wait_for_selector("#ris-client-error:not([hidden])")
    assert "not an image" in page.locator("#ris-client-error").inner_text()
    assert "Traceback" not in page.content()


def test_bad_uploads_get_the_apps_own_message(page, app_server, tmp_path):
    """Uploads reach the app's loader undecoded: a decompression bomb (a PNG claiming 30000x30000 pixels in
    a few bytes) and a non-image named .png get its clear message, and the model never runs."""
    spy = app_server["spy"]
    calls = spy.calls
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(30_000, 30_000))
    fake = tmp_path / "report.png"
    fake.write_bytes(b"Meeting notes, not an image at all.\n" * 20)
    for path, reason in ((bomb, "too large"), (fake, "not an image")):
        page.locator("#query input[type=file]").set_input_files(str(path))
        page.wait_for_function("r => document.querySelector('#ris-message').innerText.includes(r)", arg=reason,
                               timeout=WAIT_S * 1000)
        assert "Traceback" not in page.content()
    assert settle(spy, 0.5) == calls


def test_webcam_photo(page, app_server):
    spy = app_server["spy"]
    calls = spy.calls
    page.locator('#query button[aria-label="Capture from camera"]').click()
    page.get_by_text("Click to Access Webcam").click()
    # The capture button does nothing until the (fake) camera's video is playing.
    page.wait_for_function("(document.querySelector('#query video') || {}).videoWidth > 0",
                           timeout=WAIT_S * 1000)
    page.locator('#query button[aria-label="capture photo"]').click()
    wait_results(page, 0, k=5)
    assert "embed" in page.locator("#status").inner_text()
    assert settle(spy) - calls == 1


def test_paste_from_clipboard(page, app_server):
    page.evaluate("""async () => {
        const c = document.createElement('canvas'); c.width = 120; c.height = 90;
        const x = c.getContext('2d'); x.fillStyle = '#c03030'; x.fillRect(0, 0, 120, 90);
        x.fillStyle = '#ffffff'; x.beginPath(); x.arc(60, 45, 25, 0, 7); x.fill();
        const blob = await new Promise(r => c.toBlob(r, 'image/png'));
        await navigator.clipboard.write([new ClipboardItem({'image/png': blob})]);
    }""")
    page.locator('#query button[aria-label="Paste from clipboard"]').click()
    wait_results(page, 0, k=5)


def _crop_frame(page) -> tuple[float, float, float, float]:
    """The crop frame on screen (x, y, w, h): the bounding box of its black corner handles."""
    canvas = page.locator("#crop-editor .pixi-target-crop canvas")
    box = canvas.bounding_box()
    img = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
    px = img.load()
    dark = [(x, y) for y in range(0, img.height, 2) for x in range(0, img.width, 2) if sum(px[x, y]) < 40]
    assert dark, "no crop handles found"
    xs, ys = [p[0] for p in dark], [p[1] for p in dark]
    sx, sy = box["width"] / img.width, box["height"] / img.height
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    return box["x"] + x0 * sx, box["y"] + y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy


def test_crop_then_search(page, app_server):
    spy = app_server["spy"]
    page.locator("#examples .thumbnail-item").nth(1).click()
    wait_results(page, 0, k=5)
    calls = spy.calls
    before = seq(page)
    page.locator("#crop").click()  # the crop editor opens on the query image
    page.wait_for_selector("#crop-editor .pixi-target canvas", state="attached")
    page.locator('#crop-editor button[aria-label="Image"]').click()
    page.locator('#crop-editor button[aria-label="Crop"]').click()
    page.get_by_text("Confirm crop").wait_for()
    x, y, w, h = _crop_frame(page)
    page.mouse.move(x + 5, y + 5)
    page.mouse.down()
    page.mouse.move(x + w * 0.45, y + h * 0.4, steps=8)
    page.mouse.up()
    page.get_by_text("Confirm crop").click()
    wait_results(page, before, k=5)
    click_tab(page, "History")
    assert "Cropped image" in page.locator("#last-caption").inner_text()
    assert settle(spy) - calls == 1  # the cropped image is new: one model run
    # The query image shows what was searched (the crop), and the crop editor has closed.
    name = lambda sel: page.locator(sel).get_attribute("src").split("#")[0].rsplit("/", 1)[-1]  # noqa: E731
    page.wait_for_selector("#last img")
    assert name("#query img") == name("#last img")
    assert page.locator("#crop-editor").count() == 0 or not page.locator("#crop-editor").is_visible()


def test_change_k_and_switch_collection(page, app_server):
    spy = app_server["spy"]
    calls = spy.calls
    page.locator("#examples .thumbnail-item").nth(0).click()
    wait_results(page, 0, k=5)
    before = seq(page)
    number = page.locator("#k input[type=number]")
    number.fill("8")
    number.press("Enter")
    wait_results(page, before, k=8)
    before = seq(page)
    page.locator("#collection input").click()
    page.get_by_role("option", name="tiles · 8 images").click()
    wait_results(page, before, k=8, status="in tiles")
    page.wait_for_function("document.querySelectorAll('#examples .thumbnail-item').length === 8",
                           timeout=WAIT_S * 1000)
    assert all(c.split(" · ")[0] in ("dots", "bars") for c in captions(page))
    assert settle(spy) == calls  # the example's stored vector was searched in the other collection


def test_theme_follows_the_browser(page, browser, app_server):
    assert page.evaluate("document.body.classList.contains('dark')") is False  # light preference
    ctx = browser.new_context(color_scheme="dark")
    try:
        dark = ctx.new_page()
        dark.goto(app_server["url"])
        dark.wait_for_selector("#query")
        assert dark.evaluate("document.body.classList.contains('dark')") is True
    finally:
        ctx.close()


def test_search_timing_and_screenshot(page, app_server):
    """Click Search -> results rendered, with a model run and with the remembered vector."""
    base, service = app_server["base"], app_server["service"]
    page.locator("#query input[type=file]").set_input_files(str(base / "shapes" / "squares" / "img_04.jpg"))
    t_upload = time.perf_counter()
    wait_results(page, 0, k=5)
    upload_ms = (time.perf_counter() - t_upload) * 1000
    time.sleep(1.0)  # let the crop editor's late duplicate events pass
    timings = {}
    for kind in ("model_run", "remembered_vector"):
        if kind == "model_run":
            service.forget_query_vectors()  # Search must run the model
        before = seq(page)
        t0 = time.perf_counter()
        page.locator("#search").click()
        wait_results(page, before, k=5)
        timings[kind] = round((time.perf_counter() - t0) * 1000, 1)
        timings[f"{kind}_server_status"] = page.locator("#status").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.mouse.move(5, 5)  # no hover effect in the picture
    time.sleep(0.3)
    page.screenshot(path=str(ARTIFACTS / "results.png"), full_page=True)
    report = {
        "search_click_to_render_ms": timings["model_run"],
        "search_click_to_render_remembered_vector_ms": timings["remembered_vector"],
        "upload_to_render_ms": round(upload_ms, 1),
        "server_status_model_run": timings["model_run_server_status"],
        "server_status_remembered_vector": timings["remembered_vector_server_status"],
        "k": 5, "collection_size": 24, "weights": "untrained", "browser": "chromium headless",
    }
    (ARTIFACTS / "search_timing.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nSearch click -> results rendered: {timings['model_run']} ms with a model run, "
          f"{timings['remembered_vector']} ms with the remembered vector; upload -> results {upload_ms:.0f} ms")
    assert (ARTIFACTS / "results.png").stat().st_size > 10_000


# -- the Collections tab: index a folder of one's own, then search it ------------------------------------
@pytest.fixture
def library_app(tmp_path, embedder, model_cache):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    root = tmp_path / "library"
    make_image_folder(root / "trip", classes=("dots", "bars"), per_class=5, seed=8, size=(80, 80))
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", cache_dir=model_cache,
                    weights="untrained", workers=0, port=free_port(), library_roots=(root,))
    with running_app(config, SearchService(config, embedder=embedder)) as url:
        yield url, root


def test_index_a_folder_from_the_collections_tab_then_search_it(browser, library_app):
    url, root = library_app
    ctx = browser.new_context(viewport={"width": 1400, "height": 1300})
    ctx.set_default_timeout(WAIT_S * 1000)
    page = ctx.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("#query input[type=file]", state="attached")
        click_tab(page, "Collections")
        page.locator("#lib-folder textarea, #lib-folder input").first.fill(str(root / "trip"))
        page.locator("#lib-name textarea, #lib-name input").first.fill("trip")
        page.locator("#lib-index").click()
        page.wait_for_function("document.querySelector('#lib-summary').innerText.includes('added 10')",
                               timeout=WAIT_S * 1000)
        assert "trip" in page.locator("#lib-table").inner_text()
        page.locator("#collection input").click()
        page.get_by_role("option", name="trip · 10 images · resnet50").click()
        page.locator("#query input[type=file]").set_input_files(str(root / "trip" / "dots" / "img_01.jpg"))
        wait_results(page, 0, k=5, status="in trip")
        assert all(c.split(" · ")[0] in ("dots", "bars") for c in captions(page))
    finally:
        ctx.close()
