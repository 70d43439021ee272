"""Every embedding setting with its default, read from Django settings in this one module.

django-allauth's pattern: the app works installed into any Django project, with none of the
`EMBEDDING_*` settings defined. A value may be typed (`EMBEDDING_CONCURRENCY = 4`) or a string
from the environment (`"4"`); both are parsed here. What is wrong with a value is said once, by
`problems()`, which the app's system checks report: the command, `qcluster`, `runserver` and
the admin then refuse a bad value the same way.
"""

import difflib
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from embeddings.exceptions import ConfigurationError

# List price per 1M input tokens (https://openai.com/api/pricing/); unknown models report no cost.
PRICE_PER_MILLION_TOKENS = {
    "text-embedding-3-small": 0.02,
    "text-embedding-3-large": 0.13,
    "text-embedding-ada-002": 0.10,
}
PROVIDERS = ("openai", "local")
LOCAL_MODEL, LOCAL_DIMENSIONS = "all-MiniLM-L6-v2", 384
MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
STORAGES = ("vector", "halfvec")
# pgvector's HNSW index takes vector up to 2,000 dimensions and halfvec up to 4,000; the clips
# column always carries one, so no larger size is accepted.
HNSW_MAX_DIMENSIONS = {"vector": 2000, "halfvec": 4000}
MAX_CONCURRENCY = 64
MAX_INPUTS_PER_REQUEST = 2048  # the API's own cap


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _optional_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


@dataclass(frozen=True)
class Setting:
    """One Django setting: its name, its default, how to parse it."""

    name: str
    default: Any
    parse: Callable[[Any], Any]


# Field of EmbeddingSettings -> the Django setting it comes from.
SETTINGS = {
    "enabled": Setting("EMBEDDING_ENABLED", True, _bool),
    "provider": Setting("EMBEDDING_PROVIDER", "openai", str),
    "api_key": Setting("OPENAI_API_KEY", None, _optional_str),
    "base_url": Setting("OPENAI_BASE_URL", None, _optional_str),
    "model": Setting("EMBEDDING_MODEL", "text-embedding-3-small", str),
    "dimensions": Setting("EMBEDDING_DIMENSIONS", 768, int),
    "storage": Setting("EMBEDDING_STORAGE", "vector", str),
    "send_dimensions": Setting("EMBEDDING_SEND_DIMENSIONS", "auto", str),
    "requests_per_minute": Setting("EMBEDDING_REQUESTS_PER_MINUTE", 500, int),
    "tokens_per_minute": Setting("EMBEDDING_TOKENS_PER_MINUTE", 1_000_000, int),
    "max_inputs_per_request": Setting(
        "EMBEDDING_MAX_INPUTS_PER_REQUEST", MAX_INPUTS_PER_REQUEST, int
    ),
    "max_tokens_per_request": Setting("EMBEDDING_MAX_TOKENS_PER_REQUEST", 300_000, int),
    "max_tokens_per_input": Setting("EMBEDDING_MAX_TOKENS_PER_INPUT", 8192, int),
    "concurrency": Setting("EMBEDDING_CONCURRENCY", 4, int),
    "request_timeout": Setting("EMBEDDING_REQUEST_TIMEOUT", 60.0, float),
    "max_retries": Setting("EMBEDDING_MAX_RETRIES", 6, int),
    "cache_ttl": Setting("EMBEDDING_CACHE_TTL", 30 * 24 * 3600, int),
    "redis_url": Setting("REDIS_URL", None, _optional_str),
    "schedule_minutes": Setting("EMBEDDING_SCHEDULE_MINUTES", 360, int),
    "schedule_lookback_days": Setting("EMBEDDING_SCHEDULE_LOOKBACK_DAYS", 7, int),
    "schedule_limit": Setting("EMBEDDING_SCHEDULE_LIMIT", 100, int),
    "search_ef": Setting("EMBEDDING_SEARCH_EF", 100, int),
    "metrics_token": Setting("METRICS_TOKEN", None, _optional_str),
    "live_sync": Setting("EMBEDDING_LIVE_SYNC", True, _bool),
    "live_sync_gather_seconds": Setting("EMBEDDING_LIVE_SYNC_GATHER_SECONDS", 1.0, float),
    "sweep_minutes": Setting("EMBEDDING_SWEEP_MINUTES", 5, int),
    # The Batch API's own limit pool: tokens enqueued across open batches (tier 1: 3M).
    "batch_queue_tokens": Setting("EMBEDDING_BATCH_QUEUE_TOKENS", 3_000_000, int),
    "batch_poll_seconds": Setting("EMBEDDING_BATCH_POLL_SECONDS", 30.0, float),
    "batch_poll_minutes": Setting("EMBEDDING_BATCH_POLL_MINUTES", 10, int),
    # A run writing at least this many clips (and a fifth of the table) skips per-row HNSW
    # index maintenance: see `embeddings.backfill.write_mode`.
    "bulk_min_clips": Setting("EMBEDDING_BULK_MIN_CLIPS", 5000, int),
}
# The local provider's model makes 384-dimensional vectors: other defaults would never work.
LOCAL_DEFAULTS = {"model": LOCAL_MODEL, "dimensions": LOCAL_DIMENSIONS}


