"""One owner of configuration: defaults that work anywhere, and one refusal for a bad value."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embeddings.app_settings import SETTINGS, embedding_settings, problems

REPO = Path(__file__).resolve().parent.parent


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDING_", "OPENAI_", "DJANGO_", "Q_"))
        and k not in ("REDIS_URL", "DATABASE_URL")
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _fresh_project(tmp_path: Path) -> dict[str, str]:
    """A Django project of a user's, which installs the app and sets none of its settings."""
    from django.db import connection

    db = connection.settings_dict
    (tmp_path / "fresh_settings.py").write_text(
        f"""
SECRET_KEY = "a user's project"
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django_q", "embeddings",
]
DATABASES = {{"default": {{
    "ENGINE": "django.db.backends.postgresql", "NAME": {db["NAME"]!r},
    "USER": {db["USER"]!r}, "PASSWORD": {db["PASSWORD"]!r}, "HOST": {db["HOST"]!r},
    "PORT": {str(db["PORT"] or "")!r},
}}}}
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{{
    "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
    "OPTIONS": {{"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]}},
}}]
CACHES = {{"embeddings": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
          "default": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}}}
Q_CLUSTER = {{"name": "fresh", "orm": "default"}}
USE_TZ = True
"""
    )
    return _clean_env(
        DJANGO_SETTINGS_MODULE="fresh_settings",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
    )


def _django(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "django", *argv],
        env=env,
        cwd=env["PYTHONPATH"].split(os.pathsep)[0],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _manage(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db(transaction=True)
def test_the_app_installed_into_a_fresh_project_works_with_none_of_its_settings(tmp_path):
    env = _fresh_project(tmp_path)

    check = _django(env, "check")
    assert check.returncode == 0, check.stderr
    printed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup();"
            "from embeddings.app_settings import embedding_settings as s;"
            "c = s(); print(c.model, c.dimensions, c.concurrency, c.search_ef, c.enabled)",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.split() == ["text-embedding-3-small", "768", "4", "100", "True"]
    estimate = _django(env, "backfill_embeddings", "--estimate", "--json")
    assert estimate.returncode == 0, estimate.stderr
    assert '"clips"' in estimate.stdout


def test_every_default_lives_in_app_settings_and_applies_when_nothing_is_set(settings):
    for setting in SETTINGS.values():
        if hasattr(settings, setting.name):
            delattr(settings, setting.name)
    config = embedding_settings()
    assert config.search_ef == 100
    assert config.dimensions == 768 and config.model == "text-embedding-3-small"
    assert problems(config) == []


def test_values_from_the_environment_are_parsed_and_checked(settings):
    settings.EMBEDDING_CONCURRENCY = "8"
    settings.EMBEDDING_ENABLED = "false"
    settings.EMBEDDING_SEARCH_EF = "2000"
    config = embedding_settings()
    assert config.concurrency == 8 and config.enabled is False
    assert problems(config) == ["EMBEDDING_SEARCH_EF must be between 1 and 1000, not 2000"]


@pytest.mark.parametrize(
    ("rpm", "tpm", "setting", "value"),
    [
        (0, 100, "EMBEDDING_REQUESTS_PER_MINUTE", 0),
        (100, -1, "EMBEDDING_TOKENS_PER_MINUTE", -1),
    ],
)
def test_a_limit_that_is_not_positive_names_the_setting_to_fix(settings, rpm, tpm, setting, value):
    settings.EMBEDDING_REQUESTS_PER_MINUTE = rpm
    settings.EMBEDDING_TOKENS_PER_MINUTE = tpm
    assert problems(embedding_settings()) == [f"{setting} must be at least 1, not {value}"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "(embeddings.E002) EMBEDDING_CONCURRENCY must be between 1 and 64, not 0"),
        ("many", "(embeddings.E001) EMBEDDING_CONCURRENCY='many' is not a valid int"),
    ],
)
def test_a_bad_value_stops_check_backfill_and_qcluster_with_the_same_message(value, message):
    env = _clean_env(EMBEDDING_CONCURRENCY=value, DJANGO_SETTINGS_MODULE="project.settings")
    outputs = {}
    for argv in (["check"], ["backfill_embeddings"], ["qcluster"]):
        done = _manage(env, *argv)
        assert done.returncode != 0, f"{argv} accepted EMBEDDING_CONCURRENCY={value}"
        outputs[argv[0]] = [line for line in done.stderr.splitlines() if "(embeddings.E" in line]
    assert outputs["check"] == [f"?: {message}"]
    assert outputs["backfill_embeddings"] == outputs["check"] == outputs["qcluster"]


def test_a_misspelt_setting_is_a_warning_naming_the_nearest_one_and_the_run_goes_on():
    env = _clean_env(
        EMBEDDING_CONCURENCY="4", EMBEDDING_COLOUR="red", DJANGO_SETTINGS_MODULE="project.settings"
    )
    done = _manage(env, "check")

    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "(embeddings.W001)" in line]
    assert warnings == [
        "?: (embeddings.W001) EMBEDDING_COLOUR is set, but no setting has that name: it is ignored",
        "?: (embeddings.W001) EMBEDDING_CONCURENCY is set, but no setting has that name: it is "
        "ignored (did you mean EMBEDDING_CONCURRENCY?)",
    ]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_service_and_the_providers_never_import_the_orm():
    """import-linter cannot name `django.db` (part of an external package), so this does."""
    for folder in ("service", "providers"):
        for path in (REPO / "embeddings" / folder).glob("*.py"):
            orm = {name for name in _imports(path) if name.startswith("django.db")}
            assert not orm, f"{path.relative_to(REPO)} imports {orm}"
