"""Holding the kept coverage counts to the truth: count(*) by bucket (`reconcile`), and the
page's and /metrics' numbers against the full scan they replaced."""

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.utils import timezone

from embeddings.coverage import coverage_counts, coverage_report
from embeddings.coverage.ledger import describe, reconcile
from embeddings.coverage.tally import scanned_tally
from embeddings.models import served_settings
from tests.support.database import database_url_of_tests

# Where an edit of the session's zone or the day's edges would show: 5:45 off UTC.
FAR_ZONE = "Asia/Kathmandu"


def assert_counts_exact() -> None:
    """Every bucket agrees with count(*), and the page and /metrics say what a full scan
    says, in UTC and in a zone a quarter hour off the hour."""
    found = reconcile().found
    assert found == [], "\n".join(map(describe, found))
    config = served_settings()
    for zone in ("UTC", FAR_ZONE):
        with timezone.override(zone):
            counted = coverage_report(config.model, config.dimensions)
            scanned = coverage_report(config.model, config.dimensions, tally_of=scanned_tally)
            assert counted == scanned
    counted = coverage_counts(config.model, config.dimensions)
    assert counted == coverage_counts(config.model, config.dimensions, tally_of=scanned_tally)


@contextmanager
def site_writer(url: str | None = None) -> Iterator[psycopg.Connection]:
    """A connection as another service opens one: autocommit, its own session time zone."""
    with psycopg.connect(url or database_url_of_tests(), autocommit=True) as conn:
        conn.execute(f"SET TIME ZONE '{FAR_ZONE}'")
        yield conn
