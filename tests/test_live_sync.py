"""Live sync: a clip saved through the ORM, however, has its vector seconds after its commit,
from the django-q2 workers a deployment already runs, in few large requests, and nothing is
lost when a message, Redis or a worker is."""

import os
import signal

import pytest
from django.core.cache import caches
from django.db import connection, transaction

from embeddings.app_settings import embedding_settings
from embeddings.live_sync import CACHE_ALIAS, marker_key, unmark_loop
from embeddings.models import Clip
from embeddings.tasks import SWEEP_NAME, register_schedule, sweep_written_clips
from tests.support.assertions import assert_every_live_clip_right
from tests.support.cluster import running_cluster, start_cluster
from tests.support.openai_server import Faults
from tests.support.save_stream import lags, percentile, run_saver
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LAG_P95_TARGET = 5.0


@pytest.fixture
def live_env(command_env, unique_prefix) -> dict[str, str]:
    """The site's processes (saver and cluster): one queue of their own, live sync on."""
    return {**command_env, "Q_CLUSTER_NAME": unique_prefix, "Q_WORKERS": "2"}


@pytest.fixture(params=["redis", "orm"])
def broker_env(request, live_env, redis_url) -> dict[str, str]:
    """Redis as broker and cache, or none: the ORM broker and the disk cache."""
    if request.param == "redis":
        return {**live_env, "REDIS_URL": redis_url}
    return {key: value for key, value in live_env.items() if key != "REDIS_URL"}


def _all_embedded(committed: dict[str, float]) -> bool:
    clips = Clip.objects.filter(twitch_clip_id__in=committed, embedding__isnull=False)
    return clips.count() == len(committed)


def test_a_steady_stream_of_saves_is_embedded_within_seconds_in_few_requests(
    broker_env, openai_server, unique_prefix
):
    openai_server.faults = Faults(latency_ms=300)
    with running_cluster(broker_env):
        committed = run_saver(
            broker_env, "stream", "--prefix", unique_prefix, "--rate", "20", "--seconds", "8"
        )
        wait_for(lambda: _all_embedded(committed), 60)

    waited = lags(committed)
    assert percentile(waited, 0.95) < LAG_P95_TARGET, waited
    stats = openai_server.stats
    assert stats.requests * 4 <= len(committed), f"{stats.requests} requests"
    assert stats.duplicates == 0  # no text sent twice
    assert_every_live_clip_right(broker_env["EMBEDDING_MODEL"])


def test_bulk_create_and_queryset_update_are_synced_too(live_env, redis_url, openai_server):
    env = {**live_env, "REDIS_URL": redis_url}
    with running_cluster(env):
        created = run_saver(env, "bulk", "--prefix", "bulk", "--count", "120")
        wait_for(lambda: _all_embedded(created), 60)
        before = sum(openai_server.stats.texts.values())
        retitled = run_saver(env, "retitle", "--prefix", "bulk-1")  # bulk-1, bulk-10...
        model = env["EMBEDDING_MODEL"]
        wait_for(lambda: not Clip.objects.pending(model, 768).exists(), 60)

    assert len(retitled) == 31
    texts = Clip.objects.with_text().filter(twitch_clip_id__in=retitled).values_list("text")
    # The edited clips' texts and nothing else, each once (31 clips share 25 texts).
    assert sum(openai_server.stats.texts.values()) - before == texts.distinct().count() == 25
    assert openai_server.stats.duplicates == 0
    assert_every_live_clip_right(model)


def _loop_marked() -> bool:
    return caches[CACHE_ALIAS].get(marker_key()) is not None


def test_a_transaction_that_rolls_back_queues_nothing(settings):
    settings.EMBEDDING_LIVE_SYNC = True
    unmark_loop()
    with pytest.raises(RuntimeError), transaction.atomic():
        Clip.objects.create(
            twitch_clip_id="gone", title="t", broadcaster_name="b", creator_name="c"
        )
        assert not _loop_marked()  # never inside the transaction
        raise RuntimeError("the request failed")

    assert not Clip.objects.filter(twitch_clip_id="gone").exists()
    assert not _loop_marked()
    Clip.objects.create(twitch_clip_id="kept", title="t", broadcaster_name="b", creator_name="c")
    assert _loop_marked()  # a commit does queue the loop
    unmark_loop()


