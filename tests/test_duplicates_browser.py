"""Issue 18 in a real browser (Debian's Chromium, Playwright): open the Duplicates tab on a folder with planted
copies, compare a pair, keep one, and see the others in the trash folder and gone from search; undo brings them
back. The folder is generated (seeded) with exact copies planted, which the exact tier finds without real
weights; the app searches with the untrained ResNet-50. Every wait is bounded. Writes
``test-artifacts/duplicates.png``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import Config
from app.service.dedup_trash import TRASH
from app.service.search import SearchService
from tests.fakes import free_port, running_app
from tests.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, WAIT_S, captions, click_tab, seq, wait_results
from tests.test_duplicates_web import plant_copies

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def dup_app(tmp_path, embedder, model_cache):
    from app.service.build import BuildSpec, build_collection

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    root = tmp_path / "library"
    planted = plant_copies(root / "pics")
    config = Config(indexes_dir=tmp_path / "indexes", features_dir=tmp_path / "features", cache_dir=model_cache,
                    weights="untrained", workers=0, port=free_port(), library_roots=(root,))
    build_collection(config, BuildSpec(kind="folder", data=root / "pics", name="pics"), embedder=embedder,
                     progress_bar=False)
    with running_app(config, SearchService(config, embedder=embedder)) as url:
        yield url, root / "pics", planted


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s) || {innerText: ''}).innerText.includes(t)",
                           arg=[selector, text], timeout=WAIT_S * 1000)


def names_found(page) -> set[str]:
    """The results on screen, as label/file name (the stored paths of this folder collection)."""
    return {f"{c.split(' · ')[0]}/{c.split(' · ')[-1]}" for c in captions(page)}


def search_again(page) -> set[str]:
    before = seq(page)
    page.locator("#search").click()
    wait_results(page, before, k=5)
    return names_found(page)


def test_find_compare_keep_one_then_undo(chromium, dup_app):
    url, folder, planted = dup_app
    group = planted["circles"]  # stored paths: circles/img_00.jpg, its byte copy and a PNG of its pixels
    keep, moved = "circles/img_00 copy.jpg", group - {"circles/img_00 copy.jpg"}
    ctx = chromium.new_context(viewport={"width": 1400, "height": 1500})
    ctx.set_default_timeout(WAIT_S * 1000)
    page = ctx.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("#query input[type=file]", state="attached")
        # the copies are found by search before the clean-up
        page.locator("#query input[type=file]").set_input_files(str(folder / keep))
        wait_results(page, 0, k=5)
        assert group <= names_found(page)
        # the Duplicates tab: find the exact copies
        click_tab(page, "Duplicates")
        page.locator("#dup-tier label").filter(has_text=re.compile(r"^\s*exact\s*$")).click()
        page.locator("#dup-find").click()
        page.wait_for_function("document.querySelectorAll('#dup-groups .thumbnail-item').length === 2",
                               timeout=WAIT_S * 1000)
        wait_text(page, "#dup-status", "2 groups (5 photos)")
        page.locator("#dup-groups .thumbnail-item").nth(0).click()
        page.wait_for_function("document.querySelectorAll('#dup-members .thumbnail-item').length === 3",
                               timeout=WAIT_S * 1000)
        member_caps = page.locator("#dup-members .caption-label").all_inner_texts()
        assert sum(c.startswith("★ keep") for c in member_caps) == 1
        # compare a pair: the clicked photo on the right, both photos' size, date and file size beside them
        clicked = next(i for i, c in enumerate(member_caps) if not c.startswith("★") and "again" in c)
        page.locator("#dup-members .thumbnail-item").nth(clicked).click()
        wait_text(page, "#dup-facts", "img_00 again.png")
        page.wait_for_function("document.querySelectorAll('#dup-compare img').length >= 2", timeout=WAIT_S * 1000)
        facts = page.locator("#dup-facts").inner_text()
        assert "96 × 72 px" in facts and "file size" in facts and "date (modified)" in facts
        # keep one (not the suggested keeper), confirm, and the others go to the trash
        page.locator("#dup-keep input").click()
        page.get_by_role("option", name=re.compile(re.escape(Path(keep).name))).click()
        page.locator("#dup-clean").click()
        wait_text(page, "#dup-confirm-text", "move 2 other photos")
        assert all((folder / f).exists() for f in group)  # nothing moves before the confirmation
        page.locator("#dup-confirm").click()
        wait_text(page, "#dup-status", "Moved 2 photos")
        assert f"{TRASH}/pics" in page.locator("#dup-status").inner_text()
        trash = folder / TRASH / "pics"
        assert {p.relative_to(trash).as_posix() for p in trash.rglob("*.*") if p.name != "manifest.json"} == moved
        assert not any((folder / f).exists() for f in moved) and (folder / keep).is_file()
        page.wait_for_function("document.querySelectorAll('#dup-groups .thumbnail-item').length === 1",
                               timeout=WAIT_S * 1000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "duplicates.png"), full_page=True)
        # gone from search
        assert not moved & search_again(page)
        # undo brings them back: on disk, in the collection, in search
        click_tab(page, "Duplicates")
        page.locator("#dup-undo").click()
        wait_text(page, "#dup-status", "Restored 2 photos")
        assert all((folder / f).is_file() for f in group)
        assert group <= search_again(page)
        assert "Traceback" not in page.content()
    finally:
        ctx.close()
