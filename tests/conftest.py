"""Shared fixtures: real Redis, the OpenAI-compatible test server, settings for the pipeline."""

import copy
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from embeddings.app_settings import EmbeddingSettings, embedding_settings
from tests.support.database import database_url_of_tests
from tests.support.openai_server import FakeOpenAIServer

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
# Fixtures kept beside the helpers they go with.
pytest_plugins = ["tests.support.site_commands"]


def _redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session", autouse=True)
def static_files_collected() -> None:
    """The admin's pages name static files through WhiteNoise's manifest, as `make serve` does:
    collect them once per run."""
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis tests use; skipped (visibly) without one, except in CI where it must exist."""
    if not _redis_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs Redis at {REDIS_URL}")
        pytest.skip(f"no Redis at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def unique_prefix() -> str:
    """A key prefix no other test (or run) shares, so tests never need FLUSHDB."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A fresh OpenAI-compatible server on 127.0.0.1 (real HTTP) for one test."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(autouse=True)
def no_live_sync_in_the_test_process(settings) -> None:
    """This process's clip writes queue nothing: a test that wants live sync turns it on, or
    runs the site's processes (tests/support/save_stream.py) with a queue of their own."""
    settings.EMBEDDING_LIVE_SYNC = False


@pytest.fixture(autouse=True)
def isolated_embedding_cache(settings, unique_prefix: str) -> None:
    """Each test gets its own cache namespace: nothing cached by a dev run or another test."""
    caches = copy.deepcopy(settings.CACHES)
    caches["embeddings"]["KEY_PREFIX"] = unique_prefix
    settings.CACHES = caches


@pytest.fixture
def embedding_config(settings, openai_server: FakeOpenAIServer) -> Callable[..., EmbeddingSettings]:
    """Point the embedding settings at the test server; keyword arguments override settings."""

    def configure(**overrides) -> EmbeddingSettings:
        settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
        settings.OPENAI_BASE_URL = openai_server.base_url
        settings.EMBEDDING_REQUESTS_PER_MINUTE = 100_000
        settings.EMBEDDING_TOKENS_PER_MINUTE = 100_000_000
        settings.EMBEDDING_MAX_RETRIES = 4
        settings.EMBEDDING_CACHE_TTL = 600  # test vectors leave Redis by themselves
        for name, value in overrides.items():
            setattr(settings, name, value)
        return embedding_settings()

    return configure


@pytest.fixture
def command_env(openai_server: FakeOpenAIServer, unique_prefix: str) -> dict[str, str]:
    """Environment for running `manage.py` as a real subprocess against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBEDDING_", "OPENAI_"))}
    env.update(
        DATABASE_URL=database_url_of_tests(),
        OPENAI_API_KEY="sk-test-not-a-real-key",
        OPENAI_BASE_URL=openai_server.base_url,
        EMBEDDING_REQUESTS_PER_MINUTE="100000",
        EMBEDDING_TOKENS_PER_MINUTE="100000000",
        # A model name of its own gives every test a cold cache, whatever backend is configured.
        EMBEDDING_MODEL=f"text-embedding-3-small-{unique_prefix}",
        EMBEDDING_SEND_DIMENSIONS="true",
        EMBEDDING_CACHE_TTL="600",
        PYTHONUNBUFFERED="1",
    )
    return env
