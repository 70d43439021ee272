"""Every door of the tool works on a site's adopted `clips` (a UUID key, a naive `created_at
TIMESTAMP`, ~40 columns and indexes of the site's own, NOT NULL columns only the site fills):
a switch to another model and size, a bulk run, the Batch API, the admin and `/metrics`, live
sync from a real `qcluster`, and the scheduled run's 7-day window.

The site's database is built by raw SQL (tests/support/site_database.py) and written by raw
psycopg, as the site's own backend writes it; the tool runs as `manage.py` subprocesses on it.
"""

import html
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
import pytest
from psycopg import sql

from embeddings.live_sync import listener_application_name
from tests.support.cluster import running_cluster
from tests.support.openai_server import FakeOpenAIServer, expected_vector
from tests.support.save_stream import percentile
from tests.support.site_commands import CONTRACT_TEXT, as_array, manage, query
from tests.support.site_database import HNSW_INDEX, SiteDatabase, site_database
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

LAG_P95_TARGET = 5.0
# A clip holds a vector of its present text, by this model at this size (the site's own
# vectors aside: these sites have none).
CURRENT = (
    "embedding IS NOT NULL AND embedding_model = %(model)s"
    " AND embedding_dimensions = %(dimensions)s AND embedding_text_hash = text_hash"
)


@contextmanager
def adopted_site(site_env, clips: int, **build) -> Iterator[tuple[SiteDatabase, dict[str, str]]]:
    """A site's database with a UUID key and naive timestamps, taken in by `migrate`."""
    with site_database(clips=clips, key="uuid", **build) as site:
        env = site_env(site)
        code, output = manage(env, "migrate", "--noinput")
        assert code == 0, output
        yield site, env


def run_json(env: dict[str, str], *args: str) -> dict:
    code, output = manage(env, "backfill_embeddings", "--json", *args)
    assert code == 0, output
    return json.loads(output[output.index("{") : output.rindex("}") + 1])


def live_and_current(site: SiteDatabase, model: str, dimensions: int) -> tuple[int, int]:
    return query(
        site,
        f"SELECT count(*), count(*) FILTER (WHERE {CURRENT}) FROM clips WHERE is_removed = false",
        {"model": model, "dimensions": dimensions},
    )[0]


def assert_every_live_clip_current(
    site: SiteDatabase, model: str, dimensions: int, *, sample: int = 200
) -> None:
    """Every live clip holds a vector of its present text, model and size, and a random sample
    of them is the test server's vector of the contract's text."""
    live, current = live_and_current(site, model, dimensions)
    assert current == live
    rows = query(
        site,
        f"SELECT {CONTRACT_TEXT}, embedding::text FROM clips WHERE is_removed = false"
        " ORDER BY random() LIMIT %(sample)s",
        {"sample": sample},
    )
    tolerance = 2e-3 if column_type(site).startswith("halfvec") else 1e-5
    for text, vector in rows:
        assert np.allclose(as_array(vector), expected_vector(text, dimensions), atol=tolerance)


def column_type(site: SiteDatabase) -> str:
    """The type of the site's `clips.embedding`, as `format_type` spells it."""
    return query(
        site,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = 'clips'::regclass AND attname = 'embedding'",
    )[0][0]


def clip_indexes(site: SiteDatabase) -> dict[str, tuple[str, bool]]:
    """Every index of clips: its definition, and whether it is valid."""
    return dict(
        (name, (definition, valid))
        for name, definition, valid in query(
            site,
            "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'clips'::regclass",
        )
    )


def assert_indexes_back(site: SiteDatabase, before: dict[str, tuple[str, bool]], storage: str):
    """The same indexes of clips under the same names, all valid, each defined as before (the
    operator class aside, for a column now of another storage); nothing owed."""
    expected = {
        name: (re.sub(r"\bvector_cosine_ops\b", f"{storage}_cosine_ops", definition), True)
        for name, (definition, _) in before.items()
    }
    assert clip_indexes(site) == expected
    assert query(site, "SELECT count(*) FROM embedding_owed_indexes") == [(0,)]


