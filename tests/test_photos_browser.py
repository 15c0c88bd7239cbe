"""Issue 19 in a real browser (Chromium through Playwright, like tests/test_browser.py): a HEIC upload
returns results; in the Collections tab, a folder under the library root is picked without typing,
indexed, then renamed and dropped, each with its own control. Every wait is bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import PROJECT_ROOT, Config
from app.service.search import SearchService
from tests.fakes import free_port, running_app
from tests.helpers import make_image_folder
from tests.test_browser import (  # noqa: F401 - the module's fixtures
    CHROMIUM,
    WAIT_S,
    app_server,
    browser,
    captions,
    click_tab,
    page,
    wait_results,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HEIC = PROJECT_ROOT / "tests" / "data" / "photos" / "blocks.heic"  # scripts/make_test_photos.py


def test_a_heic_upload_returns_results(page, app_server):  # noqa: F811 - the fixtures above
    page.locator("#query input[type=file]").set_input_files(str(HEIC))
    wait_results(page, 0, k=5)
    caps = captions(page)
    assert len(caps) == 5 and all(c.count(" · ") == 3 for c in caps)  # label · band · score · file
    assert "embed" in page.locator("#status").inner_text()
    assert page.locator("#ris-message").inner_text().strip() == ""


@pytest.fixture
def library_app(tmp_path, embedder, model_cache):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    root = tmp_path / "my-photos_2021"
    make_image_folder(root / "trip", classes=("dots", "bars"), per_class=5, seed=8, size=(80, 80))
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", cache_dir=model_cache,
                    weights="untrained", workers=0, port=free_port(), library_roots=(root,))
    with running_app(config, SearchService(config, embedder=embedder)) as url:
        yield url, root


def _wait_text(pg, selector: str, text: str) -> None:
    pg.wait_for_function("([sel, text]) => (document.querySelector(sel)?.innerText || '').includes(text)",
                         arg=[selector, text], timeout=WAIT_S * 1000)


def _pick(pg, dropdown: str, option: str) -> None:
    pg.locator(f"#{dropdown} input").click()
    pg.get_by_role("option", name=option, exact=True).click()


def test_pick_a_folder_index_it_rename_and_drop_it(browser, library_app):  # noqa: F811
    url, root = library_app
    ctx = browser.new_context(viewport={"width": 1400, "height": 1600})
    ctx.set_default_timeout(WAIT_S * 1000)
    pg = ctx.new_page()
    try:
        pg.goto(url)
        pg.wait_for_selector("#query input[type=file]", state="attached")
        click_tab(pg, "Collections")
        assert f"{root.resolve()}" in pg.locator("#lib-roots").inner_text()  # shown literally: no backslash
        folder = pg.locator("#lib-folder textarea, #lib-folder input").first
        assert folder.input_value() == str(root.resolve())
        _pick(pg, "lib-browse", "trip")  # no typing: the folder browser
        pg.wait_for_function("([v]) => [...document.querySelectorAll('#lib-folder textarea, #lib-folder input')]"
                             ".some(e => e.value === v)", arg=[str((root / "trip").resolve())], timeout=WAIT_S * 1000)
        pg.locator("#lib-index").click()
        _wait_text(pg, "#lib-summary", "added 10")
        _wait_text(pg, "#lib-table", "trip")
        _pick(pg, "lib-collection", "trip")
        _wait_text(pg, "#lib-details", "10 images")
        pg.locator("#lib-rename-arg input, #lib-rename-arg textarea").first.fill("holiday")
        pg.locator("#lib-rename").click()
        _wait_text(pg, "#lib-rename-msg", "Renamed trip to holiday")
        _wait_text(pg, "#lib-table", "holiday")
        assert pg.locator("#lib-collection input").input_value() == "holiday"
        pg.locator("#lib-drop-arg input, #lib-drop-arg textarea").first.fill("holiday")
        pg.locator("#lib-drop").click()
        _wait_text(pg, "#lib-drop-msg", "Dropped holiday")
        pg.wait_for_function("!document.querySelector('#lib-table').innerText.includes('holiday')",
                             timeout=WAIT_S * 1000)
        assert pg.locator("#lib-rename-msg").inner_text().startswith("Renamed")  # each control its own message
        assert sorted(p.name for p in (root / "trip" / "dots").iterdir())[:1] == ["img_00.jpg"]  # photos stay
    finally:
        ctx.close()
