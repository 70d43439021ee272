"""Settings: every value comes from the environment or `.env` (the environment wins).

This is the only module that reads the environment; `embeddings.app_settings` owns the app's
defaults and turns the `EMBEDDING_*` values into one typed object for the rest of the code.
"""

import os
import sys
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote, urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from embeddings.app_settings import redact_secrets, redact_url
from project.embedded_postgres import embedded_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = BASE_DIR / ".data"
EMBEDDED_PGDATA = DATA_DIR / "postgres"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


POSTGRES_SCHEMES = ("postgresql", "postgres", "pgsql")
REDIS_SCHEMES = ("redis", "rediss", "unix")
# libpq waits for ever on a host that drops packets: a lost server is said in this many seconds.
CONNECT_TIMEOUT_SECONDS = 10


def database_config(url: str) -> dict:
    """Django DATABASES entry for any libpq URI, unix sockets included; ImproperlyConfigured,
    naming DATABASE_URL and what to set, for anything else.

    django-environ leaves a `?host=/dir` socket in OPTIONS and a `%2F`-encoded host
    undecoded; both belong in HOST/PORT so that `dbshell` and psycopg agree.
    """
    problem = (
        f"DATABASE_URL={redact_url(url)!r} is not a PostgreSQL URL: set it like "
        "postgresql://user:password@host:5432/dbname (a socket: "
        "postgresql://user@/dbname?host=/var/run/postgresql), or unset it to use the embedded "
        "PostgreSQL"
    )
    if urlsplit(url).scheme.lower() not in POSTGRES_SCHEMES:
        raise ImproperlyConfigured(problem)
    try:
        config = environ.Env.db_url_config(url)
    except ValueError:  # a port that is not a number
        raise ImproperlyConfigured(problem) from None
    if not config.get("NAME"):
        raise ImproperlyConfigured(problem.replace("is not a PostgreSQL URL", "names no database"))
    options = config.setdefault("OPTIONS", {})
    if "host" in options:
        config["HOST"] = options.pop("host")
    if "port" in options:
        config["PORT"] = options.pop("port")
    config["HOST"] = unquote(str(config.get("HOST") or ""))
    config["ENGINE"] = "django.db.backends.postgresql"
    config["CONN_HEALTH_CHECKS"] = True
    return config


SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-key-change-me-in-production")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Before staticfiles and django_q: its `runserver` and `qcluster` wrap theirs (one-line
    # configuration errors), and Django takes a command from the first app listed.
    "embeddings",
    "django.contrib.staticfiles",
    "django_q",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files from the app itself, so the admin is styled with DEBUG off (make serve).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _refuse(problem: str) -> NoReturn:
    """A setting no process can start with. Under `manage.py`, one line and exit 2 (the
    contract's configuration error; `--traceback` shows where instead); anywhere else (a test
    run, a WSGI server) ImproperlyConfigured with the same sentence."""
    program = Path(sys.argv[0]).name if sys.argv else ""
    if program in ("manage.py", "django-admin") and "--traceback" not in sys.argv:
        print(f"CommandError: {problem}", file=sys.stderr)
        raise SystemExit(2)
    raise ImproperlyConfigured(problem)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


DATABASE_URL = env.str("DATABASE_URL", default="")
USING_EMBEDDED_DATABASE = not DATABASE_URL
if USING_EMBEDDED_DATABASE:
    try:
        _database_url = embedded_database_url(
            EMBEDDED_PGDATA, env.str("EMBEDDED_DATABASE_NAME", default="postgres")
        )
    except Exception as error:
        _refuse(
            f"the embedded PostgreSQL in {EMBEDDED_PGDATA} could not start "
            f"({redact_secrets(_first_line(error))}): run `make stop-db` and try again, or set "
            "DATABASE_URL to a PostgreSQL server with pgvector"
        )
else:
    _database_url = DATABASE_URL
try:
    DATABASES = {"default": database_config(_database_url)}
except ImproperlyConfigured as error:
    _refuse(str(error))
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", CONNECT_TIMEOUT_SECONDS
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="") or None
if REDIS_URL and urlsplit(REDIS_URL).scheme.lower() not in REDIS_SCHEMES:
    _refuse(
        f"REDIS_URL={redact_url(REDIS_URL)!r} is not a Redis URL: set it like "
        "redis://localhost:6379/0, or unset it to use the database queue and a disk cache"
    )
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        },
    }
else:
    # Persistent across runs without a server: SQLite-backed diskcache scales to millions of
    # keys, where Django's file and database backends count every entry on each write.
    CACHES = {
        "default": {
            "BACKEND": "diskcache.DjangoCache",
            "LOCATION": str(DATA_DIR / "cache"),
            "OPTIONS": {"size_limit": 2**31},
        },
    }
CACHES["embeddings"] = {**CACHES["default"], "KEY_PREFIX": "emb"}

Q_CLUSTER = {
    "name": env.str("Q_CLUSTER_NAME", default="clip-embeddings"),
    "workers": env.int("Q_WORKERS", default=2),
    # A backfill chunk must finish inside `timeout`; `retry` > `timeout` so the ORM broker never
    # hands a running task to a second worker; `max_attempts` stops a poison task looping.
    "timeout": 1800,
    "retry": 2400,
    "max_attempts": 3,
    "save_limit": 1000,
    "catch_up": False,
    **({"redis": REDIS_URL} if REDIS_URL else {"orm": "default"}),
}

# The app's settings and every default live in `embeddings/app_settings.py`; the environment
# (or `.env`) passes on what it sets, as strings the app parses and its system checks validate.
globals().update(
    (name, value)
    for name, value in os.environ.items()
    if name.startswith("EMBEDDING_")
    or name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "METRICS_TOKEN")
)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# `collectstatic` (run by `make serve` and the test suite) gathers them here; WhiteNoise serves
# them compressed, under content-hashed names that browsers may cache for ever.
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "stream": sys.stderr, "formatter": "plain"}
    },
    "loggers": {
        "embeddings": {
            "handlers": ["stderr"],
            "level": env.str("EMBEDDING_LOG_LEVEL", default="WARNING"),
        }
    },
}