def test_a_switch_serves_other_models_and_sizes_from_the_sites_own_column(
    site_env, openai_server: FakeOpenAIServer
):
    # Straight after adoption: no row written by the tool yet, half with the site's vectors.
    with adopted_site(site_env, 600, with_vectors=0.5) as (site, env):
        live = live_and_current(site, env["EMBEDDING_MODEL"], 768)[0]
        before = clip_indexes(site)
        assert before[HNSW_INDEX][1]

        other = f"{env['EMBEDDING_MODEL']}-other"
        for model, dimensions, storage in ((other, 768, "vector"), (other, 256, "halfvec")):
            inputs = openai_server.stats.inputs_received
            code, output = manage(
                env,
                "switch_embeddings",
                "--model",
                model,
                "--dimensions",
                str(dimensions),
                "--storage",
                storage,
            )
            assert code == 0, output
            assert f"embedded {live}," in output  # each live clip once, in one pass
            assert openai_server.stats.inputs_received - inputs == live
            assert column_type(site) == f"{storage}({dimensions})"
            assert_every_live_clip_current(site, model, dimensions)
            labels = query(
                site,
                "SELECT DISTINCT embedding_model FROM clips WHERE is_removed = false",
            )
            assert labels == [(model,)]
            assert_indexes_back(site, before, storage)
        assert query(site, "SELECT count(*) FROM clip_vector_builds") == [(0,)]


def test_a_bulk_run_rewrites_the_sites_column_and_gives_its_index_back(site_env):
    with adopted_site(site_env, 600) as (site, env):
        env = {**env, "EMBEDDING_BULK_MIN_CLIPS": "50"}
        model = env["EMBEDDING_MODEL"]
        assert run_json(env)["index_mode"] == "rebuild"  # a first fill: nothing to serve yet
        before = clip_indexes(site)
        # The site's backend retitles half its clips: a large run over an index serving many.
        edited = query(
            site,
            "UPDATE clips SET title = title || ' (remastered)'"
            " WHERE is_removed = false AND hashtext(id::text) % 2 = 0 RETURNING id",
        )
        assert len(edited) > 0.2 * live_and_current(site, model, 768)[0]

        summary = run_json(env)

        assert summary["index_mode"] == "bulk", summary
        assert summary["processed"] == len(edited)
        assert_every_live_clip_current(site, model, 768)
        assert_indexes_back(site, before, "vector")
        assert query(site, "SELECT count(*) FROM clip_vector_builds") == [(0,)]


def test_the_batch_api_embeds_every_live_clip_of_the_sites_table(
    site_env, openai_server: FakeOpenAIServer
):
    with adopted_site(site_env, 600) as (site, env):
        # Requests of 100 inputs: a batch of several lines, each naming a range of UUIDs.
        env = {
            **env,
            "EMBEDDING_BATCH_POLL_SECONDS": "0.05",
            "EMBEDDING_MAX_INPUTS_PER_REQUEST": "100",
        }
        openai_server.update_faults(batch_seconds=0.2)

        code, output = manage(env, "backfill_embeddings", "--batch-api", "--wait")

        assert code == 0, output
        assert openai_server.stats.requests == 0, "an embedding was asked for online"
        assert set(openai_server.batch_stats.answered.values()) == {1}
        assert_every_live_clip_current(site, env["EMBEDDING_MODEL"], 768)
        assert query(site, "SELECT count(*) FROM embedding_batch_clips") == [(0,)]


# Django's test client in a `manage.py shell` on the site's database: a superuser logs in and
# GETs each path of SITE_PATHS (following redirects); one JSON line of what each answered.
ADMIN_SCRIPT = """
import json, os
from django.contrib.auth import get_user_model
from django.test import Client

get_user_model().objects.create_superuser("site-admin", "admin@example.com", "pass-word-1")
client = Client(SERVER_NAME="localhost")
assert client.login(username="site-admin", password="pass-word-1")
pages = {}
for path in json.loads(os.environ["SITE_PATHS"]):
    response = client.get(path, follow=True)
    pages[path] = {
        "status": response.status_code,
        "redirects": response.redirect_chain,
        "body": response.content.decode(),
    }
print("PAGES " + json.dumps(pages))
"""


def number(page: str, element_id: str) -> int:
    match = re.search(rf'id="{element_id}">([^<]*)<', page)
    assert match, element_id
    return int(match.group(1).replace(",", ""))


def linked_clips(page: str) -> set[str]:
    """The ids of the clips whose change pages `page` links to."""
    return set(re.findall(r'href="/admin/embeddings/clip/([0-9a-f-]{36})/change/', page))