def test_a_raw_sql_edit_is_caught_by_the_sweep(embedding_config, settings, openai_server):
    config = embedding_config()  # live sync off in this process: nothing nudges, the sweep runs
    Clip.objects.bulk_create(
        Clip(twitch_clip_id=f"raw-{n}", title=f"t{n}", broadcaster_name="b", creator_name="c")
        for n in range(5)
    )
    settings.EMBEDDING_LIVE_SYNC = True
    sweep_written_clips()
    assert_every_live_clip_right(config.model)
    before = openai_server.stats.requests

    with connection.cursor() as cursor:  # another service, writing around the ORM
        cursor.execute("UPDATE clips SET title = 'edited in SQL' WHERE twitch_clip_id = 'raw-3'")
    assert Clip.objects.awaiting_vector().count() == 1
    sweep_written_clips()

    assert_every_live_clip_right(config.model)
    assert openai_server.stats.requests == before + 1
    assert "Title: edited in SQL. Broadcaster: b. Clipped by: c" in openai_server.stats.texts


def test_the_sweep_runs_every_sweep_minutes_while_live_sync_is_on(settings):
    from django_q.models import Schedule

    settings.EMBEDDING_LIVE_SYNC, settings.EMBEDDING_SWEEP_MINUTES = True, 3
    register_schedule(embedding_settings())
    sweep = Schedule.objects.get(name=SWEEP_NAME)
    assert (sweep.func, sweep.minutes) == ("embeddings.tasks.sweep_written_clips", 3)

    settings.EMBEDDING_LIVE_SYNC = False
    register_schedule(embedding_settings())
    assert not Schedule.objects.filter(name=SWEEP_NAME).exists()


def test_a_cluster_killed_mid_stream_and_restarted_leaves_every_clip_right(
    live_env, redis_url, openai_server, unique_prefix, settings
):
    env = {**live_env, "REDIS_URL": redis_url}
    openai_server.faults = Faults(latency_ms=300)
    cluster = start_cluster(env)
    try:
        first = run_saver(env, "stream", "--prefix", f"{unique_prefix}-a", "--seconds", "3")
        wait_for(lambda: Clip.objects.filter(embedding__isnull=False).exists(), 30)
        os.killpg(cluster.pid, signal.SIGKILL)  # the whole cluster, mid-stream
        cluster.wait(timeout=30)
        second = run_saver(env, "stream", "--prefix", f"{unique_prefix}-b", "--seconds", "3")
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGKILL)
    assert not _all_embedded({**first, **second})
    # What the dead cluster asked for but never wrote (its requests in flight; 3 s of saves
    # with no cluster alive let the server answer the last of them).
    written = Clip.objects.with_text().filter(embedding__isnull=False)
    in_flight = set(openai_server.stats.texts) - set(written.values_list("text", flat=True))

    settings.EMBEDDING_LIVE_SYNC = True
    register_schedule(embedding_settings())  # as migrate does: the sweep, due at once
    with running_cluster(env):
        wait_for(lambda: _all_embedded({**first, **second}), 120)

    assert_every_live_clip_right(env["EMBEDDING_MODEL"])
    paid_twice = {text for text, n in openai_server.stats.texts.items() if n > 1}
    assert paid_twice <= in_flight  # a kill -9 loses its answers in flight, nothing more


def test_with_live_sync_off_a_save_queues_nothing(settings):
    settings.EMBEDDING_LIVE_SYNC = False
    unmark_loop()
    Clip.objects.create(twitch_clip_id="quiet", title="t", broadcaster_name="b", creator_name="c")
    assert not _loop_marked()
