"""Switching the served version: search answers right throughout, in every process, whatever
settings it was started with; clips written meanwhile end up in the new version; switching
back costs no API call; a 3,072-dimension version is stored and indexed as halfvec."""

import json
import subprocess
import sys

import pytest
from django.db import connection, transaction

from embeddings.models import Clip, EmbeddingVersion, embedding_column_type
from embeddings.search.vector import SEARCH_SETTINGS_SQL
from tests.support.assertions import assert_every_live_clip_right
from tests.support.clips import make_clips
from tests.support.commands import (
    ROOT,
    finish,
    start_backfill,
    start_command,
    start_searcher,
    stop_searcher,
)
from tests.support.database import restore_migrated_column
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def clips_column_back_as_migrated():
    yield
    restore_migrated_column()


def start_switch(env: dict[str, str], *args: str) -> subprocess.Popen:
    return start_command(env, "switch_embeddings", *args)


def building() -> bool:
    return EmbeddingVersion.objects.filter(
        state=EmbeddingVersion.State.BUILDING, phase=EmbeddingVersion.Phase.FILLING
    ).exists()


def test_a_web_server_started_before_a_switch_answers_right_through_it_and_back(
    command_env, openai_server, tmp_path
):
    old_model, new_model = command_env["EMBEDDING_MODEL"], f"{command_env['EMBEDDING_MODEL']}-new"
    clips = make_clips(300, removed_every=25)
    code, output = finish(start_backfill(command_env))
    assert code == 0, output
    searcher = start_searcher(command_env, [c.pk for c in clips if not c.is_removed][:40], tmp_path)
    try:
        # Slow enough (requests of 50, one at a time) for clips to arrive during the build.
        openai_server.update_faults(latency_ms=700)
        switch_env = {**command_env, "EMBEDDING_MAX_INPUTS_PER_REQUEST": "50"}
        switch = start_switch(
            switch_env, "--model", new_model, "--dimensions", "384", "--concurrency", "1"
        )
        wait_for(building, 60)
        during = Clip.objects.bulk_create(
            Clip(
                twitch_clip_id=f"during-{n}",
                title=f"Made mid-switch {n}",
                broadcaster_name="late",
                creator_name="late",
            )
            for n in range(10)
        )
        # What live sync does for them meanwhile: vectors of the served (old) version.
        code, output = finish(start_backfill(command_env))
        assert code == 0 and "Processed: 10" in output, output
        code, output = finish(switch, timeout=300)
        assert code == 0, output

        assert embedding_column_type() == ("vector", 384)
        assert_every_live_clip_right(new_model, dimensions=384)
        assert (
            Clip.objects.filter(pk__in=[c.pk for c in during], embedding__isnull=False).count()
            == 10
        )

        openai_server.update_faults(latency_ms=0)
        requests = openai_server.stats.requests
        code, output = finish(
            start_switch(command_env, "--model", old_model, "--dimensions", "768")
        )
        assert code == 0, output
        assert openai_server.stats.requests == requests  # every vector came from the cache
        assert_every_live_clip_right(old_model, dimensions=768)
    finally:
        report = stop_searcher(searcher, tmp_path)
    assert report["wrong"] == [], report["wrong"][:5]
    assert report["searches"] >= 10, report


def test_status_shows_the_served_and_the_retired_versions(command_env):
    make_clips(20)
    assert finish(start_backfill(command_env))[0] == 0
    code, output = finish(
        start_switch(command_env, "--model", "other-model", "--dimensions", "768")
    )
    assert code == 0, output

    status = subprocess.run(
        [sys.executable, "manage.py", "switch_embeddings", "--status", "--json"],
        cwd=ROOT,
        env=command_env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    versions = json.loads(status.stdout)["versions"]
    assert [(v["model"], v["state"]) for v in versions] == [
        ("other-model", "served"),
        (command_env["EMBEDDING_MODEL"], "retired"),
    ]


def test_a_3072_dimension_version_is_stored_and_indexed_as_halfvec(command_env, openai_server):
    openai_server.update_faults(native_dimensions=3072)  # as text-embedding-3-large
    make_clips(120, removed_every=10)
    code, output = finish(
        start_switch(
            command_env,
            "--model",
            "text-embedding-3-large",
            "--dimensions",
            "3072",
            "--storage",
            "halfvec",
        )
    )
    assert code == 0, output

    assert embedding_column_type() == ("halfvec", 3072)
    text = Clip.objects.live().with_text().values_list("text", flat=True).first()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(SEARCH_SETTINGS_SQL, ["40"])
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'clips_embedding_hnsw'")
        assert "halfvec_cosine_ops" in cursor.fetchone()[0]
        cursor.execute(
            "EXPLAIN SELECT id FROM clips ORDER BY embedding <=> "
            "(SELECT embedding FROM clips WHERE embedding IS NOT NULL LIMIT 1) LIMIT 5"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using clips_embedding_hnsw" in plan, plan
    found = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "search_clips",
            text,
            "--mode",
            "vector",
            "--json",
            "-k",
            "3",
        ],
        cwd=ROOT,
        env=command_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    first = json.loads(found.stdout)[0]
    assert first["distance"] == pytest.approx(0, abs=2e-3)  # half precision
