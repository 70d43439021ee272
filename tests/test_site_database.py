"""The tool moves into a site's own database: `migrate` takes the site's `clips` in without
stalling its writers or changing its rows, the first backfill keeps the site's vectors that a
sample shows right, everything works on a UUID key and naive timestamps, and
`migrate embeddings zero` gives the site back its table as it was.

The site's database is built as a site builds it: raw SQL DDL and raw SQL writers
(tests/support/site_database.py), never the tool's ORM.
"""

import json

import numpy as np
import pytest
from pgvector.psycopg import register_vector

from tests.support.openai_server import FakeOpenAIServer, expected_vector
from tests.support.site_commands import CONTRACT_TEXT, manage, query
from tests.support.site_database import SiteDatabase, SiteWriter, site_database

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


def give_right_vectors(site: SiteDatabase, model: str, share_of_clips: int) -> int:
    """The site's own backend made vectors of `model` for every `share_of_clips`-th clip, from
    their present text (what the test server answers for that text)."""
    with site.connect(autocommit=True) as conn:
        register_vector(conn)
        rows = conn.execute(
            f"SELECT id, {CONTRACT_TEXT} FROM clips WHERE embedding IS NULL ORDER BY id"
        ).fetchall()[::share_of_clips]
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE clips SET embedding = %s, embedding_model = %s,"
                " embedding_generated_at = now() WHERE id = %s",
                [(expected_vector(text, 768).astype(np.float32), model, id_) for id_, text in rows],
            )
    return len(rows)


def added_by_the_tool(site: SiteDatabase) -> list[str]:
    """What is on the site's tables that the site did not make, and the tool's own tables
    (Django's and django-q2's tables beside them are not the tool's to remove)."""
    return [
        name
        for name in site.added_objects()
        if not name.startswith("table ") or name.startswith(("table embedding", "table clip"))
    ]


def test_migrate_takes_in_a_busy_site_table_and_zero_gives_it_back_as_it_was(site_env):
    with site_database(clips=20_000, key="uuid", with_vectors=0.3) as site:
        before, rows_before = site.snapshot(), site.clip_digests()
        env = site_env(site)
        writer = SiteWriter(site.url, interval=0.1).start()
        try:
            code, output = manage(env, "migrate", "--noinput")
        finally:
            writer.stop()
        assert code == 0, output
        assert not writer.errors
        assert len(writer.statements) >= 10  # the site wrote all through the migrate
        assert writer.max_wait < 2.0, f"a site write waited {writer.max_wait:.2f}s"
        # The rows the site wrote meanwhile aside, no site column of any row changed.
        touched = {*writer.inserted_ids, *writer.updated_ids}
        after = site.clip_digests()
        changed = [
            i for i, digest in rows_before.items() if after[i] != digest and i not in touched
        ]
        assert changed == []
        assert site.schema_snapshot() == before.schema
        invalid = query(
            site,
            "SELECT count(*) FROM pg_index WHERE indrelid = 'clips'::regclass AND NOT indisvalid",
        )
        assert invalid == [(0,)]

        code, output = manage(env, "migrate", "embeddings", "zero", "--noinput")
        assert code == 0, output
        assert site.schema_snapshot() == before.schema
        assert site.clip_digests() == after
        assert added_by_the_tool(site) == []


def test_a_vector_size_other_than_the_sites_is_one_line_and_exit_2(site_env):
    with site_database(clips=500, key="uuid") as site:
        before = site.snapshot()
        env = {**site_env(site), "EMBEDDING_DIMENSIONS": "1536"}
        code, output = manage(env, "migrate", "--noinput")
        assert code == 2, output
        assert "Traceback" not in output
        assert "EMBEDDING_DIMENSIONS=768" in output and "vector(768)" in output
        assert site.snapshot() == before
        assert added_by_the_tool(site) == []


