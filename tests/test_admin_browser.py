"""The coverage page in a real browser: log in, read the numbers, embed from the list, see
coverage move. Headless Chromium from Debian's packages, driven by Playwright."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from embeddings.models import Clip
from tests.support.assertions import assert_every_live_clip_right
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.support.clips import make_clips
from tests.support.commands import embed

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