@dataclass(frozen=True)
class EmbeddingSettings:
    enabled: bool
    provider: str
    api_key: str | None
    base_url: str | None
    model: str
    dimensions: int
    storage: str
    send_dimensions: str
    requests_per_minute: int
    tokens_per_minute: int
    max_inputs_per_request: int
    max_tokens_per_request: int
    max_tokens_per_input: int
    concurrency: int
    request_timeout: float
    max_retries: int
    cache_ttl: int
    redis_url: str | None
    schedule_minutes: int
    schedule_lookback_days: int
    schedule_limit: int
    search_ef: int
    metrics_token: str | None
    live_sync: bool
    live_sync_gather_seconds: float
    sweep_minutes: int
    batch_queue_tokens: int
    batch_poll_seconds: float
    batch_poll_minutes: int
    bulk_min_clips: int
    # Which stored version these settings describe (`embeddings.models.served_settings` fills
    # them from the database; None: the settings alone, no version row yet), and where its
    # vectors are: "clips" (clips.embedding) or "builds" (its rows of clip_vector_builds).
    version_id: int | None = None
    source: str = "clips"

    @property
    def price_per_million_tokens(self) -> float | None:
        return PRICE_PER_MILLION_TOKENS.get(self.model)

    @property
    def batch_price_per_million_tokens(self) -> float | None:
        """The Batch API costs half the online price."""
        price = self.price_per_million_tokens
        return None if price is None else price / 2

    @property
    def sends_dimensions(self) -> bool:
        """`dimensions` only works on text-embedding-3-*; ada-002 and others reject it."""
        if self.send_dimensions.lower() == "auto":
            return self.model.startswith("text-embedding-3")
        return _bool(self.send_dimensions)

    def __repr__(self) -> str:
        # Never show the key: reprs end up in logs and tracebacks.
        return (
            f"EmbeddingSettings(model={self.model!r}, dimensions={self.dimensions}, "
            f"storage={self.storage!r})"
        )


def embedding_settings() -> EmbeddingSettings:
    """The settings as they are now (tests change them with pytest-django's `settings`)."""
    provider = str(getattr(settings, SETTINGS["provider"].name, SETTINGS["provider"].default))
    values = {}
    for field, setting in SETTINGS.items():
        default = setting.default
        if provider == "local":
            default = LOCAL_DEFAULTS.get(field, default)
        raw = getattr(settings, setting.name, default)
        try:
            values[field] = setting.parse(raw)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"{setting.name}={raw!r} is not a valid {setting.parse.__name__.strip('_')}"
            ) from None
    return EmbeddingSettings(**values)


# Read by the project's settings module itself (the app's logger), not by the app.
PROJECT_SETTINGS = ("EMBEDDING_LOG_LEVEL",)


def unknown_settings() -> list[tuple[str, str | None]]:
    """`EMBEDDING_*` settings nothing reads (a misspelt name is otherwise silently ignored),
    each with the known name nearest to it, if any is near."""
    prefix = "EMBEDDING_"
    known = [setting.name for setting in SETTINGS.values()] + list(PROJECT_SETTINGS)
    # Compared without the shared prefix, which would make every name look near every other.
    suffixes = [name.removeprefix(prefix) for name in known if name.startswith(prefix)]

    def nearest(name: str) -> str | None:
        close = difflib.get_close_matches(name.removeprefix(prefix), suffixes, n=1, cutoff=0.75)
        return prefix + close[0] if close else None

    return [
        (name, nearest(name))
        for name in sorted(dir(settings))
        if name.startswith(prefix) and name not in known
    ]


def declared_dimensions() -> int:
    """The vector size the model declares at import: the configured one, or the default while
    the setting is unreadable (the system checks then refuse it with a clear message)."""
    try:
        return embedding_settings().dimensions
    except ConfigurationError:
        return SETTINGS["dimensions"].default


def redact_secrets(text: str) -> str:
    """`text` (a message, an error from a driver) with the password of any `user:password@`
    in a URL, and of any `password=` parameter, replaced by `***`."""
    text = re.sub(r"(?i)(password=)[^&#\s]*", r"\1***", text)
    return re.sub(r"(//[^/?#@:\s]*):[^/?#@\s]*@", r"\1:***@", text)


def redact_url(url: str) -> str:
    """A URL setting's value fit to print (a database or Redis URL in a message must not leak
    its password). A value with no `scheme://` cannot be read for sure, so everything after
    its first `:` or `@` goes."""
    if "://" not in url:
        return re.sub(r"([:@]).*", r"\1***", redact_secrets(url), count=1)
    return redact_secrets(url)


