"""The backfill picks how to write from the size of its work (`write_mode`): through the index,
around one index build, or through build rows with search on its index throughout; it ends
with a valid index, and a run killed part-way leaves the next one to finish the job."""

import json

import psycopg
import pytest
from django.db import connection, transaction
from django.db.models import Value
from django.db.models.functions import Concat

from embeddings.backfill.index import index_state
from embeddings.backfill.sql import HNSW_INDEX_NAME
from embeddings.models import BackfillRun, Clip, ClipVector, EmbeddingVersion, embedding_column_type
from tests.support.assertions import assert_every_live_clip_right
from tests.support.clips import make_clips
from tests.support.commands import (
    finish,
    kill_hard,
    start_backfill,
    start_searcher,
    stop_searcher,
)
from tests.support.database import database_url_of_tests, restore_migrated_column
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BULK_MIN = 50


@pytest.fixture
def env(command_env: dict[str, str]) -> dict[str, str]:
    return {**command_env, "EMBEDDING_BULK_MIN_CLIPS": str(BULK_MIN)}


@pytest.fixture(autouse=True)
def clips_column_back_as_migrated():
    yield
    restore_migrated_column()


def run_json(env: dict[str, str], *args: str) -> dict:
    code, output = finish(start_backfill(env, "--json", *args), timeout=240)
    assert code == 0, output
    return json.loads(output[output.index("{") :])


def edit_titles(clips: list[Clip]) -> None:
    Clip.objects.filter(pk__in=[c.pk for c in clips]).update(
        title=Concat(Value("Edited "), "title")
    )


def test_the_mode_follows_the_work_and_every_mode_ends_with_a_valid_index(env):
    make_clips(200, removed_every=20)

    first = run_json(env)  # a first fill: nothing indexed to keep serving
    assert first["index_mode"] == "rebuild"
    assert first["processed"] == 190
    assert index_state(HNSW_INDEX_NAME) is True
    assert 0 < first["index_build_seconds"] <= first["duration_seconds"]  # the run includes it

    Clip.objects.bulk_create(
        Clip(twitch_clip_id=f"late-{n}", title=f"Late clip {n}", broadcaster_name="b")
        for n in range(BULK_MIN - 1)
    )
    small = run_json(env)  # fewer than EMBEDDING_BULK_MIN_CLIPS
    assert small["index_mode"] == "live"
    assert small["processed"] == BULK_MIN - 1
    assert small["index_build_seconds"] is None

    assert index_state(HNSW_INDEX_NAME) is True
    assert list(BackfillRun.objects.order_by("pk").values_list("index_mode", flat=True)) == [
        "rebuild",
        "live",
    ]
    assert_every_live_clip_right(env["EMBEDDING_MODEL"])


def build_phase() -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT phase FROM pg_stat_progress_create_index WHERE relid = 'clips'::regclass"
        )
        row = cursor.fetchone()
    return row and row[0]


def test_clips_are_saved_and_found_while_a_rebuild_run_builds_its_index(
    env, openai_server, embedding_config
):
    """The rebuild's build is CONCURRENTLY: a save left open holds it at its first wait, and
    meanwhile other saves go through and search answers, exactly, without the index."""
    embedding_config(EMBEDDING_MODEL=env["EMBEDDING_MODEL"])
    clips = make_clips(120)
    sought = Clip.objects.with_text().get(pk=clips[5].pk).text
    with psycopg.connect(database_url_of_tests()) as open_save:
        with openai_server.holding():  # the run drops the index, then waits for answers
            run = start_backfill(env, "--json")
            wait_for(lambda: index_state(HNSW_INDEX_NAME) is None, 60)
            open_save.execute("LOCK TABLE clips IN ROW EXCLUSIVE MODE")
        wait_for(lambda: build_phase() == "waiting for writers before build", 120)

        with transaction.atomic(), connection.cursor() as cursor:  # fails, not hangs, if blocked
            cursor.execute("SET LOCAL lock_timeout = '5s'")
            late = Clip.objects.create(twitch_clip_id="late", title="Saved during the build")
            edit_titles(clips[:1])
        found = Clip.objects.similar_to(sought, k=3)
        assert build_phase() == "waiting for writers before build"  # all of it meanwhile
        open_save.rollback()

    code, output = finish(run)
    assert code == 0, output
    assert (found[0].pk, round(found[0].distance, 3)) == (clips[5].pk, 0)
    assert index_state(HNSW_INDEX_NAME) is True
    assert run_json(env)["processed"] == 2  # the saved and the edited clip, by the next run
    assert Clip.objects.filter(pk=late.pk, embedding__isnull=False).exists()
    assert_every_live_clip_right(env["EMBEDDING_MODEL"])


