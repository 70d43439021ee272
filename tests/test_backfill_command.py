"""The backfill command as a user runs it: flags, output, exit codes, what ends up stored."""

import json

import pytest
from django.core.management import CommandError

from embeddings.backfill.index import hnsw_index_exists
from embeddings.models import BackfillRun, Clip
from tests.support.assertions import assert_every_live_clip_right
from tests.support.clips import make_clips
from tests.support.commands import backfill

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_run_embeds_every_live_clip_and_a_second_run_calls_no_api(
    embedding_config, openai_server
):
    embedding_config()
    make_clips(1000, removed_every=10)

    output = backfill("-batch", "50")

    assert "Found 900 clips to process" in output
    assert "Processed: 900" in output
    assert_every_live_clip_right()
    assert not Clip.objects.filter(is_removed=True, embedding__isnull=False).exists()
    requests = openai_server.stats.requests
    assert openai_server.stats.duplicates == 0

    again = backfill("-batch", "50")

    assert "Found 0 clips to process" in again
    assert openai_server.stats.requests == requests
    run = BackfillRun.objects.order_by("-pk").first()
    assert run.status == BackfillRun.Status.SUCCEEDED


def test_missing_key_exits_2_naming_the_variable(embedding_config):
    embedding_config(OPENAI_API_KEY=None)
    make_clips(3)

    with pytest.raises(CommandError, match="OPENAI_API_KEY") as err:
        backfill()

    assert err.value.returncode == 2


def test_force_rewrites_every_live_clip(embedding_config, openai_server):
    embedding_config()
    make_clips(200)
    backfill()
    before = dict(Clip.objects.values_list("id", "embedding_generated_at"))

    output = backfill("-force", "-batch", "100")

    assert "Found 200 clips to process" in output
    assert "Processed: 200" in output
    after = dict(Clip.objects.values_list("id", "embedding_generated_at"))
    assert all(after[pk] > before[pk] for pk in before)
    assert openai_server.stats.duplicates == 0  # the re-embed is served from the cache


def test_dry_run_writes_nothing_and_the_real_run_after_it_is_free(embedding_config, openai_server):
    embedding_config()
    make_clips(120)

    output = backfill("-dry-run")

    assert "Would write: 120 embeddings" in output
    assert not Clip.objects.filter(embedding__isnull=False).exists()
    assert not BackfillRun.objects.exists()
    requests = openai_server.stats.requests
    assert requests > 0

    backfill()

    assert openai_server.stats.requests == requests
    assert_every_live_clip_right()


def test_estimate_calls_no_api_and_json_summary_is_machine_readable(
    embedding_config, openai_server
):
    embedding_config()
    make_clips(30)

    estimate = json.loads(backfill("--estimate", "--json"))

    assert estimate["clips"] == 30
    assert estimate["estimated_tokens"] > 30
    assert openai_server.stats.requests == 0
    summary = json.loads(backfill("--json"))
    assert summary["processed"] == 30
    assert summary["failed"] == 0
    assert summary["requests"] == 1
    assert summary["tokens"] > 0


def test_a_stale_vector_is_re_embedded_but_a_current_one_is_not(embedding_config):
    embedding_config()
    clips = make_clips(10)
    backfill()
    Clip.objects.filter(pk=clips[0].pk).update(game_name="Elden Ring")

    output = backfill()

    assert "Found 1 clips to process" in output
    assert_every_live_clip_right()


def test_a_column_of_another_size_is_a_configuration_error(embedding_config):
    embedding_config(EMBEDDING_DIMENSIONS=384)

    with pytest.raises(CommandError, match="EMBEDDING_DIMENSIONS") as err:
        backfill()

    assert err.value.returncode == 2


def test_batches_that_do_not_divide_a_request_are_all_embedded(embedding_config):
    embedding_config(EMBEDDING_MAX_INPUTS_PER_REQUEST=100)
    make_clips(600)

    output = backfill("-batch", "60", "--concurrency", "3")

    assert "Processed: 600" in output
    assert_every_live_clip_right()


def test_rebuild_index_mode_rebuilds_the_hnsw_index_after_the_run_even_when_it_fails(
    embedding_config, openai_server
):
    embedding_config()
    make_clips(100)

    output = backfill("--rebuild-index")

    assert "index=rebuild" in output
    assert "Processed: 100" in output
    assert "Step: building the HNSW index" in output
    assert "(the HNSW index build: " in output  # inside the run's Duration
    assert hnsw_index_exists()
    assert BackfillRun.objects.get().index_mode == "rebuild"
    assert_every_live_clip_right()

    Clip.objects.update(title="Edited so the next run has work")
    openai_server.update_faults(unauthorized=True)
    with pytest.raises(CommandError) as err:
        backfill("--rebuild-index")
    assert err.value.returncode == 2
    assert hnsw_index_exists()
