"""The operator's console: run history that tells the truth, live progress, the "embed all
pending" button, and `/metrics` agreeing with the coverage page."""

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django_q.conf import Conf

from embeddings.admin.workers import live_clusters
from embeddings.app_settings import embedding_settings
from embeddings.coverage import coverage_report
from embeddings.models import BackfillRun, Clip
from tests.support.assertions import assert_every_live_clip_right
from tests.support.clips import make_clips
from tests.support.cluster import running_cluster
from tests.support.commands import embed, finish, kill_hard, start_backfill
from tests.support.openai_server import Faults
from tests.support.own_queue import queue_of_its_own
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

COVERAGE = "/admin/embeddings/clip/coverage/"
EMBED_PENDING = "/admin/embeddings/clip/coverage/embed-pending/"


@pytest.fixture
def own_queue(unique_prefix: str):
    """The tasks this test queues go to a queue of its own, and the qclusters this process can
    see are the ones the test starts with `Q_CLUSTER_NAME` set to it."""
    with queue_of_its_own(unique_prefix) as name:
        yield name


def _alive() -> tuple[int, int]:
    """(clusters, workers) of the qclusters the admin sees alive."""
    clusters = live_clusters()
    assert clusters is not None, "the broker could not say"
    return clusters.clusters, clusters.workers


def _slow_run(command_env, openai_server, clips: int = 600):
    """A backfill subprocess that takes seconds: 20 clips a request, 300 ms each, one at a time."""
    make_clips(clips)
    openai_server.faults = Faults(latency_ms=300)
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "20", "EMBEDDING_CONCURRENCY": "1"}
    return env, start_backfill(env, "-batch", "10")


def test_a_run_killed_with_minus_9_is_interrupted_with_its_counts_once_the_next_run_ends(
    command_env, openai_server
):
    env, victim = _slow_run(command_env, openai_server)
    wait_for(lambda: BackfillRun.objects.filter(status="running", processed__gt=0).exists(), 60)
    (dead,) = BackfillRun.objects.filter(status="running")
    kill_hard(victim)
    saved = BackfillRun.objects.get(pk=dead.pk).processed

    openai_server.faults = Faults()
    code, output = finish(start_backfill(env, "-batch", "10"))

    assert code == 0, output
    dead.refresh_from_db()
    assert dead.status == BackfillRun.Status.INTERRUPTED
    assert dead.processed == saved > 0
    assert dead.total == 600 and dead.finished_at is not None and "died" in dead.error
    embedded_by_both = Clip.objects.filter(embedding__isnull=False).count()
    finished = BackfillRun.objects.exclude(pk=dead.pk).get()
    assert finished.status == BackfillRun.Status.SUCCEEDED
    assert dead.processed + finished.processed <= embedded_by_both == 600
    assert_every_live_clip_right(env["EMBEDDING_MODEL"])


def test_readers_of_the_history_settle_a_dead_run_without_waiting_for_another_run(
    command_env, openai_server, admin_client
):
    _, victim = _slow_run(command_env, openai_server)
    wait_for(lambda: BackfillRun.objects.filter(status="running", processed__gt=0).exists(), 60)
    kill_hard(victim)

    page = admin_client.get(reverse("admin:embeddings_backfillrun_changelist"))

    assert page.status_code == 200
    assert BackfillRun.objects.get().status == BackfillRun.Status.INTERRUPTED
    assert 'clip_embeddings_runs_total{status="interrupted"} 1.0' in _metrics(admin_client)


def test_the_coverage_page_shows_a_run_in_progress_and_refreshes_while_it_goes(
    command_env, openai_server, admin_client
):
    _, run = _slow_run(command_env, openai_server)
    try:
        wait_for(lambda: BackfillRun.objects.filter(status="running", processed__gt=0).exists(), 60)
        html = admin_client.get(COVERAGE).content.decode()
    finally:
        finish(run)

    assert 'http-equiv="refresh"' in html
    row = re.search(r'class="number run-done">([\d,]+) / ([\d,]+)<', html)
    assert row, html
    done, total = (int(n.replace(",", "")) for n in row.groups())
    assert 0 < done < total == 600
    assert "clips/s" in html
    after = admin_client.get(COVERAGE).content.decode()
    assert 'http-equiv="refresh"' not in after and 'id="coverage-running"' not in after