def gauge(metrics: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def test_the_admin_and_metrics_serve_the_sites_table(site_env):
    with adopted_site(site_env, 600) as (site, env):
        model = env["EMBEDDING_MODEL"]
        assert run_json(env, "--since", "20d")["failed"] == 0  # a third of the clips
        # The site retitles some embedded clips: their vectors are stale.
        edited = query(
            site,
            "UPDATE clips SET title = title || ' (edited)' WHERE id IN (SELECT id FROM clips"
            " WHERE embedding IS NOT NULL ORDER BY id LIMIT 40) RETURNING id",
        )
        counts = {"model": model, "dimensions": 768}
        live, current, stale, never, removed = query(
            site,
            f"SELECT count(*) FILTER (WHERE is_removed = false),"
            f" count(*) FILTER (WHERE is_removed = false AND {CURRENT}),"
            f" count(*) FILTER (WHERE is_removed = false AND embedding IS NOT NULL"
            f"   AND NOT ({CURRENT})),"
            " count(*) FILTER (WHERE is_removed = false AND embedding IS NULL),"
            " count(*) FILTER (WHERE is_removed = true) FROM clips",
            counts,
        )[0]
        assert 0 < current < live and stale == 40 and never > 0
        current_ids = query(
            site, f"SELECT id FROM clips WHERE is_removed = false AND {CURRENT}", counts
        )
        clip_id, title, text, slug = query(
            site,
            f"SELECT id, title, {CONTRACT_TEXT}, twitch_clip_id FROM clips"
            f" WHERE is_removed = false AND {CURRENT} ORDER BY id LIMIT 1",
            counts,
        )[0]
        admin = "/admin/embeddings/clip/"
        paths = [
            f"{admin}coverage/",
            admin,
            f"{admin}?is_removed__exact=0&stale=yes",
            f"{admin}?q={slug}",
            f"{admin}{clip_id}/change/",
            f"{admin}add/",
            "/metrics",
        ]

        code, output = manage({**env, "SITE_PATHS": json.dumps(paths)}, "shell", "-c", ADMIN_SCRIPT)

        assert code == 0, output
        pages = json.loads(output[output.index("PAGES ") + 6 :].splitlines()[0])
        coverage, changelist, stale_list, found, change, add, metrics = (pages[p] for p in paths)
        assert coverage["status"] == 200 and not coverage["redirects"]
        page = coverage["body"]
        assert number(page, "coverage-live") == live
        assert number(page, "coverage-current") == current
        assert number(page, "coverage-stale") == stale
        assert number(page, "coverage-never") == never
        assert number(page, "coverage-missing") == live - current
        assert number(page, "coverage-removed") == removed

        for page in (changelist, stale_list, found):
            assert page["status"] == 200 and not page["redirects"]
        assert len(linked_clips(changelist["body"])) == 100  # a full first page
        assert linked_clips(changelist["body"]) <= {
            str(i) for (i,) in query(site, "SELECT id FROM clips")
        }
        assert linked_clips(stale_list["body"]) == {str(i) for (i,) in edited}
        assert linked_clips(found["body"]) == {str(clip_id)}

        assert change["status"] == 200 and not change["redirects"]
        body = change["body"]
        assert slug in body and html.escape(title) in body and html.escape(text) in body
        # Its ten nearest clips, by its stored vector: others with a current one.
        nearest = linked_clips(body) - {str(clip_id)}
        assert len(nearest) == 10 and nearest <= {str(i) for (i,) in current_ids}

        assert add["redirects"] == [[admin, 302]]
        assert add["status"] == 200
        assert "Clips cannot be added here" in add["body"]
        assert "twitch_clip_url" in add["body"] and "embed_url" in add["body"]

        assert metrics["status"] == 200
        assert gauge(metrics["body"], "clip_embeddings_live_clips") == live
        assert gauge(metrics["body"], "clip_embeddings_current_clips") == current
        assert gauge(metrics["body"], "clip_embeddings_stale_clips") == stale


def _listeners(site: SiteDatabase, queue: str) -> int:
    return query(
        site,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        " AND query LIKE 'LISTEN %%'",
        [listener_application_name(queue)],
    )[0][0]


def _write_like_the_site(site: SiteDatabase, prefix: str, seconds: float, rate: float = 10):
    """The site's backend on a psycopg connection of its own: `rate` transactions a second,
    INSERTs of new clips (every NOT NULL column the site fills, a naive UTC `created_at`) and
    title UPDATEs of a clip written just before or of one of the site's older clips. The last
    commit time of each clip, by id."""
    committed: dict[object, float] = {}
    with psycopg.connect(site.url) as conn:
        old = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM clips WHERE is_removed = false ORDER BY md5(id::text) LIMIT 20"
            )
        ]
        conn.commit()
        started = time.monotonic()
        for n in range(int(rate * seconds)):
            # Pacing a load generator: the n-th transaction is due at n / rate seconds.
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
            if n % 4 == 3:
                clip = list(committed)[-1] if n % 8 == 3 else old[n % len(old)]
                conn.execute(
                    "UPDATE clips SET title = %s WHERE id = %s",
                    [f"Retitled at {n} by the site", clip],
                )
            else:
                slug = f"{prefix}-{n}"
                (clip,) = conn.execute(
                    "INSERT INTO clips (twitch_clip_id, twitch_clip_url, embed_url, title,"
                    " creator_name, broadcaster_name, game_name, created_at)"
                    " VALUES (%s, %s, %s, %s, 'viewer', 'SpeedyFox', 'Minecraft',"
                    " now() AT TIME ZONE 'UTC') RETURNING id",
                    [
                        slug,
                        f"https://clips.twitch.tv/{slug}",
                        f"https://clips.twitch.tv/embed?clip={slug}",
                        f"New clip {n} of the site",
                    ],
                ).fetchone()
            conn.commit()
            committed[clip] = time.time()
    return committed