def test_a_large_rewrite_of_an_indexed_table_keeps_search_answering_from_an_index(
    env, openai_server, tmp_path
):
    clips = [c for c in make_clips(240, removed_every=30) if not c.is_removed]
    assert run_json(env)["index_mode"] == "rebuild"
    edited, kept = clips[:120], clips[120:]
    edit_titles(edited)  # half the table stale: a large run, with 112 vectors still served
    searcher = start_searcher(env, [c.pk for c in kept][:30], tmp_path)
    try:
        openai_server.update_faults(latency_ms=300)  # long enough for many searches meanwhile
        rewrite = run_json({**env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "20"})
    finally:
        report = stop_searcher(searcher, tmp_path)

    assert rewrite["index_mode"] == "bulk"
    assert rewrite["processed"] == len(edited)  # each once: no pass re-embeds what it wrote
    assert report["wrong"] == [], report["wrong"][:5]
    assert report["searches"] >= 5, report
    assert embedding_column_type() == ("vector", 768)
    assert index_state(HNSW_INDEX_NAME) is True
    assert not ClipVector.objects.exists()
    assert EmbeddingVersion.objects.get().phase == EmbeddingVersion.Phase.DONE
    assert "bulk" in BackfillRun.objects.values_list("index_mode", flat=True)
    assert_every_live_clip_right(env["EMBEDDING_MODEL"])


def killed_while(env: dict[str, str], openai_server, written, *args: str) -> None:
    """Start a slow run and SIGKILL it once `written()` holds."""
    openai_server.update_faults(latency_ms=400)
    run = start_backfill({**env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "20"}, *args)
    try:
        wait_for(written, 120)
    finally:
        kill_hard(run)
    openai_server.update_faults(latency_ms=0)


def test_a_killed_rebuild_run_leaves_the_index_build_to_the_next_run(env, openai_server):
    make_clips(150)
    killed_while(
        env,
        openai_server,
        lambda: (
            Clip.objects.filter(embedding__isnull=False).count() >= 40
            and index_state(HNSW_INDEX_NAME) is None
        ),
    )

    after = run_json(env, "--limit", "5")  # small: live, were it not for the missing index

    assert after["index_mode"] == "rebuild"
    assert index_state(HNSW_INDEX_NAME) is True
    assert BackfillRun.objects.filter(status=BackfillRun.Status.INTERRUPTED).count() == 1


def test_a_killed_bulk_run_is_resumed_by_the_next_run(env, openai_server):
    clips = make_clips(150)
    assert run_json(env)["index_mode"] == "rebuild"
    edit_titles(clips[:100])  # 50 vectors still served: a bulk run
    killed_while(env, openai_server, lambda: ClipVector.objects.count() >= 50 + 30)

    after = run_json(env)

    assert after["index_mode"] == "bulk"
    assert after["processed"] <= 100 - 30  # the killed run's build rows were kept
    assert index_state(HNSW_INDEX_NAME) is True
    assert EmbeddingVersion.objects.get().phase == EmbeddingVersion.Phase.DONE
    assert_every_live_clip_right(env["EMBEDDING_MODEL"])


def test_two_runs_at_once_keep_the_rebuild_and_the_index_comes_back_once_all_are_written(
    env, openai_server
):
    """Two runs started together both pick `rebuild` on an indexed table: the later says so
    ("another run"), neither brings the index back under the other, and the last to finish
    builds it, once, after every live clip has its vector."""
    make_clips(400, removed_every=20)
    live = Clip.objects.live().count()
    with openai_server.holding():  # both take their windows, then wait for answers
        runs = [start_backfill(env, "--batch", "20") for _ in range(2)]
        wait_for(lambda: BackfillRun.objects.filter(status="running").count() == 2, 60)
        wait_for(lambda: index_state(HNSW_INDEX_NAME) is None, 60)
    index_back_early = []

    def both_done() -> bool:
        unwritten = Clip.objects.live().filter(embedding__isnull=True).exists()
        if index_state(HNSW_INDEX_NAME) is True and unwritten:
            index_back_early.append(True)
        return all(run.poll() is not None for run in runs)

    wait_for(both_done, 240)
    (code_a, out_a), (code_b, out_b) = (finish(run) for run in runs)
    assert (code_a, code_b) == (0, 0), out_a + out_b
    assert "index=rebuild" in out_a and "index=rebuild" in out_b, out_a + out_b
    assert "another run is in progress (#" in out_a + out_b, out_a + out_b
    assert "Held by another run: " in out_a + out_b, out_a + out_b
    assert not index_back_early
    assert index_state(HNSW_INDEX_NAME) is True
    assert Clip.objects.live().filter(embedding__isnull=False).count() == live
    builds = [out for out in (out_a, out_b) if "Step: building the HNSW index" in out]
    assert len(builds) == 1, out_a + out_b
    assert_every_live_clip_right(env["EMBEDDING_MODEL"])
