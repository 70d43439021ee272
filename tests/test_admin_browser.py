"""The coverage page in a real browser: log in, read the numbers, embed from the list, see
coverage move. Headless Chromium from Debian's packages, driven by Playwright."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from embeddings.models import BackfillRun, Clip
from tests.support.assertions import assert_every_live_clip_right
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.support.clips import make_clips
from tests.support.commands import backfill, embed

pytestmark = pytest.mark.django_db(transaction=True)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def test_an_operator_embeds_clips_from_the_list_and_sees_coverage_rise(
    live_server, embedding_config, django_user_model, settings
):
    require_browser()
    # live_server answers /static/ from the finders, which know no hashed manifest names: plain
    # storage here. tests/test_serve_browser.py checks the real server's static files.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    from playwright.sync_api import expect, sync_playwright

    embedding_config()
    django_user_model.objects.create_superuser("operator", password="a-long-password")
    clips = make_clips(12, removed_every=6)  # 10 live, 2 removed
    live = [c.pk for c in clips if not c.is_removed]
    now = timezone.now()
    Clip.objects.update(created_at=now - timedelta(days=12))
    embed(live[:6])
    for days_ago, pks in ((9, live[:2]), (5, live[2:5])):  # a history for the chart
        Clip.objects.filter(pk__in=pks).update(embedding_generated_at=now - timedelta(days_ago))
    ARTIFACTS.mkdir(exist_ok=True)

    # No database access from here until the browser is closed: Playwright's sync API runs an
    # event loop in this thread, and Django refuses synchronous queries beside one.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(f"{live_server.url}/admin/embeddings/clip/coverage/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", "a-long-password")
            page.click("input[type=submit]")

            expect(page).to_have_url(f"{live_server.url}/admin/embeddings/clip/coverage/")
            expect(page.locator("#coverage-percent")).to_have_text("60.0%")
            expect(page.locator("#coverage-live")).to_have_text("10")
            expect(page.locator("#coverage-never")).to_have_text("4")
            expect(page.locator("svg#coverage-chart")).to_be_visible()
            expect(page.locator("svg#coverage-chart rect.bar")).to_have_count(30)
            page.screenshot(path=str(ARTIFACTS / "coverage-before.png"), full_page=True)

            page.click("#coverage-never")  # the list of live clips never embedded
            rows = page.locator("#result_list tbody tr")
            expect(rows).to_have_count(4)
            page.check("#action-toggle")
            page.select_option("select[name=action]", "embed_selected")
            page.screenshot(path=str(ARTIFACTS / "changelist.png"), full_page=True)
            page.click("button[name=index]")
            expect(page.locator(".messagelist .success")).to_contain_text("Embedded 4 of 4 clips")

            page.click("text=Embedding coverage")
            expect(page.locator("#coverage-percent")).to_have_text("100.0%")
            expect(page.locator("#coverage-never")).to_have_text("0")
            page.screenshot(path=str(ARTIFACTS / "coverage.png"), full_page=True)
        finally:
            browser.close()

    assert Clip.objects.live().filter(embedding__isnull=True).count() == 0
    assert_every_live_clip_right()
    assert (ARTIFACTS / "coverage.png").stat().st_size > 10_000


# --- layout at 1,400 px ----------------------------------------------------------------------

WIDE = {"width": 1400, "height": 900}
LONG_TITLE = "Insane 1v5 clutch on the last round of overtime that nobody in chat saw coming " * 2

# What the results table's box and each cell measure, in the page.
MEASURE_LIST = """() => {
  const box = document.querySelector('#changelist-form .results');
  const rows = [...document.querySelectorAll('#result_list tbody tr')];
  const cells = (name) => [...document.querySelectorAll(`#result_list tbody .field-${name}`)];
  const headers = [...document.querySelectorAll('#result_list thead th')];
  const cut = (cell) => cell.scrollWidth > cell.clientWidth;
  return {
    overflow: box.scrollWidth - box.clientWidth,
    pageOverflow: document.documentElement.scrollWidth - window.innerWidth,
    headersInside: headers.every(
      (th) => th.getBoundingClientRect().right <= box.getBoundingClientRect().right + 0.5),
    rowHeights: [...new Set(rows.map((row) => Math.round(row.getBoundingClientRect().height)))],
    titleLines: cells('clip_title').map((td) => new Set(
      [...td.querySelector('span').getClientRects()].map((r) => Math.round(r.top))).size),
    titlesCut: cells('clip_title').filter(cut).map((td) => td.querySelector('span').title),
    titleWidth: Math.round(cells('clip_title')[0].getBoundingClientRect().width),
    ellipsis: getComputedStyle(cells('clip_title')[0]).textOverflow,
    statesCut: cells('embedding_status').filter(cut).length,
    idsCut: cells('clip_id').filter(cut).length,
  };
}"""


def _plain_static_files(settings) -> None:
    # live_server answers /static/ from the finders, which know no hashed manifest names.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def _log_in(page, live_server, path: str) -> None:
    page.goto(f"{live_server.url}{path}")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "a-long-password")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}{path}")


def test_the_clip_list_fits_1400_px_with_one_line_a_clip(
    live_server, embedding_config, django_user_model, settings
):
    require_browser()
    _plain_static_files(settings)
    from playwright.sync_api import sync_playwright

    embedding_config()
    django_user_model.objects.create_superuser("operator", password="a-long-password")
    clips = make_clips(40)
    Clip.objects.filter(pk=clips[0].pk).update(
        title=LONG_TITLE,
        broadcaster_name="an_extremely_long_broadcaster_name_2026",
        game_name="Tom Clancy's Rainbow Six Siege X: Operation Long Name",
    )
    Clip.objects.filter(pk=clips[1].pk).update(title="Short")
    embed([c.pk for c in clips[:20]])  # current; the rest "not embedded", the widest state
    Clip.objects.filter(pk=clips[2].pk).update(title="Edited after embedding, now stale")
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=WIDE)
            page.set_default_timeout(30_000)
            _log_in(page, live_server, "/admin/embeddings/clip/")
            page.screenshot(path=str(ARTIFACTS / "clip-list-1400.png"))
            measured = page.evaluate(MEASURE_LIST)
            # Sorted by title: the long one's row is measured against the others too.
            page.goto(f"{live_server.url}/admin/embeddings/clip/?o=2")
            sorted_by_title = page.evaluate(MEASURE_LIST)
        finally:
            browser.close()

    for m in (measured, sorted_by_title):
        assert m["overflow"] <= 0 and m["pageOverflow"] <= 0, m  # no sideways scrolling
        assert m["headersInside"], m  # every column in view, the model's included
        assert len(m["rowHeights"]) == 1, m  # one line a clip
        assert set(m["titleLines"]) == {1}, m
        assert m["titleWidth"] >= 200, m  # the title has the room the others leave
        assert m["ellipsis"] == "ellipsis"
        assert m["statesCut"] == 0 and m["idsCut"] == 0, m
    assert LONG_TITLE in measured["titlesCut"]  # cut with an ellipsis, whole in its tooltip
    assert len(measured["rowHeights"]) == 1 and len(measured["titleLines"]) == 40


def test_a_run_page_and_the_run_list_read_as_a_report_at_1400_px(
    live_server, embedding_config, django_user_model, settings, unique_prefix
):
    require_browser()
    _plain_static_files(settings)
    from playwright.sync_api import expect, sync_playwright

    model = f"text-embedding-3-small-{unique_prefix}"  # no list price
    embedding_config(EMBEDDING_MODEL=model, EMBEDDING_SEND_DIMENSIONS="true")
    django_user_model.objects.create_superuser("operator", password="a-long-password")
    make_clips(130)
    output = backfill("--force", "--batch", "50", "--limit", "100")
    assert "Cost: unknown for this model" in output
    run = BackfillRun.objects.get()
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=WIDE)
            page.set_default_timeout(30_000)
            _log_in(page, live_server, f"/admin/embeddings/backfillrun/{run.pk}/change/")

            def value(label: str):
                return page.locator(
                    f"xpath=//label[normalize-space()='{label}:']/following-sibling::div"
                )

            expect(value("Options")).to_have_text("--force --batch 50 --limit 100")
            expect(value("Duration")).to_have_text(re.compile(r"^(\d+ ms|\d+\.\d\d s) \(\d+"))
            expect(value("Cost")).to_have_text("unknown for this model")
            expect(value("Model")).to_have_text(f"{model} at 768 dimensions")
            expect(value("Processed")).to_have_text("100")
            page_overflow = page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth"
            )
            page.screenshot(path=str(ARTIFACTS / "run-page-1400.png"), full_page=True)

            page.click("text=Backfill runs")
            expect(page.locator("#result_list tbody tr")).to_have_count(1)
            expect(page.locator("td.field-list_cost")).to_have_text("unknown")
            listing = page.evaluate(
                """() => {
                  const box = document.querySelector('#changelist-form .results');
                  const row = document.querySelector('#result_list tbody tr');
                  return {overflow: box.scrollWidth - box.clientWidth,
                          height: row.getBoundingClientRect().height};
                }"""
            )
            page.screenshot(path=str(ARTIFACTS / "run-list-1400.png"))
        finally:
            browser.close()

    assert page_overflow <= 0
    assert listing["overflow"] <= 0 and listing["height"] < 40, listing  # one line, in view
