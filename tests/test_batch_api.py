"""`backfill_embeddings --batch-api [--wait]`: whole backfills through OpenAI's Batch API.

Against the test server's Files and Batches endpoints (real HTTP, the real `openai` client),
ending, as everywhere, by checking every stored vector against the server's own.
"""

import json

import pytest
from django.core.management import CommandError
from django.db import connection

from embeddings.backfill.index import build_hnsw_index, drop_hnsw_index
from embeddings.models import BackfillRun, Clip, EmbeddingBatch, EmbeddingBatchClip
from embeddings.tasks import collect_batches
from tests.support.assertions import assert_every_live_clip_right
from tests.support.clips import make_clips
from tests.support.commands import backfill, finish, kill_hard, start_backfill
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def batch_config(embedding_config):
    """The settings for fast batches: the answers come back within a few polls."""

    def configure(**overrides):
        return embedding_config(EMBEDDING_BATCH_POLL_SECONDS=0.05, **overrides)

    return configure


def test_submit_then_wait_embeds_every_clip_with_no_online_request(batch_config, openai_server):
    batch_config(EMBEDDING_MAX_INPUTS_PER_REQUEST=40)
    make_clips(300, removed_every=10)
    openai_server.update_faults(batch_seconds=0.2)

    submitted = backfill("--batch-api")

    assert "Batches: 1 (270 clips)" in submitted
    assert not Clip.objects.filter(embedding__isnull=False).exists()
    batch = EmbeddingBatch.objects.get()
    assert batch.batch_id and batch.requests == 7
    assert EmbeddingBatchClip.objects.count() == 270
    # Held: a normal run finds nothing to send while the batch is out.
    assert "Found 0 clips to process" in backfill()

    backfill("--batch-api", "--wait")

    assert_every_live_clip_right()
    assert openai_server.stats.requests == 0
    assert openai_server.batch_stats.duplicates == 0
    assert not EmbeddingBatchClip.objects.exists()
    batch.refresh_from_db()
    assert batch.collected_at is not None and batch.processed == 270
    assert BackfillRun.objects.filter(options__batch_api=True, status="succeeded").count() == 2


def test_failed_lines_are_resubmitted_and_an_expired_batch_s_leftovers_too(
    batch_config, openai_server
):
    batch_config(EMBEDDING_MAX_INPUTS_PER_REQUEST=10)
    make_clips(200)
    openai_server.update_faults(batch_failed_line_rate=0.3, batch_expire_rate=1.0, seed=3)

    backfill("--batch-api")
    openai_server.update_faults(batch_failed_line_rate=0, batch_expire_rate=0)
    summary = json.loads(backfill("--batch-api", "--wait", "--json"))

    assert summary["processed"] == 200 and summary["failed"] == 0
    assert_every_live_clip_right()
    first = EmbeddingBatch.objects.order_by("id").first()
    assert first.status == "expired" and first.resubmitted > 100
    assert EmbeddingBatch.objects.filter(attempt=2).exists()
    answered = openai_server.batch_stats.answered
    assert set(answered.values()) == {1}, "an answered text was sent again"


def test_a_clip_failing_every_time_is_recorded_failed_after_the_retries(
    batch_config, openai_server
):
    batch_config(EMBEDDING_MAX_RETRIES=2)
    make_clips(30)
    Clip.objects.filter(pk=Clip.objects.order_by("pk")[4].pk).update(title="poison pill")
    openai_server.update_faults(bad_input_marker="poison")

    with pytest.raises(CommandError) as err:
        backfill("--batch-api", "--wait")

    assert err.value.returncode == 1
    assert Clip.objects.filter(embedding__isnull=False).count() == 29
    failed = Clip.objects.get(title="poison pill")
    assert failed.embedding is None and "rejected" in failed.embedding_error
    assert not EmbeddingBatchClip.objects.exists()