def test_embed_all_pending_shows_the_estimate_then_queues_work_a_real_cluster_does(
    command_env, redis_url, admin_client, embedding_config, own_queue
):
    embedding_config()
    clips = make_clips(30, removed_every=10)
    embed([clips[0].pk, clips[1].pk])
    pending = Clip.objects.pending(embedding_settings().model, 768).count()

    confirm = admin_client.get(EMBED_PENDING).content.decode()
    assert f"Yes, queue {pending} clips" in confirm
    assert re.search(r"Estimated tokens</th><td>[\d,]+ tokens in at least 1 request<", confirm)
    assert "Estimated cost</th><td>$0." in confirm
    assert Clip.objects.pending(embedding_settings().model, 768).count() == pending  # asked first

    response = admin_client.post(EMBED_PENDING, follow=True)
    (message,) = response.context["messages"]
    assert str(message).startswith("Queued the pending clips as 1 django-q2 task in group ")
    # No qcluster runs yet: the operator is told, with what to start.
    assert "; no qcluster is running to take them: start `manage.py qcluster`" in str(message)
    assert message.level_tag == "warning"
    env = {
        **command_env,
        "REDIS_URL": redis_url,
        # The tasks went to this process's queue: the cluster must take from the same one.
        "Q_CLUSTER_NAME": Conf.PREFIX,
        "EMBEDDING_MODEL": embedding_settings().model,
    }
    with running_cluster(env):
        wait_for(lambda: not Clip.objects.pending(embedding_settings().model, 768).exists(), 60)
    assert_every_live_clip_right(embedding_settings().model)
    assert BackfillRun.objects.filter(trigger="task", status="succeeded").count() == 1


def test_with_a_qcluster_running_the_message_says_it_takes_the_work_and_it_does(
    command_env, redis_url, admin_client, embedding_config, own_queue
):
    embedding_config()
    make_clips(12)
    env = {
        **command_env,
        "REDIS_URL": redis_url,
        "Q_CLUSTER_NAME": own_queue,
        "Q_WORKERS": "2",
        "EMBEDDING_MODEL": embedding_settings().model,
    }
    assert _alive() == (0, 0)

    with running_cluster(env):
        wait_for(lambda: _alive() == (1, 2), 60)
        response = admin_client.post(EMBED_PENDING, follow=True)
        (message,) = response.context["messages"]
        wait_for(lambda: not Clip.objects.pending(embedding_settings().model, 768).exists(), 60)

    assert str(message).startswith("Queued the pending clips as 1 django-q2 task in group ")
    assert "; 1 qcluster with 2 workers is taking them. The runs appear below" in str(message)
    assert message.level_tag == "success"
    assert_every_live_clip_right(embedding_settings().model)
    # A cluster that stopped drops out within seconds: the next message is truthful again.
    wait_for(lambda: _alive() == (0, 0), 15)


def test_only_staff_who_may_change_clips_see_the_button_or_may_queue(client, embedding_config):
    embedding_config()
    make_clips(5)
    viewer = User.objects.create_user("viewer", password="a-long-password", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_clip"))
    client.force_login(viewer)

    assert 'id="embed-pending"' not in client.get(COVERAGE).content.decode()
    assert client.get(EMBED_PENDING).status_code == 403
    assert client.post(EMBED_PENDING).status_code == 403
    client.logout()
    assert client.get(EMBED_PENDING).status_code == 302  # to the login page


def _metrics(client, **headers) -> str:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} missing from:\n{text}"
    return float(match.group(1))


def test_metrics_gauges_equal_the_coverage_page_numbers_on_the_same_data(
    client, embedding_config, settings
):
    config = embedding_config()
    clips = make_clips(40, removed_every=8)
    live = [c.pk for c in clips if not c.is_removed]
    embed(live[:25])
    Clip.objects.filter(pk__in=live[:4]).update(title="edited after embedding")  # stale
    Clip.objects.filter(pk__in=live[30:33]).update(embedding_error="rejected by the API: x")

    text = _metrics(client)
    report = coverage_report(config.model, config.dimensions)

    assert _gauge(text, "clip_embeddings_live_clips") == report.live == 35
    assert _gauge(text, "clip_embeddings_current_clips") == report.current == 21
    assert _gauge(text, "clip_embeddings_pending_clips") == report.missing == 14
    assert _gauge(text, "clip_embeddings_stale_clips") == report.stale == 4
    assert _gauge(text, "clip_embeddings_failed_clips") == report.failed == 3
    run = BackfillRun.objects.get()
    assert _gauge(text, "clip_embeddings_tokens_total") == run.tokens > 0
    assert _gauge(text, "clip_embeddings_requests_total") == run.requests > 0
    assert _gauge(text, "clip_embeddings_rate_limited_total") == 0
    assert 'clip_embeddings_runs_total{status="succeeded"} 1.0' in text


def test_metrics_need_the_bearer_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "a-scrape-secret"

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    text = _metrics(client, HTTP_AUTHORIZATION="Bearer a-scrape-secret")
    assert "clip_embeddings_live_clips 0.0" in text
    assert "a-scrape-secret" not in text
