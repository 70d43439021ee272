"""`GET /metrics`: the embedding numbers in Prometheus' text format, for Grafana and alerts.

Computed at scrape time from the database, so every web process reports the same numbers as
the coverage page (the same expressions) for the whole fleet: the counters are sums over the
recorded runs of every process and machine. The clip counts come from the counts the
triggers on `clips` keep (docs/coverage-counts.md), not a pass over the table, plus one pass
over the small run table; measured in `make bench` at 1,000,000 and 2,000,000 clips.
"""

import hmac

from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from embeddings.app_settings import embedding_settings
from embeddings.backfill.claims import settle_dead_runs
from embeddings.coverage import coverage_counts
from embeddings.models import BackfillRun, served_settings

PREFIX = "clip_embeddings"


class EmbeddingCollector:
    """A custom collector: nothing is counted in process memory, everything is read per scrape."""

    def collect(self):
        config = served_settings()
        counts = coverage_counts(config.model, config.dimensions)
        gauges = {
            "live_clips": ("Live clips (not removed).", counts.live),
            "current_clips": (
                "Live clips with a vector of their present text, model and size.",
                counts.current,
            ),
            "pending_clips": ("Live clips the next run would embed.", counts.pending),
            "blank_clips": (
                "Live clips with no text to embed (every text field blank).",
                counts.blank,
            ),
            "stale_clips": (
                "Live clips whose vector is of other text, model or size.",
                counts.stale,
            ),
            "failed_clips": ("Live clips whose last attempt failed.", counts.failed),
            "oldest_pending_seconds": (
                "Seconds the clip waiting longest for its vector has waited (live sync's lag).",
                counts.oldest_pending_seconds,
            ),
        }
        for name, (documentation, value) in gauges.items():
            yield GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)

        settle_dead_runs()
        totals = BackfillRun.objects.aggregate(
            tokens=Sum("tokens"), requests=Sum("requests"), rate_limited=Sum("rate_limited")
        )
        counters = {
            "tokens": "Tokens billed by embedding requests of every recorded run.",
            "requests": "Embedding requests sent by every recorded run, retries included.",
            "rate_limited": "Requests answered 429 (rate limited) in every recorded run.",
        }
        for name, documentation in counters.items():
            yield CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=totals[name] or 0)
        runs = CounterMetricFamily(
            f"{PREFIX}_runs", "Backfill runs by status, from every door.", labels=["status"]
        )
        by_status = dict(
            BackfillRun.objects.order_by().values_list("status").annotate(n=Count("pk"))
        )
        for status in BackfillRun.Status.values:
            runs.add_metric([status], by_status.get(status, 0))
        yield runs


REGISTRY = CollectorRegistry()
REGISTRY.register(EmbeddingCollector())


def _authorized(request: HttpRequest, token: str | None) -> bool:
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _authorized(request, embedding_settings().metrics_token):
        response = HttpResponse(
            "METRICS_TOKEN is set: send Authorization: Bearer <token>\n", status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
