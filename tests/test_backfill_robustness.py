"""Runs that overlap, die, get interrupted or meet bad clips: nothing wrong is ever stored."""

import os
import signal
import threading

import numpy as np
import psycopg
import pytest
from django.db import connection, connections

from embeddings.backfill.writer import EmbeddedClip, write_embeddings
from embeddings.models import Clip
from tests.support.assertions import a_later_run_finishes_the_job, assert_every_live_clip_right
from tests.support.clips import make_clips
from tests.support.commands import backfill, finish, start_backfill
from tests.support.openai_server import expected_vector
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def backfill_then_disconnect(*args: str) -> None:
    try:
        backfill(*args)
    finally:
        connections.close_all()


def test_two_runs_started_together_share_the_work(command_env, openai_server):
    make_clips(600)
    openai_server.update_faults(latency_ms=100)

    first = start_backfill(command_env, "-batch", "20", "--concurrency", "2")
    second = start_backfill(command_env, "-batch", "20", "--concurrency", "2")
    (code1, out1), (code2, out2) = finish(first), finish(second)

    assert (code1, code2) == (0, 0), out1 + out2
    assert_every_live_clip_right(command_env["EMBEDDING_MODEL"])
    assert openai_server.stats.duplicates == 0
    assert sum(openai_server.stats.texts.values()) == 600


def test_a_run_killed_with_sigkill_is_finished_by_the_next_run(command_env, openai_server):
    make_clips(400)
    openai_server.update_faults(latency_ms=150)
    small_requests = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "10"}
    victim = start_backfill(small_requests, "-batch", "10", "--concurrency", "2")
    wait_for(lambda: openai_server.stats.ok >= 2)

    victim.kill()
    victim.wait()
    assert Clip.objects.filter(embedding__isnull=True).exists()
    a_later_run_finishes_the_job(command_env, openai_server)


def test_sigterm_finishes_the_batches_in_flight_prints_the_summary_and_exits_1(
    command_env, openai_server
):
    make_clips(300)
    openai_server.update_faults(latency_ms=300)
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "20"}
    process = start_backfill(env, "-batch", "10", "--concurrency", "1")
    wait_for(lambda: openai_server.stats.requests >= 1)

    process.send_signal(signal.SIGTERM)
    code, output = finish(process)

    assert code == 1, output
    assert "Backfill Summary" in output
    assert "Interrupted" in output
    written = Clip.objects.filter(embedding__isnull=False).count()
    assert 0 < written < 300
    a_later_run_finishes_the_job(command_env, openai_server)


def test_a_title_edited_while_its_batch_is_in_flight_never_gets_the_old_vector(
    embedding_config, openai_server
):
    embedding_config()
    clips = make_clips(5)
    edited = clips[2]
    run = threading.Thread(target=backfill_then_disconnect, args=("-batch", "50"))
    with openai_server.holding():
        run.start()
        wait_for(lambda: openai_server.waiting == 1)  # its text read, its request unanswered
        Clip.objects.filter(pk=edited.pk).update(title="A completely different title")
    run.join()

    clip = Clip.objects.get(pk=edited.pk)
    assert clip.embedding is None, "the old title's vector was stored"
    backfill()
    clip = Clip.objects.with_text().get(pk=edited.pk)
    assert "A completely different title" in clip.text
    np.testing.assert_allclose(
        np.asarray(clip.embedding), expected_vector(clip.text, 768), rtol=1e-6
    )


def test_a_clip_the_api_refuses_is_recorded_and_retried_by_the_next_run(command_env, openai_server):
    make_clips(50)
    Clip.objects.filter(twitch_clip_id="clip-7").update(title="POISON clip")
    openai_server.update_faults(bad_input_marker="POISON")

    code, output = finish(start_backfill(command_env))

    assert code == 1, output
    assert "Failed: 1" in output
    bad = Clip.objects.get(twitch_clip_id="clip-7")
    assert bad.embedding is None
    assert "rejected" in bad.embedding_error
    assert bad.embedding_attempts == 1
    assert Clip.objects.filter(embedding__isnull=False).count() == 49

    openai_server.update_faults(bad_input_marker=None)
    code, output = finish(start_backfill(command_env))
    assert code == 0, output
    assert "Processed: 1" in output
    bad.refresh_from_db()
    assert bad.embedding is not None and bad.embedding_error is None


@pytest.mark.parametrize(
    "args", [["-batch", "0"], ["-batch", "-5"], ["-batch", "999999"], ["--no-such-flag"]]
)
def test_bad_flags_are_usage_errors_with_exit_2(command_env, args):
    code, output = finish(start_backfill(command_env, *args))

    assert code == 2, output
    assert "usage" in output.lower() or "--batch must be" in output


def test_the_api_key_never_appears_in_output(command_env, openai_server):
    make_clips(5)
    secret = "sk-proj.RECOGNISABLE.secret.KEY1234567890"
    env = {**command_env, "OPENAI_API_KEY": secret}
    openai_server.update_faults(unauthorized=True)

    code, output = finish(start_backfill(env, "-v", "3"))

    assert code == 2, output
    assert "OPENAI_API_KEY" in output
    assert secret not in output
    assert os.environ.get("OPENAI_API_KEY") != secret


def test_losing_the_database_mid_run_fails_cleanly_and_the_next_run_finishes(
    command_env, openai_server
):
    make_clips(300)
    openai_server.update_faults(latency_ms=400)
    env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "20"}
    process = start_backfill(env, "-batch", "10", "--concurrency", "1")
    wait_for(lambda: openai_server.stats.ok >= 1)

    with connection.cursor() as cursor:  # what a PostgreSQL restart does to the run
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    code, output = finish(process)

    assert code in (1, 2), output
    assert "Traceback" not in output
    a_later_run_finishes_the_job(command_env, openai_server)


def test_a_write_after_a_failed_write_or_a_new_connection_still_stores_its_vectors():
    """The writer's staging table must not be assumed: a rollback or a reconnect loses it."""
    make_clips(3)
    first, second, third = Clip.objects.order_by("pk")  # read back: text_hash is generated
    dims = Clip._meta.get_field("embedding").dimensions

    def embedded(clip: Clip, vector_dims: int = dims) -> EmbeddedClip:
        return EmbeddedClip(
            clip.pk, clip.text_hash, expected_vector(f"clip {clip.pk}", vector_dims)
        )

    # A vector of the wrong length is refused inside the write's transaction, rolling it back.
    with pytest.raises(psycopg.errors.DataException):
        write_embeddings([embedded(first, dims + 1)], model="m", dimensions=dims, run_id=None)
    assert write_embeddings([embedded(first)], model="m", dimensions=dims, run_id=None) == {
        first.pk
    }

    connection.close()
    written = write_embeddings(
        [embedded(second), embedded(third)], model="m", dimensions=dims, run_id=None
    )
    assert written == {second.pk, third.pk}
    stored = dict(Clip.objects.values_list("pk", "embedding"))
    for clip in (first, second, third):
        assert np.allclose(stored[clip.pk], expected_vector(f"clip {clip.pk}", dims), atol=1e-6)