def test_the_scheduled_poll_collects_and_a_text_edited_meanwhile_is_not_written_old(
    batch_config, openai_server
):
    batch_config()
    clips = make_clips(50)
    openai_server.update_faults(batch_seconds=0.1)
    backfill("--batch-api")
    Clip.objects.filter(pk=clips[0].pk).update(title="Edited after submission")

    # Edited: free again for any run at once.
    assert "Found 1 clips to process" in backfill()
    collect_until_done()

    assert_every_live_clip_right()
    assert BackfillRun.objects.filter(trigger="batch").exists()


def collect_until_done() -> None:
    def done() -> bool:
        collect_batches()
        return not EmbeddingBatch.objects.filter(collected_at__isnull=True).exists()

    wait_for(done, timeout=30)


@pytest.fixture
def no_hnsw_index():
    """Writes without index maintenance (measured here: ~150 rows/s with it, which would make
    this test take minutes); the index comes back, on the emptied table, afterwards."""
    drop_hnsw_index()
    yield
    # TRUNCATE, not the ORM's delete: that walked 60,000 rows in batches (186 s of teardown).
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {connection.ops.quote_name(Clip._meta.db_table)} CASCADE")
    build_hnsw_index()


@pytest.mark.timeout(900)  # 60,000 vectors checked one by one; slow on a busy machine
def test_sixty_thousand_clips_in_two_batches_survive_a_killed_collector(
    command_env, openai_server, no_hnsw_index
):
    make_clips(60_000)
    env = {**command_env, "EMBEDDING_BATCH_POLL_SECONDS": "0.1"}
    openai_server.update_faults(batch_seconds=0.5, batch_failed_line_rate=0.1, seed=17)

    code, output = finish(start_backfill(env, "--batch-api"), timeout=300)

    assert code == 0, output
    assert "Batches: 2 (60000 clips)" in output  # the 50,000-input cap
    openai_server.update_faults(batch_failed_line_rate=0)
    collector = start_backfill(env, "--batch-api", "--wait")
    wait_for(lambda: Clip.objects.filter(embedding__isnull=False).exists(), timeout=300)
    kill_hard(collector)
    assert Clip.objects.filter(embedding__isnull=True).exists()

    code, output = finish(start_backfill(env, "--batch-api", "--wait"), timeout=600)

    assert code == 0, output
    assert_every_live_clip_right(env["EMBEDDING_MODEL"])
    assert openai_server.stats.requests == 0, "an embedding was asked for online"
    sent = openai_server.batch_stats
    assert sent.duplicates > 0, "the failed lines were never resubmitted"
    assert set(sent.answered.values()) == {1}, "a text was answered twice"
    assert EmbeddingBatch.objects.filter(attempt=2).exists()
    assert not EmbeddingBatchClip.objects.exists()


def test_estimate_prices_the_batch_api_at_half_and_says_whether_the_queue_holds_it(
    batch_config, openai_server
):
    batch_config(EMBEDDING_BATCH_QUEUE_TOKENS=1000)
    make_clips(100)

    found = json.loads(backfill("--estimate", "--json"))

    assert found["batch_api"]["cost_usd"] == pytest.approx(found["cost_usd"] / 2, abs=1e-6)
    assert found["batch_api"]["fits_queue"] is False
    assert found["batch_api"]["batches"] > 1
    assert "half price" in backfill("--estimate")
    assert openai_server.stats.requests == 0 and openai_server.batch_stats.batches == 0


def test_submission_stays_inside_the_queue_limit_and_sends_the_rest_as_batches_finish(
    batch_config, openai_server
):
    batch_config(EMBEDDING_BATCH_QUEUE_TOKENS=2000)
    make_clips(300)  # ~17 tokens each: ~5,000 tokens, three batches of at most 2,000

    backfill("--batch-api")

    assert EmbeddingBatch.objects.count() >= 3
    assert EmbeddingBatch.objects.exclude(status="preparing").count() == 1
    backfill("--batch-api", "--wait")
    assert_every_live_clip_right()
    assert openai_server.batch_stats.batches == EmbeddingBatch.objects.count()