def _base_url_problem(name: str, url: str) -> str | None:
    """What is wrong with OPENAI_BASE_URL (None: nothing), said with what to set."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return (
            f"{name}={redact_url(url)!r} is not an http(s) URL: set it to the server's address "
            "(such as http://localhost:8000/v1), or unset it for api.openai.com"
        )
    return None


def _range(name: str, value: float, low: float, high: float | None = None) -> list[str]:
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        return [f"{name} must be {bound}, not {value}"]
    return []


def storage_problems(storage: str, dimensions: int, name: str = "--storage") -> list[str]:
    """What keeps a version of this storage and size from its HNSW index (a switch's flags, or
    the first version's settings)."""
    if storage not in STORAGES:
        return [f"{name}={storage!r} is not supported: use vector or halfvec"]
    limit = HNSW_MAX_DIMENSIONS[storage]
    if dimensions > limit:
        remedy = ": store it as halfvec (up to 4000)" if storage == "vector" else ""
        return [
            f"{dimensions} dimensions is more than pgvector's HNSW index takes for {storage} "
            f"({limit}){remedy}"
        ]
    return []


def problems(config: EmbeddingSettings) -> list[str]:
    """What is wrong with the settings, one sentence each that says what to set."""
    names = {field: SETTINGS[field].name for field in SETTINGS}
    found = []
    if config.provider not in PROVIDERS:
        found.append(
            f"{names['provider']}={config.provider!r} is not supported: use "
            + " or ".join(PROVIDERS)
        )
    if config.send_dimensions.lower() != "auto":
        try:
            _bool(config.send_dimensions)
        except ValueError:
            found.append(f"{names['send_dimensions']} must be auto, true or false")
    found += storage_problems(config.storage, config.dimensions, names["storage"])
    if config.base_url is not None and (
        bad := _base_url_problem(names["base_url"], config.base_url)
    ):
        found.append(bad)
    checks = [
        ("dimensions", 1, None),
        ("requests_per_minute", 1, None),
        ("tokens_per_minute", 1, None),
        ("max_inputs_per_request", 1, MAX_INPUTS_PER_REQUEST),
        ("max_tokens_per_request", 1, None),
        ("max_tokens_per_input", 1, None),
        ("concurrency", 1, MAX_CONCURRENCY),
        ("request_timeout", 0.001, None),
        ("max_retries", 0, None),
        ("cache_ttl", 1, None),
        ("schedule_minutes", 1, None),
        ("schedule_lookback_days", 1, None),
        ("schedule_limit", 1, None),
        ("search_ef", 1, MAX_EF_SEARCH),
        ("live_sync_gather_seconds", 0, 60),
        ("sweep_minutes", 1, None),
        ("batch_queue_tokens", 1, None),
        ("batch_poll_seconds", 0.01, None),
        ("batch_poll_minutes", 1, None),
        ("bulk_min_clips", 1, None),
    ]
    for field, low, high in checks:
        found += _range(names[field], getattr(config, field), low, high)
    return found


# The settings that only name the first version: later, the database's served version rules.
VERSION_FIELDS = ("model", "dimensions", "storage")


@dataclass(frozen=True)
class Unserved:
    """EMBEDDING_MODEL / _DIMENSIONS / _STORAGE set to other than the served version (which
    every search, run and page uses all the same), and what would serve them."""

    settings: list[tuple[str, object]]  # (setting, value) set to other than the served one
    model: str
    dimensions: int
    storage: str
    command: str  # the `switch_embeddings` that would serve what is set

    def line(self, served: "EmbeddingSettings") -> str:
        """For a command's start."""
        names = " and ".join(f"{name}={value}" for name, value in self.settings)
        return (
            f"{names} {'is' if len(self.settings) == 1 else 'are'} set, but the database serves "
            f"{served.model} at {served.dimensions} dimensions ({served.storage}) and this "
            f"command uses that: to serve what is set, run `{self.command}`"
        )


def unserved_settings(served: "EmbeddingSettings") -> Unserved | None:
    """What is set and not served; None when they agree, when none of them is set (a default
    names no wish), or when a value cannot be read (the system checks say so)."""
    wanted = {}
    for field in VERSION_FIELDS:
        setting = SETTINGS[field]
        if not hasattr(settings, setting.name):
            continue
        try:
            wanted[field] = setting.parse(getattr(settings, setting.name))
        except (TypeError, ValueError):
            return None
    differ = [field for field, value in wanted.items() if value != getattr(served, field)]
    if not differ:
        return None
    target = {field: wanted.get(field, getattr(served, field)) for field in VERSION_FIELDS}
    command = (
        f"manage.py switch_embeddings --model {shlex.quote(target['model'])} "
        f"--dimensions {target['dimensions']}"
        + (f" --storage {target['storage']}" if target["storage"] != served.storage else "")
    )
    return Unserved(
        settings=[(SETTINGS[field].name, wanted[field]) for field in differ],
        command=command,
        **target,
    )
