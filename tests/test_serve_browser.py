"""`make serve` as an operator runs it: gunicorn, DEBUG off, WhiteNoise. Headless Chromium logs
in, the admin is styled, its stylesheets are served hashed, cached for ever and compressed, and
the coverage page and `/metrics` tell the database's true numbers."""

import gzip
import os
import re
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from embeddings.models import Clip
from tests.support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.support.clips import make_clips
from tests.support.commands import ROOT, embed
from tests.support.database import database_url_of_tests
from tests.support.serving import free_port, get, start_serve, stop, wait_until_it_answers

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = ROOT / "docs"
COVERAGE_PATH = "/admin/embeddings/clip/coverage/"
USERNAME, PASSWORD = "ops", "ops-serve-test-password"
# `background-color` of an element no stylesheet touches: what `#header` has without admin CSS.
UNSTYLED_BACKGROUND = "rgba(0, 0, 0, 0)"
HASHED_STATIC_NAME = re.compile(r"/static/.+\.[0-9a-f]{12}\.css$")
FOREVER = "max-age=315360000"  # WhiteNoise's Cache-Control for content-hashed names


def _serve_env(port: int) -> dict[str, str]:
    """The environment of an operator's `make serve` on the test database: no API settings, no
    DEBUG, no metrics token, and none of an outer make's flags."""
    dropped = ("DJANGO_DEBUG", "METRICS_TOKEN", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_")) and k not in dropped
    }
    env.update(
        DATABASE_URL=database_url_of_tests(),
        PORT=str(port),
        DJANGO_SUPERUSER_USERNAME=USERNAME,
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        DJANGO_SUPERUSER_EMAIL="ops@example.com",
        PYTHONUNBUFFERED="1",
    )
    return env


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics:\n{text}"
    return float(match.group(1))


def test_make_serve_serves_a_styled_admin_with_true_numbers(embedding_config, tmp_path):
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    config = embedding_config()
    clips = make_clips(15, removed_every=5)  # 12 live, 3 removed
    live = [c.pk for c in clips if not c.is_removed]
    now = timezone.now()
    Clip.objects.update(created_at=now - timedelta(days=20))
    embed(live[:7])
    for days_ago, pks in ((14, live[:2]), (8, live[2:4]), (3, live[4:6])):  # for the chart
        Clip.objects.filter(pk__in=pks).update(embedding_generated_at=now - timedelta(days_ago))
    Clip.objects.filter(pk=live[0]).update(title="Retitled since it was embedded")  # stale
    counts = {
        "live": Clip.objects.live().count(),
        "current": Clip.objects.live()
        .filter(
            embedding__isnull=False,
            embedding_text_hash=F("text_hash"),
            embedding_model=config.model,
            embedding_dimensions=config.dimensions,
        )
        .count(),
        "removed": Clip.objects.filter(is_removed=True).count(),
    }
    assert counts == {"live": 12, "current": 6, "removed": 3}
    ARTIFACTS.mkdir(exist_ok=True)
    DOCS.mkdir(exist_ok=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "make-serve.log"
    server = start_serve(_serve_env(port), log)
    try:
        wait_until_it_answers(base + COVERAGE_PATH, server, log)
        assert f"Open {base}{COVERAGE_PATH}" in log.read_text()

        status, _, body = get(base + "/metrics")
        assert status == 200, body
        metrics = body.decode()
        assert _metric(metrics, "clip_embeddings_live_clips") == counts["live"]
        assert _metric(metrics, "clip_embeddings_current_clips") == counts["current"]

        # No database access from here until the browser is closed: Playwright's sync API runs
        # an event loop in this thread, and Django refuses synchronous queries beside one.
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(
                    viewport={"width": 1440, "height": 900}, color_scheme="light"
                )
                context.set_default_timeout(30_000)
                page = context.new_page()
                static_failures = []

                def record_static_failure(response) -> None:
                    if "/static/" in response.url and response.status != 200:
                        static_failures.append((response.url, response.status))

                page.on("response", record_static_failure)
                page.goto(base + "/admin/login/")
                page.fill("#id_username", USERNAME)
                page.fill("#id_password", PASSWORD)
                page.click("input[type=submit]")
                expect(page).to_have_url(base + "/admin/")

                page.goto(base + COVERAGE_PATH)
                expect(page.locator("#coverage-live")).to_have_text(str(counts["live"]))
                expect(page.locator("#coverage-current")).to_have_text(str(counts["current"]))
                expect(page.locator("#coverage-removed")).to_have_text(str(counts["removed"]))
                expect(page.locator("#coverage-percent")).to_have_text("50.0%")
                expect(page.locator("svg#coverage-chart")).to_be_visible()
                page.wait_for_load_state("load")
                styled = page.evaluate(
                    "getComputedStyle(document.querySelector('#header')).backgroundColor"
                )
                stylesheets = page.eval_on_selector_all(
                    "link[rel=stylesheet]", "links => links.map(link => link.href)"
                )
                page.screenshot(path=str(ARTIFACTS / "serve-coverage.png"), full_page=True)
                if os.environ.get("UPDATE_DOCS_SCREENSHOT"):  # the README's picture
                    page.screenshot(path=str(DOCS / "coverage-page.png"), full_page=True)

                # The same page with its stylesheets refused: what "unstyled" reads here.
                bare = context.new_page()
                bare.route(re.compile(r".*/static/.*\.css$"), lambda route: route.abort())
                bare.goto(base + COVERAGE_PATH)
                unstyled = bare.evaluate(
                    "getComputedStyle(document.querySelector('#header')).backgroundColor"
                )
            finally:
                browser.close()

        assert unstyled == UNSTYLED_BACKGROUND
        assert styled != UNSTYLED_BACKGROUND, "the admin stylesheet was not applied"
        assert static_failures == []
        assert stylesheets, "the page links no stylesheet"
        for href in stylesheets:
            assert HASHED_STATIC_NAME.search(href), f"{href} is not a hashed static name"
            status, headers, plain = get(href)
            assert status == 200, (href, status)
            assert headers["Content-Type"].startswith("text/css"), headers
            assert FOREVER in headers["Cache-Control"], headers
            assert "immutable" in headers["Cache-Control"], headers
            status, headers, packed = get(href, **{"Accept-Encoding": "gzip, br"})
            assert status == 200, (href, status)
            assert headers.get("Content-Encoding") in ("gzip", "br"), headers
            if headers["Content-Encoding"] == "gzip":
                assert gzip.decompress(packed) == plain
            assert len(packed) < len(plain)
    finally:
        stop(server)

    assert (DOCS / "coverage-page.png").stat().st_size > 10_000
