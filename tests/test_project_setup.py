"""The ground everything stands on: settings, the clip text, the schema, the embedded database."""

import io
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from embeddings.app_settings import embedding_settings
from embeddings.backfill.preflight import vector_column_dimensions
from embeddings.clip_text import text_hash
from embeddings.models import Clip
from project.embedded_postgres import embedded_database_url, stop_embedded_database
from project.settings import database_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("url", "host", "port", "name", "user"),
    [
        ("postgresql://u@/clips?host=/var/run/postgresql", "/var/run/postgresql", "", "clips", "u"),
        ("postgresql:///clips?host=/tmp/pg&port=5433", "/tmp/pg", 5433, "clips", ""),
        ("postgres://%2Fvar%2Frun%2Fpostgresql/clips", "/var/run/postgresql", "", "clips", ""),
        ("postgresql://u:p@db.example.com:6543/clips", "db.example.com", 6543, "clips", "u"),
    ],
)
def test_database_urls_with_sockets_hosts_and_ports(url, host, port, name, user):
    config = database_config(url)

    assert (config["HOST"], config["PORT"], config["NAME"], config["USER"]) == (
        host,
        port,
        name,
        user,
    )
    assert "host" not in config.get("OPTIONS", {})
    assert config["ENGINE"] == "django.db.backends.postgresql"


def test_query_options_other_than_the_socket_stay_options():
    config = database_config("postgresql://u@localhost/clips?sslmode=require")

    assert config["OPTIONS"] == {"sslmode": "require"}


def test_contract_defaults(settings):
    config = embedding_settings()

    assert config.model == "text-embedding-3-small"
    assert config.dimensions == 768
    assert config.requests_per_minute == 500
    assert config.tokens_per_minute == 1_000_000
    assert config.cache_ttl == 2_592_000
    assert (config.schedule_minutes, config.schedule_lookback_days, config.schedule_limit) == (
        360,
        7,
        100,
    )
    assert config.sends_dimensions is True
    settings.EMBEDDING_MODEL = "text-embedding-ada-002"
    assert embedding_settings().sends_dimensions is False


def test_the_settings_repr_never_shows_the_key(settings):
    settings.OPENAI_API_KEY = "sk-visible.if-leaked-123"

    assert "sk-visible" not in repr(embedding_settings())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (
            {
                "title": "Ace",
                "broadcaster_name": "tenz",
                "creator_name": "fan",
                "game_name": "Valorant",
            },
            "Title: Ace. Broadcaster: tenz. Clipped by: fan. Game: Valorant",
        ),
        (
            {
                "title": "Ace",
                "broadcaster_name": "tenz",
                "creator_name": "tenz",
                "game_name": "Valorant",
            },
            "Title: Ace. Broadcaster: tenz. Game: Valorant",
        ),
        (
            {"title": "Ace", "broadcaster_name": "tenz", "creator_name": "fan"},
            "Title: Ace. Broadcaster: tenz. Clipped by: fan",
        ),
        (
            {"title": "  ", "broadcaster_name": "tenz", "creator_name": "", "game_name": ""},
            "Broadcaster: tenz",
        ),
        ({"title": "", "broadcaster_name": "", "creator_name": "", "game_name": None}, ""),
    ],
)
def test_the_text_of_a_clip(fields, text):
    clip = Clip.objects.create(twitch_clip_id="c1", **fields)

    stored = Clip.objects.with_text().get(pk=clip.pk)

    assert stored.text == text
    assert stored.text_hash == text_hash(text)


@pytest.mark.django_db
def test_a_clip_with_only_the_required_fields_saves():
    clip = Clip.objects.create(
        twitch_clip_id="AwkwardHelplessSalamander",
        title="t",
        broadcaster_name="b",
        creator_name="c",
    )

    clip.refresh_from_db()
    assert clip.is_removed is False
    assert clip.created_at is not None
    assert clip.embedding is None and clip.embedding_model is None


@pytest.mark.django_db
def test_migrations_make_a_768_vector_column_with_an_hnsw_cosine_index():
    assert vector_column_dimensions() == 768
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'clips_embedding_hnsw'")
        (definition,) = cursor.fetchone()
    assert "USING hnsw (embedding vector_cosine_ops)" in definition
    assert "m='16'" in definition and "ef_construction='64'" in definition


@pytest.mark.django_db
def test_models_and_migrations_agree():
    call_command("makemigrations", "--check", "--dry-run", stdout=io.StringIO())


def test_the_embedded_database_starts_once_and_is_reused_by_concurrent_processes(tmp_path):
    pgdata = tmp_path / "pg"
    script = (
        "import sys; from pathlib import Path; "
        "from project.embedded_postgres import embedded_database_url as u; "
        "print(u(Path(sys.argv[1])))"
    )
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(pgdata)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        results = [p.communicate(timeout=120) for p in processes]
        urls = {out.strip() for out, _ in results}
        assert len(urls) == 1, results
        assert sum("started" in err for _, err in results) == 1
        url = urls.pop()
        assert url.startswith("postgresql://") and str(pgdata) in url

        assert embedded_database_url(pgdata) == url  # reused, still running after they exited
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            assert version.fetchone()[0].startswith("0.8")
    finally:
        stop_embedded_database(pgdata)
    assert stop_embedded_database(pgdata) is False
