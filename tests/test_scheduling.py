"""Scheduled and distributed runs on django-q2, with real qcluster processes and Redis."""

import json
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from django_q.models import Schedule, Task

from embeddings.app_settings import embedding_settings
from embeddings.models import BackfillRun, Clip
from embeddings.tasks import SCHEDULE_NAME, embed_new_clips, register_schedule
from tests.support.assertions import a_later_run_finishes_the_job, assert_every_live_clip_right
from tests.support.clips import make_clips
from tests.support.cluster import start_cluster, stop_cluster
from tests.support.commands import finish, start_backfill
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent


def test_migrate_registers_the_schedule_and_keeps_it_in_step_with_the_settings(settings):
    schedule = Schedule.objects.get(name=SCHEDULE_NAME)
    assert schedule.func == "embeddings.tasks.embed_new_clips"
    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 360

    settings.EMBEDDING_SCHEDULE_MINUTES = 15
    register_schedule(embedding_settings())
    register_schedule(embedding_settings())

    assert Schedule.objects.filter(name=SCHEDULE_NAME).count() == 1
    assert Schedule.objects.get(name=SCHEDULE_NAME).minutes == 15


def test_the_scheduled_task_embeds_at_most_the_limit_of_recent_clips(embedding_config):
    embedding_config()
    recent = make_clips(150)
    old = Clip.objects.bulk_create(
        Clip(
            twitch_clip_id=f"old-{i}",
            title=f"Old clip {i}",
            broadcaster_name="b",
            creator_name="c",
            created_at=timezone.now() - timedelta(days=10),
        )
        for i in range(60)
    )

    result = embed_new_clips()

    assert result["processed"] == 100
    assert (
        Clip.objects.filter(pk__in=[c.pk for c in recent], embedding__isnull=False).count() == 100
    )
    assert not Clip.objects.filter(pk__in=[c.pk for c in old], embedding__isnull=False).exists()
    assert BackfillRun.objects.get().trigger == "schedule"


def test_the_scheduled_task_does_nothing_when_disabled(embedding_config, openai_server):
    embedding_config(EMBEDDING_ENABLED=False)
    make_clips(5)

    assert embed_new_clips() is None
    assert openai_server.stats.requests == 0
    assert not Clip.objects.filter(embedding__isnull=False).exists()


@pytest.fixture
def cluster_env(command_env, redis_url, unique_prefix) -> dict[str, str]:
    return {
        **command_env,
        "REDIS_URL": redis_url,
        "Q_CLUSTER_NAME": unique_prefix,
        "Q_WORKERS": "2",
    }


def enqueue(env: dict[str, str], *args: str) -> str:
    code, output = finish(start_backfill(env, "--enqueue", *args))
    assert code == 0, output
    return output


def test_an_enqueued_backfill_on_two_clusters_stays_inside_the_token_limit(
    cluster_env, openai_server
):
    make_clips(3000)
    tokens_per_minute = 60_000
    env = {**cluster_env, "EMBEDDING_TOKENS_PER_MINUTE": str(tokens_per_minute)}
    openai_server.update_faults(tokens_per_minute=tokens_per_minute)

    output = enqueue(env, "--chunk", "250")
    assert "Enqueued 12 tasks" in output
    clusters = [start_cluster(env), start_cluster(env)]  # two "machines" on one Redis
    try:
        wait_for(lambda: Clip.objects.filter(embedding__isnull=False).count() == 3000, 150)
    finally:
        for cluster in clusters:
            stop_cluster(cluster)

    assert_every_live_clip_right(env["EMBEDDING_MODEL"])
    stats = openai_server.stats
    assert stats.duplicates == 0
    assert stats.rate_limited <= 0.02 * stats.requests
    log = sorted((t, tokens) for t, _, tokens, status in stats.request_log if status == 200)
    start = log[0][0]
    spent = 0
    for at, tokens in log:
        spent += tokens
        # The bucket starts full, then refills at the per-minute rate (5% slack for clocks).
        assert spent <= 1.05 * (tokens_per_minute + tokens_per_minute / 60 * (at - start))


def test_a_range_whose_worker_was_killed_is_completed_by_a_later_run(cluster_env, openai_server):
    make_clips(400)
    openai_server.update_faults(latency_ms=300)
    enqueue(cluster_env, "--chunk", "200", "-batch", "10")
    env = {**cluster_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "10"}
    cluster = start_cluster(env)
    try:
        wait_for(lambda: openai_server.stats.ok >= 2, 60)
    finally:
        cluster.send_signal(signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-g", str(cluster.pid)], check=False)
        cluster.wait()
    assert Clip.objects.filter(embedding__isnull=True).exists()

    a_later_run_finishes_the_job(cluster_env, openai_server)


def test_an_enqueued_backfill_keeps_its_since_and_refuses_what_tasks_cannot_honour(
    cluster_env, openai_server
):
    clips = make_clips(120)
    old = [clip.pk for clip in clips[::2]]  # every other clip: the ranges hold both kinds
    Clip.objects.filter(pk__in=old).update(created_at=timezone.now() - timedelta(days=10))

    output = enqueue(cluster_env, "--since", "2d", "--chunk", "20", "--json")
    group = json.loads(output.splitlines()[-1])["group"]
    refused = finish(start_backfill(cluster_env, "--enqueue", "--rebuild-index"))
    cluster = start_cluster(cluster_env)
    try:
        wait_for(lambda: Task.objects.filter(group=group).count() == 3, 60)
    finally:
        stop_cluster(cluster)

    assert all(task.success for task in Task.objects.filter(group=group)), "every task ran"
    assert Clip.objects.filter(embedding__isnull=False).count() == 60
    assert not Clip.objects.filter(pk__in=old, embedding__isnull=False).exists()
    code, message = refused
    assert code == 2 and "--enqueue cannot be combined with --rebuild-index" in message
