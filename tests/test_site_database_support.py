"""The site database tests adopt (tests/support/site_database.py): built as the site's own
backend would build it, described stably, and written by a timed site writer."""

import time
from collections.abc import Iterator

import psycopg
import pytest

from project.settings import database_config
from tests.support.site_database import SiteDatabase, SiteWriter, site_database

CLIPS = 3_000


@pytest.fixture(scope="module")
def uuid_site(django_db_setup) -> Iterator[SiteDatabase]:
    """Beside the test database (created by `django_db_setup`), on the same server."""
    with site_database(
        CLIPS, key="uuid", with_vectors=0.3, other_vectors=0.1, other_model=None
    ) as site:
        yield site


def scalar(site: SiteDatabase, query: str, params: list | None = None) -> object:
    with site.connect(autocommit=True) as conn:
        return conn.execute(query, params).fetchone()[0]


def test_uuid_site_has_the_sites_rows_and_vectors(uuid_site: SiteDatabase) -> None:
    counts = uuid_site.counts()
    assert counts["clips"] == CLIPS
    assert counts["clips_removed"] == CLIPS // 53
    assert counts["clips_removed_null"] >= 1
    assert counts["clips_with_vectors"] == 1_200  # 30% labelled, 10% with a NULL model
    assert counts["clips_with_model"] == 900
    assert all(counts[table] > 0 for table in ("clip_votes", "clip_tags", "comments", "favorites"))
    assert scalar(uuid_site, "SELECT count(DISTINCT broadcaster_name) FROM clips") >= 15
    assert scalar(uuid_site, "SELECT count(DISTINCT title) FROM clips") > 1_000
    assert scalar(uuid_site, "SELECT max(abs(vector_norm(embedding) - 1)) FROM clips") < 1e-5
    # Naive timestamps, spread over the last 60 days (UTC).
    assert scalar(
        uuid_site,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'clips'::regclass AND attname = 'created_at'",
    ) == ("timestamp without time zone")
    span = scalar(
        uuid_site, "SELECT extract(epoch FROM max(created_at) - min(created_at)) / 86400 FROM clips"
    )
    assert 59 < span <= 60
    assert (
        scalar(
            uuid_site,
            "SELECT count(*) FROM pg_attribute WHERE attrelid ="
            " 'clips'::regclass AND attnum > 0 AND NOT attisdropped",
        )
        == 40
    )


def test_its_indexes_are_the_sites_and_valid(uuid_site: SiteDatabase) -> None:
    with uuid_site.connect(autocommit=True) as conn:
        indexes = dict(
            conn.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'clips'::regclass"
            ).fetchall()
        )
        hnsw = conn.execute("SELECT pg_get_indexdef('idx_clips_embedding_hnsw'::regclass)")
        assert (
            "hnsw (embedding vector_cosine_ops) WITH (m='16', ef_construction='64')"
            in (hnsw.fetchone()[0])
        )
    assert 40 <= len(indexes) <= 50 and all(indexes.values())


def test_its_triggers_keep_search_vector_and_updated_at(uuid_site: SiteDatabase) -> None:
    with uuid_site.connect(autocommit=True) as conn:
        clip_id, updated_at = conn.execute(
            "SELECT id, updated_at FROM clips WHERE is_removed = false ORDER BY id LIMIT 1"
        ).fetchone()
        conn.execute("UPDATE clips SET title = 'Zebracorn ambush' WHERE id = %s", [clip_id])
        matched, newer = conn.execute(
            "SELECT search_vector @@ to_tsquery('english', 'zebracorn'), updated_at > %s"
            " FROM clips WHERE id = %s",
            [updated_at, clip_id],
        ).fetchone()
    assert matched and newer


def test_snapshot_is_stable_and_sees_a_changed_row(uuid_site: SiteDatabase) -> None:
    first = uuid_site.snapshot()
    assert uuid_site.snapshot() == first
    assert first.schema.count("\nindex clips.") >= 40 and "MISSING" not in first.schema
    with uuid_site.connect(autocommit=True) as conn:
        conn.execute(
            "UPDATE clips SET view_count = view_count + 1 WHERE id ="
            " (SELECT id FROM clips ORDER BY id DESC LIMIT 1)"
        )
    changed = uuid_site.snapshot()
    assert changed.schema == first.schema
    changed_tables = [
        new[0] for new, old in zip(changed.rows, first.rows, strict=True) if new != old
    ]
    assert changed_tables == ["clips"]


