"""The coverage counts the triggers keep equal count(*) after every way of writing clips, and
the page and /metrics say what the full scan said."""

import io
import threading
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from embeddings.coverage import coverage_counts
from embeddings.coverage.ledger import fold
from embeddings.coverage.tally import scanned_tally
from embeddings.models import Clip, served_settings
from tests.support.clips import make_clips
from tests.support.commands import finish, kill_hard, start_backfill, start_command
from tests.support.coverage_counts import assert_counts_exact, site_writer
from tests.support.database import database_url_of_tests, restore_migrated_column
from tests.support.site_commands import manage, query
from tests.support.site_database import site_database, with_database
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def clips_column_back_as_migrated():
    yield
    restore_migrated_column()


LEFTOVERS = (
    "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'clip_embeddings_count%'"
    " UNION ALL SELECT relname FROM pg_class WHERE relname LIKE '%coverage%'"
    " OR relname LIKE '%pending_idx'"
    " UNION ALL SELECT proname FROM pg_proc WHERE proname LIKE 'clip_embeddings_%'"
)
INSERT = (
    "INSERT INTO clips (twitch_clip_id, title, broadcaster_name, creator_name, game_name,"
    " is_removed, created_at, embedding_attempts)"
    " VALUES (%s, %s, 'raw', 'raw', NULL, false, now() - %s, 0)"
)


def vector() -> list[float]:
    return [0.5] * Clip._meta.get_field("embedding").dimensions


def varied_clips() -> list[Clip]:
    """Clips in every state the page tells apart: current, stale, failed, blank, removed,
    of another model, made and created on several days."""
    config = served_settings()
    clips = make_clips(40, removed_every=9)
    now = timezone.now()
    for n, clip in enumerate(clips):
        clip.created_at = now - timedelta(days=n % 35, minutes=7 * n)
        clip.save(update_fields=["created_at"])
    Clip.objects.create(twitch_clip_id="blank", title=" ", broadcaster_name="", creator_name="")
    rows = Clip.objects.with_text().filter(pk__in=[c.pk for c in clips[:30]])
    for n, clip in enumerate(rows):
        Clip.objects.filter(pk=clip.pk).update(
            embedding=vector(),
            embedding_model=config.model if n % 4 else "another-model",
            embedding_dimensions=config.dimensions,
            embedding_text_hash=clip.text_hash_now if n % 5 else "not-its-text",
            embedding_generated_at=now - timedelta(days=n % 31, minutes=13 * n),
            embedding_error="timeout" if n % 6 == 0 else None,
        )
    Clip.objects.filter(pk__in=[c.pk for c in clips[30:35]]).update(embedding_error="refused")
    return clips


def test_orm_writes_keep_the_counts_exact():
    clips = varied_clips()
    assert_counts_exact()
    clip = Clip.objects.create(twitch_clip_id="one", title="One", broadcaster_name="b")
    clip.title = "One, edited"
    clip.save()
    assert_counts_exact()
    Clip.objects.bulk_create(
        Clip(twitch_clip_id=f"bulk-{n}", title=f"Bulk {n}", broadcaster_name="b") for n in range(25)
    )
    Clip.objects.filter(pk__in=[c.pk for c in clips[:10]]).update(is_removed=True)
    Clip.objects.filter(pk__in=[c.pk for c in clips[10:20]]).update(title="All the same now")
    assert_counts_exact()
    Clip.objects.filter(pk__in=[c.pk for c in clips[::3]]).delete()
    clip.delete()
    assert_counts_exact()


def test_raw_sql_copy_and_truncate_from_another_session_keep_the_counts_exact():
    varied_clips()
    with site_writer() as conn:
        for n in range(20):
            conn.execute(INSERT, [f"raw-{n}", f"Raw {n}", timedelta(hours=5 * n)])
        conn.execute(
            "UPDATE clips SET embedding_model = 'another-model', title = title || '!'"
            " WHERE id % 3 = 0"
        )
        conn.execute("UPDATE clips SET is_removed = NOT is_removed WHERE id % 7 = 0")
        conn.execute("DELETE FROM clips WHERE id % 5 = 0")
        assert_counts_exact()
        with conn.cursor().copy(
            "COPY clips (twitch_clip_id, title, broadcaster_name, creator_name, is_removed,"
            " created_at, embedding_attempts) FROM STDIN"
        ) as copy:
            for n in range(50):
                created = timezone.now() - timedelta(days=n)
                copy.write_row((f"copied-{n}", f"Copied {n}", "c", "c", n % 10 == 0, created, 0))
        assert_counts_exact()
        conn.execute("TRUNCATE clips CASCADE")
    assert_counts_exact()
    assert coverage_counts(served_settings().model, served_settings().dimensions).live == 0


def test_concurrent_writers_and_readers_keep_the_counts_exact():
    make_clips(20)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            with site_writer() as conn:
                for n in range(60):
                    conn.execute(INSERT, [f"w{worker}-{n}", f"W {n}", timedelta(minutes=n)])
                    conn.execute(
                        "UPDATE clips SET title = title || '.' WHERE twitch_clip_id = %s",
                        [f"w{worker}-{n // 2}"],
                    )
        except BaseException as err:  # reported by the test below
            errors.append(err)

    def read() -> None:
        from django.db import connections

        try:
            while any(w.is_alive() for w in writers):
                fold()
        except BaseException as err:
            errors.append(err)
        finally:
            connections.close_all()

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    reader = threading.Thread(target=read)
    for thread in (*writers, reader):
        thread.start()
    for thread in (*writers, reader):
        thread.join(timeout=120)
    assert errors == []
    assert Clip.objects.count() == 20 + 4 * 60
    assert_counts_exact()