def test_live_sync_embeds_the_sites_raw_inserts_and_edits_within_seconds(site_env, unique_prefix):
    with adopted_site(site_env, 300) as (site, env):
        model = env["EMBEDDING_MODEL"]
        assert run_json(env)["failed"] == 0
        # Only the change feed can make it within seconds: no schedule is due for a day.
        query(site, "UPDATE django_q_schedule SET next_run = now() + interval '1 day' RETURNING id")
        env = {**env, "Q_WORKERS": "2"}
        with running_cluster(env):
            wait_for(lambda: _listeners(site, unique_prefix) == 2, 30)
            committed = _write_like_the_site(site, unique_prefix, seconds=4)
            ids = list(committed)

            def all_current() -> bool:
                rows = query(
                    site,
                    f"SELECT count(*) FROM clips WHERE id = ANY(%(ids)s) AND {CURRENT}",
                    {"ids": ids, "model": model, "dimensions": 768},
                )
                return rows[0][0] == len(ids)

            wait_for(all_current, 60)

        made = dict(
            query(
                site,
                "SELECT id, extract(epoch FROM embedding_generated_at AT TIME ZONE 'UTC')::float8"
                " FROM clips WHERE id = ANY(%s)",
                [ids],
            )
        )
        lags = [made[clip] - at for clip, at in committed.items()]
        assert percentile(lags, 0.95) < LAG_P95_TARGET, sorted(lags)
        assert min(lags) > -1.0, sorted(lags)  # each vector made after its commit
        assert_every_live_clip_current(site, model, 768)
        triggers = {
            row[0] for row in query(site, "SELECT DISTINCT trigger FROM embeddings_backfillrun")
        }
        assert "sweep" not in triggers and "schedule" not in triggers


def test_the_scheduled_run_embeds_exactly_the_last_seven_days(site_env):
    with site_database(clips=2_000, key="uuid") as site:
        # The site's server keeps local time far from UTC; its naive columns hold UTC.
        with psycopg.connect(site.admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET timezone = 'Pacific/Kiritimati'").format(
                    sql.Identifier(site.name)
                )
            )
        env = {**site_env(site), "EMBEDDING_SCHEDULE_LIMIT": "100000"}
        assert manage(env, "migrate", "--noinput")[0] == 0
        window = (
            "SELECT array_agg(id) FROM clips WHERE is_removed = false"
            " AND created_at >= (now() AT TIME ZONE 'UTC') - interval '7 days'"
        )
        (before_run,) = query(site, window)[0]

        code, output = manage(
            env,
            "shell",
            "-c",
            "import json; from embeddings.tasks import embed_new_clips;"
            " print('RESULT ' + json.dumps(embed_new_clips()))",
        )

        assert code == 0, output
        (after_run,) = query(site, window)[0]
        embedded = query(site, "SELECT id FROM clips WHERE embedding IS NOT NULL")
        current = query(
            site,
            f"SELECT id FROM clips WHERE {CURRENT}",
            {"model": env["EMBEDDING_MODEL"], "dimensions": 768},
        )
        assert sorted(current) == sorted(embedded)
        # Clips crossing the window's edge while the run ran may go either way.
        assert set(after_run) <= {clip for (clip,) in embedded} <= set(before_run)
        assert 200 < len(after_run) < 260  # 7 of 60 days
        result = json.loads(output[output.index("RESULT ") + 7 :].splitlines()[0])
        assert result["processed"] == len(embedded) and result["failed"] == 0
