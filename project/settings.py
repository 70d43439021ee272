"""Settings: every value comes from the environment or `.env` (the environment wins).

This is the only module that reads the environment; `embeddings.app_settings` owns the app's
defaults and turns the `EMBEDDING_*` values into one typed object for the rest of the code.
"""

import os
import sys
from pathlib import Path
from urllib.parse import unquote

import environ

from project.embedded_postgres import embedded_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = BASE_DIR / ".data"
EMBEDDED_PGDATA = DATA_DIR / "postgres"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def database_config(url: str) -> dict:
    """Django DATABASES entry for any libpq URI, unix sockets included.

    django-environ leaves a `?host=/dir` socket in OPTIONS and a `%2F`-encoded host
    undecoded; both belong in HOST/PORT so that `dbshell` and psycopg agree.
    """
    config = environ.Env.db_url_config(url)
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
    "django.contrib.staticfiles",
    "django_q",
    "embeddings",
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

DATABASE_URL = env.str("DATABASE_URL", default="")
USING_EMBEDDED_DATABASE = not DATABASE_URL
DATABASES = {
    "default": database_config(
        DATABASE_URL
        or embedded_database_url(
            EMBEDDED_PGDATA, env.str("EMBEDDED_DATABASE_NAME", default="postgres")
        )
    ),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="") or None
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