def test_the_first_backfill_keeps_the_sites_right_vectors_and_replaces_the_rest(
    site_env, openai_server: FakeOpenAIServer
):
    with site_database(clips=3_000, key="uuid", other_vectors=0.1, other_model="old-model") as site:
        env = site_env(site)
        model = env["EMBEDDING_MODEL"]
        kept = give_right_vectors(site, model, share_of_clips=2)
        assert manage(env, "migrate", "--noinput")[0] == 0
        live = query(site, "SELECT count(*) FROM clips WHERE is_removed = false")[0][0]
        labelled_live = query(
            site,
            f"SELECT count(*) FROM clips WHERE is_removed = false AND embedding_model = '{model}'",
        )[0][0]

        code, estimate = manage(env, "backfill_embeddings", "--estimate")
        assert code == 0, estimate
        assert "The site's own vectors:" in estimate and "replaced" in estimate

        code, output = manage(env, "backfill_embeddings")
        assert code == 0, output
        sample = min(labelled_live, 100 + labelled_live // 20, 1000)
        inputs = openai_server.stats.inputs_received
        assert inputs <= live - labelled_live + sample, output
        assert inputs >= live - labelled_live  # the missing and the other model's were bought
        assert "kept" in output
        assert kept > 0

        # The old tool's monitoring SQL gives the right numbers; every vector is the right one.
        assert query(
            site, "SELECT count(*) FROM clips WHERE is_removed = false AND embedding IS NULL"
        ) == [(0,)]
        rows = query(
            site,
            f"SELECT {CONTRACT_TEXT}, embedding::text, embedding_model FROM clips"
            " WHERE is_removed = false ORDER BY random() LIMIT 200",
        )
        for text, vector, label in rows:
            got = np.array(vector.strip("[]").split(","), dtype=np.float32)
            assert np.allclose(got, expected_vector(text, 768), atol=1e-5)
            assert label == model

        code, again = manage(env, "backfill_embeddings")
        assert code == 0 and "Total clips: 0" in again, again


def test_a_sample_that_disagrees_says_so_and_every_site_vector_is_replaced(
    site_env, openai_server: FakeOpenAIServer
):
    with site_database(clips=1_500, key="bigint") as site:
        env = site_env(site)
        model = env["EMBEDDING_MODEL"]
        # Vectors labelled with the model but made from other text: the sample must catch them.
        with site.connect(autocommit=True) as conn:
            register_vector(conn)
            conn.execute(
                "UPDATE clips SET embedding_model = %s, embedding_generated_at = now(),"
                " embedding = (SELECT embedding FROM clips WHERE false)",
                [model],
            )
            ids = [row[0] for row in conn.execute("SELECT id FROM clips ORDER BY id")]
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE clips SET embedding = %s WHERE id = %s",
                    [(expected_vector(f"other text {i}", 768).astype(np.float32), i) for i in ids],
                )
        assert manage(env, "migrate", "--noinput")[0] == 0
        code, output = manage(env, "backfill_embeddings")
        assert code == 0, output
        assert "disagree" in output and "replaced" in output
        live = query(site, "SELECT count(*) FROM clips WHERE is_removed = false")[0][0]
        assert openai_server.stats.inputs_received >= live
        rows = query(
            site,
            f"SELECT {CONTRACT_TEXT}, embedding::text FROM clips WHERE is_removed = false LIMIT 50",
        )
        for text, vector in rows:
            got = np.array(vector.strip("[]").split(","), dtype=np.float32)
            assert np.allclose(got, expected_vector(text, 768), atol=1e-5)


def test_every_door_works_on_a_uuid_key_and_naive_timestamps(site_env):
    with site_database(clips=6_000, key="uuid") as site:
        env = site_env(site)
        assert manage(env, "migrate", "--noinput")[0] == 0
        definition = query(site, "SELECT pg_get_indexdef('idx_clips_embedding_hnsw'::regclass)")[0][
            0
        ]

        # --since over a naive TIMESTAMP column: the last 7 days of 60.
        code, output = manage(env, "backfill_embeddings", "--since", "7d", "--json")
        assert code == 0, output
        recent = query(
            site,
            "SELECT count(*) FROM clips WHERE is_removed = false"
            " AND created_at >= (now() AT TIME ZONE 'UTC') - interval '7 days'",
        )[0][0]
        assert f'"processed": {recent}' in output

        # A first fill of the rest drops the site's HNSW index and brings it back as it was.
        code, output = manage(env, "backfill_embeddings", "--rebuild-index")
        assert code == 0, output
        assert "index=rebuild" in output
        assert query(site, "SELECT pg_get_indexdef('idx_clips_embedding_hnsw'::regclass)") == [
            (definition,)
        ]
        assert query(site, "SELECT count(*) FROM embedding_owed_indexes") == [(0,)]
        assert query(
            site, "SELECT count(*) FROM clips WHERE is_removed = false AND embedding IS NULL"
        ) == [(0,)]

        # The test server's vectors are a function of the exact text: a clip's own text finds
        # it by vector, and in hybrid search by its words and its broadcaster's name too.
        title, text = query(
            site,
            f"SELECT min(title), min({CONTRACT_TEXT}) FROM clips WHERE is_removed = false"
            " GROUP BY title HAVING count(*) = 1 LIMIT 1",
        )[0]
        for mode in ("vector", "hybrid"):
            code, output = manage(env, "search_clips", text, "--mode", mode, "-k", "3", "--json")
            assert code == 0, output
            assert title in [hit["title"] for hit in json.loads(output)], output

        code, output = manage(env, "load_demo_clips", "--count", "10")
        assert code == 2 and "site's own table" in output and "Traceback" not in output


def test_migrate_and_backfill_on_a_bigint_site_table(site_env):
    with site_database(
        clips=2_000, key="bigint", with_vectors=0.2, model="some-other-model"
    ) as site:
        env = site_env(site)
        assert manage(env, "migrate", "--noinput")[0] == 0
        code, output = manage(env, "backfill_embeddings")
        assert code == 0, output
        assert query(
            site, "SELECT count(*) FROM clips WHERE is_removed = false AND embedding IS NULL"
        ) == [(0,)]
        assert manage(env, "migrate", "embeddings", "zero", "--noinput")[0] == 0
        assert added_by_the_tool(site) == []
        assert query(site, "SELECT count(*) FROM clips WHERE embedding IS NOT NULL")[0][0] > 0