def test_snapshot_leaves_out_what_a_tool_adds(uuid_site: SiteDatabase) -> None:
    before = uuid_site.snapshot()
    ignoring_updated_at = uuid_site.rows_snapshot(ignore={"clips.updated_at"})
    first_id = "(SELECT id FROM clips ORDER BY id LIMIT 1)"
    with uuid_site.connect(autocommit=True) as conn:
        conn.execute("ALTER TABLE clips ADD COLUMN tool_note text")
        conn.execute("CREATE INDEX tool_index ON clips (tool_note)")
        try:
            # The site's triggers off, as for a replica: its BEFORE UPDATE trigger would bump
            # `updated_at` (below).
            conn.execute("SET session_replication_role = replica")
            conn.execute(f"UPDATE clips SET tool_note = 'x' WHERE id = {first_id}")
            assert uuid_site.snapshot().rows == before.rows
            assert uuid_site.schema_snapshot() == before.schema
            assert uuid_site.added_objects() == ["column clips.tool_note", "index clips.tool_index"]
            assert "tool_index" in uuid_site.schema_snapshot(everything=True)

            # An UPDATE of a tool's column alone still changes a site column: `updated_at`.
            conn.execute("SET session_replication_role = origin")
            conn.execute(f"UPDATE clips SET tool_note = 'y' WHERE id = {first_id}")
            assert uuid_site.rows_snapshot() != before.rows
            assert uuid_site.rows_snapshot(ignore={"clips.updated_at"}) == ignoring_updated_at

            conn.execute("DROP INDEX idx_clips_game_vote")
            assert "index clips.idx_clips_game_vote: MISSING" in uuid_site.schema_snapshot()
        finally:
            conn.execute("ALTER TABLE clips DROP COLUMN tool_note")
            conn.execute(
                "CREATE INDEX IF NOT EXISTS idx_clips_game_vote ON clips (game_id, vote_score DESC)"
            )
    after = uuid_site.schema_snapshot()
    assert after != before.schema  # the index was rebuilt: a new relfilenode
    assert "MISSING" not in after and uuid_site.added_objects() == []


def test_pg_dump_is_stable_when_available(uuid_site: SiteDatabase) -> None:
    dump = uuid_site.pg_dump_schema()
    if dump is None:
        pytest.skip("no pg_dump")
    assert "CREATE TABLE public.clips" in dump and dump == uuid_site.pg_dump_schema()


def test_its_url_is_a_database_url(uuid_site: SiteDatabase) -> None:
    config = database_config(uuid_site.url)
    assert config["NAME"] == uuid_site.name
    with psycopg.connect(uuid_site.url) as conn:
        assert conn.info.dbname == uuid_site.name


def test_site_writer_times_its_statements(uuid_site: SiteDatabase) -> None:
    before = uuid_site.counts()["clips"]
    with SiteWriter(uuid_site.url, interval=0.05) as writer:
        time.sleep(0.5)
        # Something holding the table: the writer's next statement waits it out.
        with uuid_site.connect() as holder:
            holder.execute("LOCK TABLE clips IN ACCESS EXCLUSIVE MODE")
            time.sleep(0.6)
        time.sleep(0.3)
    assert not writer.errors
    assert len(writer.inserted_ids) >= 10 and len(writer.updated_ids) >= 10
    assert len(writer.waits) == len(writer.inserted_ids) + len(writer.updated_ids)
    assert 0.4 < writer.max_wait < 5
    assert uuid_site.counts()["clips"] == before + len(writer.inserted_ids)


def test_site_writer_stops_by_itself(uuid_site: SiteDatabase) -> None:
    writer = SiteWriter(uuid_site.url, interval=0.05, max_seconds=0.3).start()
    deadline = time.monotonic() + 10
    while writer.running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    writer.stop()
    assert 2 <= len(writer.inserted_ids) <= 10


def test_bigint_site_and_its_database_is_dropped(django_db_setup) -> None:
    with site_database(2_000, key="bigint", with_vectors=0.25, dimensions=64) as site:
        counts = site.counts()
        assert counts["clips"] == 2_000 and counts["clips_with_vectors"] == 500
        with site.connect(autocommit=True) as conn:
            types = dict(
                conn.execute(
                    "SELECT attrelid::regclass::text, format_type(atttypid, atttypmod)"
                    " FROM pg_attribute WHERE attname IN ('id', 'clip_id')"
                    " AND attrelid IN ('clips'::regclass, 'clip_votes'::regclass)"
                    " AND (attrelid, attname) <> ('clip_votes'::regclass, 'id')"
                ).fetchall()
            )
            assert types == {"clips": "bigint", "clip_votes": "bigint"}
            # Identity keys in creation order, as the site's own inserts made them.
            assert conn.execute(
                "SELECT min(id), max(id), bool_and(created_at >= prev) FROM"
                " (SELECT id, created_at, lag(created_at, 1, '-infinity') OVER (ORDER BY id)"
                " AS prev FROM clips) t"
            ).fetchone() == (1, 2_000, True)
            assert "vector(64)" in site.schema_snapshot()
        first = site.snapshot()
        assert site.snapshot() == first
        with SiteWriter(site.url) as writer:
            time.sleep(0.3)
        assert all(isinstance(clip_id, int) for clip_id in writer.inserted_ids)
    with psycopg.connect(site.admin_url, autocommit=True) as conn:
        gone = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [site.name])
        assert gone.fetchone() is None