def test_a_backfill_killed_mid_run_and_the_next_one_keep_the_counts_exact(
    command_env, openai_server
):
    make_clips(300, removed_every=10)
    Clip.objects.create(twitch_clip_id="blank", title="", broadcaster_name="", creator_name="")
    openai_server.update_faults(latency_ms=100)
    small = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "10"}
    victim = start_backfill(small, "-batch", "10", "--concurrency", "2")
    wait_for(lambda: Clip.objects.filter(embedding__isnull=False).count() >= 40, 60)
    kill_hard(victim)
    assert_counts_exact()

    openai_server.update_faults(latency_ms=0)
    code, output = finish(start_backfill(command_env))
    assert code == 0, output
    assert_counts_exact()
    config = served_settings()
    counts = coverage_counts(config.model, config.dimensions)
    assert (counts.current, counts.pending) == (counts.live - counts.blank, 0)


def test_a_switch_keeps_the_counts_exact(command_env):
    make_clips(30, removed_every=6)
    assert finish(start_backfill(command_env))[0] == 0
    assert_counts_exact()
    switch = start_command(
        command_env, "switch_embeddings", "--model", "other", "--dimensions", "768"
    )
    code, output = finish(switch, timeout=300)
    assert code == 0, output
    assert served_settings().model == "other"
    assert_counts_exact()


def test_metrics_say_the_full_scans_numbers():
    varied_clips()
    config = served_settings()
    scanned = coverage_counts(config.model, config.dimensions, tally_of=scanned_tally)
    text = Client().get("/metrics").content.decode()
    for name, value in (
        ("live_clips", scanned.live),
        ("current_clips", scanned.current),
        ("pending_clips", scanned.pending),
        ("blank_clips", scanned.blank),
        ("stale_clips", scanned.stale),
        ("failed_clips", scanned.failed),
    ):
        assert f"clip_embeddings_{name} {float(value)}\n" in text, name


def test_the_oldest_pending_clip_comes_from_an_ordered_walk_of_the_pending_index():
    varied_clips()
    config = served_settings()
    with CaptureQueriesContext(connection) as queries:
        counted = coverage_counts(config.model, config.dimensions)
    assert counted.oldest_pending_at is not None
    (probe,) = [q["sql"] for q in queries.captured_queries if "min(t)" in q["sql"]]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {probe}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    nodes = [line.strip().removeprefix("->  ").split("  (")[0] for line in plan.splitlines()]
    assert "Index Scan using clips_pending_idx on clips" in nodes and "Sort" not in nodes, plan


def test_reconcile_coverage_lists_what_differs_and_fix_counts_it_again():
    make_clips(10)
    out = io.StringIO()
    call_command("reconcile_coverage", stdout=out)
    assert "agree" in out.getvalue()
    fold()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE embedding_coverage_totals SET n = n + 2 WHERE facet = 's' AND n > 0")
    with pytest.raises(CommandError) as raised:
        call_command("reconcile_coverage", stdout=(out := io.StringIO()))
    assert raised.value.returncode == 1
    assert "facet=s" in out.getvalue() and "kept 12, counted now 10" in out.getvalue()
    call_command("reconcile_coverage", "--fix", stdout=(out := io.StringIO()))
    assert "fixed: 1 bucket counted again" in out.getvalue()
    assert_counts_exact()


def test_an_adopted_site_table_is_counted_exactly_and_given_back_without_them(site_env):
    check = (
        "from embeddings.coverage.ledger import reconcile;"
        "from embeddings.coverage import coverage_report as r;"
        "from embeddings.coverage.tally import scanned_tally as s;"
        "from embeddings.models import served_settings as c;"
        "m, d = c().model, c().dimensions;"
        "print('same' if r(m, d) == r(m, d, tally_of=s) and not reconcile().found else 'differ')"
    )
    with site_database(clips=3_000, key="uuid", with_vectors=0.3) as site:
        env = site_env(site)
        code, output = manage(env, "migrate", "--noinput")
        assert code == 0, output
        assert manage(env, "reconcile_coverage")[0] == 0
        with site_writer(site.url) as conn:
            conn.execute(
                "UPDATE clips SET title = title || ' (edited)' WHERE id IN"
                " (SELECT id FROM clips ORDER BY id LIMIT 200)"
            )
            conn.execute(
                "UPDATE clips SET title = '', broadcaster_name = '', creator_name = '',"
                " game_name = '' WHERE id IN (SELECT id FROM clips ORDER BY id DESC LIMIT 5)"
            )
            conn.execute("DELETE FROM clips WHERE id IN (SELECT id FROM clips LIMIT 100)")
        code, output = manage(env, "shell", "-c", check)
        assert code == 0 and output.strip().endswith("same"), output
        code, output = manage(env, "reconcile_coverage")
        assert code == 0, output

        code, output = manage(env, "migrate", "embeddings", "zero", "--noinput")
        assert code == 0, output
        left = query(site, LEFTOVERS)
        assert left == []


def test_migrate_zero_on_the_tools_own_table_removes_the_counts(command_env):
    name = f"counts_zero_{uuid.uuid4().hex[:8]}"
    admin = database_url_of_tests()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        env = {**command_env, "DATABASE_URL": with_database(admin, name)}
        for args in (
            ("migrate", "--noinput"),
            ("reconcile_coverage",),
            ("migrate", "embeddings", "zero", "--noinput"),
        ):
            code, output = manage(env, *args)
            assert code == 0, output
        with psycopg.connect(with_database(admin, name)) as conn:
            assert conn.execute(LEFTOVERS).fetchall() == []
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
