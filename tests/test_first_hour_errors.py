"""A new user's first hour, as they meet it: every mistake in a setting or a flag is one line
on stderr naming what to fix, exit 2, no traceback (unless --traceback), no password; a model
or size the database does not serve is named with the command that would serve it.

Every case runs `manage.py` as a real subprocess against the real test database, Redis and
the OpenAI-compatible test server."""

import json
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from urllib.parse import quote

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from embeddings.models import Clip
from tests.support.clips import make_clips
from tests.support.commands import ROOT

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "hunter2-not-shown"
EVERY_COMMAND = [
    ("backfill_embeddings",),
    ("search_clips", "clutch"),
    ("switch_embeddings", "--status"),
    ("resize_embeddings", "--dimensions", "384"),
    ("load_demo_clips", "--count", "5"),
    ("ensure_superuser",),
    ("migrate", "--noinput"),
    ("qcluster",),
    ("runserver", "--noreload", "127.0.0.1:8999"),
]


def closed_port() -> int:
    """A port nothing listens on: bound for a moment by this process, then let go."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def manage_all(env: dict[str, str], commands) -> dict[tuple, subprocess.CompletedProcess]:
    """Each command as its own subprocess, all at once (a user runs them one by one)."""
    started = {
        command: subprocess.Popen(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    }
    done = {}
    for command, process in started.items():
        out, err = process.communicate(timeout=120)
        done[command] = subprocess.CompletedProcess(command, process.returncode, out, err)
    return done


def error_line(result: subprocess.CompletedProcess, *, names: str, secret: str = PASSWORD) -> str:
    """The one line a configuration error prints, after checking the contract around it."""
    everything = result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, everything
    assert len(lines) == 1, everything
    assert "Traceback" not in everything
    assert secret not in everything
    assert names in lines[0], lines[0]
    return lines[0]


def test_an_unreachable_database_is_one_line_naming_database_url_for_every_command(command_env):
    port = closed_port()
    env = {**command_env, "DATABASE_URL": f"postgresql://clips:{PASSWORD}@127.0.0.1:{port}/clips"}

    results = manage_all(env, EVERY_COMMAND)

    for result in results.values():
        line = error_line(result, names="DATABASE_URL")
        assert f"postgresql://clips:***@127.0.0.1:{port}/clips" in line
        assert "Connection refused" in line and "unset DATABASE_URL" in line


def test_a_socket_with_no_server_and_a_database_that_does_not_exist_are_one_line_each(
    command_env, tmp_path
):
    db = connection.settings_dict
    host = quote(db["HOST"]) if db["HOST"].startswith("/") else db["HOST"]
    port = db["PORT"] or 5432
    no_socket = f"postgresql://clips:{PASSWORD}@/clips?host={quote(str(tmp_path))}"
    if db["HOST"].startswith("/"):
        no_database = (
            f"postgresql://{quote(db['USER'])}:{PASSWORD}@/no_such_database?host={host}&port={port}"
        )
    else:
        no_database = f"postgresql://{quote(db['USER'])}:{PASSWORD}@{host}:{port}/no_such_database"

    for url, reason in ((no_socket, "No such file"), (no_database, "no_such_database")):
        result = manage({**command_env, "DATABASE_URL": url}, "search_clips", "clutch")

        assert reason in error_line(result, names="DATABASE_URL")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("not-a-url", "'not-a-url' is not a PostgreSQL URL"),
        (f"postgresql://clips:{PASSWORD}@db.example.com:port/clips", "clips:***@db.example.com"),
        (f"mysql://clips:{PASSWORD}@db.example.com/clips", "is not a PostgreSQL URL"),
        (f"postgresql://clips:{PASSWORD}@db.example.com:5432/", "names no database"),
    ],
)
def test_a_malformed_database_url_is_one_line_whatever_the_command(command_env, url, shown):
    env = {**command_env, "DATABASE_URL": url}

    results = manage_all(env, [*EVERY_COMMAND, ("check",), ("help",)])

    for result in results.values():
        assert shown in error_line(result, names="DATABASE_URL")


def test_traceback_shows_where_a_configuration_error_came_from(command_env):
    env = {**command_env, "DATABASE_URL": f"postgresql://clips@127.0.0.1:{closed_port()}/clips"}

    unreachable = manage(env, "search_clips", "clutch", "--traceback")
    malformed = manage({**env, "DATABASE_URL": "not-a-url"}, "check", "--traceback")

    # Django raises a command's error under --traceback: its exit code is Python's 1.
    assert unreachable.returncode != 0 and "Traceback" in unreachable.stderr
    assert "OperationalError" in unreachable.stderr
    assert "Traceback" in malformed.stderr and "ImproperlyConfigured" in malformed.stderr


def test_a_database_with_no_tables_says_to_migrate(command_env):
    name = f"empty_{uuid.uuid4().hex[:10]}"
    db = connection.settings_dict
    admin = psycopg.connect(
        dbname="postgres",
        host=db["HOST"],
        port=db["PORT"] or None,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        autocommit=True,
    )
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = command_env["DATABASE_URL"].replace(f"/{db['NAME']}", f"/{name}", 1)
        results = manage_all(
            {**command_env, "DATABASE_URL": url},
            [
                ("search_clips", "clutch"),
                ("backfill_embeddings",),
                ("switch_embeddings", "--status"),
            ],
        )
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()

    for result in results.values():
        line = error_line(result, names="manage.py migrate")
        assert "DATABASE_URL" in line


def test_a_closed_redis_port_is_one_line_naming_redis_url_where_redis_is_needed(command_env):
    make_clips(5)
    env = {**command_env, "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/15"}

    enqueue = manage(env, "backfill_embeddings", "--enqueue")
    workers = manage(env, "qcluster")
    malformed = manage({**env, "REDIS_URL": f"localhost:{PASSWORD}"}, "backfill_embeddings")

    assert "redis://:***@127.0.0.1" in error_line(enqueue, names="REDIS_URL")
    assert "Connection refused" in error_line(workers, names="REDIS_URL")
    assert "is not a Redis URL" in error_line(malformed, names="REDIS_URL")


def test_a_bad_endpoint_is_one_line_naming_openai_base_url_at_once(command_env):
    make_clips(5)
    key = command_env["OPENAI_API_KEY"]
    closed = {**command_env, "OPENAI_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1"}
    started = time.monotonic()

    results = manage_all(
        closed,
        [
            ("backfill_embeddings",),
            ("search_clips", "clutch"),
            ("switch_embeddings", "--dimensions", "384"),
        ],
    )
    elapsed = time.monotonic() - started
    malformed = manage({**command_env, "OPENAI_BASE_URL": "not-a-url"}, "backfill_embeddings")

    for result in results.values():
        line = error_line(result, names="OPENAI_BASE_URL", secret=key)
        assert "connection refused" in line
    assert elapsed < 30, "the endpoint is tried once, not request after request"
    assert "not-a-url" in error_line(malformed, names="OPENAI_BASE_URL", secret=key)
    assert Clip.objects.filter(embedding__isnull=False).count() == 0


def test_a_model_or_size_the_database_does_not_serve_is_named_with_the_switch_command(
    command_env, openai_server
):
    make_clips(20)
    served_model = command_env["EMBEDDING_MODEL"]
    assert manage(command_env, "backfill_embeddings").returncode == 0  # serves the settings'

    agreeing = manage(command_env, "switch_embeddings", "--status")
    other = {**command_env, "EMBEDDING_MODEL": "nonsense", "EMBEDDING_DIMENSIONS": "384"}
    results = manage_all(
        other,
        [
            ("backfill_embeddings", "--force", "--limit", "3"),
            ("search_clips", "Clip number 4"),
            ("switch_embeddings", "--status"),
        ],
    )

    assert agreeing.returncode == 0 and agreeing.stderr == ""
    expected = (
        "EMBEDDING_MODEL=nonsense and EMBEDDING_DIMENSIONS=384 are set, but the database serves "
        f"{served_model} at 768 dimensions (vector) and this command uses that: to serve what is "
        "set, run `manage.py switch_embeddings --model nonsense --dimensions 384`"
    )
    for command, result in results.items():
        assert result.returncode == 0, result.stdout + result.stderr
        assert [line for line in result.stderr.splitlines() if line.strip()] == [expected], command
    backfill = results[("backfill_embeddings", "--force", "--limit", "3")]
    assert f"model={served_model} dimensions=768" in backfill.stdout


def test_concurrency_zero_and_other_bad_flags_are_refused_and_the_help_says_the_range(command_env):
    make_clips(3)

    results = manage_all(
        command_env,
        [
            ("backfill_embeddings", "--concurrency", "0"),
            ("backfill_embeddings", "--concurrency", "65"),
            ("switch_embeddings", "--dimensions", "384", "--concurrency", "0"),
            ("switch_embeddings", "--dimensions", "0"),
            ("resize_embeddings", "--dimensions", "0"),
            ("backfill_embeddings", "--help"),
        ],
    )

    for command, result in results.items():
        if command[-1] == "--help":
            assert result.returncode == 0
            assert "requests in flight, 1-64 (default: EMBEDDING_CONCURRENCY)" in " ".join(
                result.stdout.split()
            )
            continue
        flag = command[-2]
        assert f"{flag} must be" in error_line(result, names=flag)
    assert Clip.objects.filter(embedding__isnull=False).count() == 0
    admin_only = {k: v for k, v in command_env.items() if k != "DJANGO_SUPERUSER_PASSWORD"}
    no_password = manage({**admin_only, "DJANGO_SUPERUSER_USERNAME": "admin"}, "ensure_superuser")
    assert "DJANGO_SUPERUSER_PASSWORD" in error_line(no_password, names="DJANGO_SUPERUSER")


def test_since_takes_what_a_user_types_and_names_the_forms_it_takes(command_env):
    clips = make_clips(40)
    now = timezone.now()
    for age_hours, clip in enumerate(clips):  # one clip an hour back, then one a day back
        created = now - (
            timedelta(hours=age_hours) if age_hours < 30 else timedelta(days=age_hours)
        )
        Clip.objects.filter(pk=clip.pk).update(created_at=created)
    midnight = timezone.make_aware(datetime.combine(timezone.localdate(), datetime.min.time()))
    ages = {
        "today": midnight,
        "yesterday": midnight - timedelta(days=1),
        "7d": now - timedelta(days=7),
        "12h": now - timedelta(hours=12, minutes=-1),  # a minute's slack for the subprocess
        (now - timedelta(days=40)).date().isoformat(): midnight - timedelta(days=40),
        (now - timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M"): now
        - timedelta(hours=5, minutes=30),
    }

    results = manage_all(
        command_env,
        [("backfill_embeddings", "--since", since, "--estimate", "--json") for since in ages]
        + [("backfill_embeddings", "--since", "last week")],
    )

    for since, bound in ages.items():
        result = results[("backfill_embeddings", "--since", since, "--estimate", "--json")]
        assert result.returncode == 0, result.stderr
        expected = Clip.objects.filter(created_at__gte=bound.replace(second=0, microsecond=0))
        assert json.loads(result.stdout)["clips"] == expected.count(), since
    refused = error_line(results[("backfill_embeddings", "--since", "last week")], names="--since")
    for form in ("today", "yesterday", "7d", "12h", "ISO date"):
        assert form in refused


def test_hybrid_search_prints_the_score_it_orders_by(command_env, openai_server):
    make_clips(60)
    assert manage(command_env, "backfill_embeddings").returncode == 0

    table = manage(command_env, "search_clips", "Valorant number", "-k", "15")
    as_json = manage(command_env, "search_clips", "Valorant number", "-k", "15", "--json")
    vector = manage(command_env, "search_clips", "Clip number 7", "--mode", "vector", "-k", "5")

    lines = table.stdout.splitlines()
    assert table.returncode == 0, table.stderr
    assert lines[0].split() == ["rank", "score", "distance", "title", "broadcaster", "game"]
    scores = [float(line.split()[1]) for line in lines[1:]]
    assert len(scores) == 15 and scores == sorted(scores, reverse=True)
    rows = json.loads(as_json.stdout)
    assert [row["score"] for row in rows] == sorted((row["score"] for row in rows), reverse=True)
    assert vector.stdout.splitlines()[0].split() == [
        "rank",
        "distance",
        "title",
        "broadcaster",
        "game",
    ]
