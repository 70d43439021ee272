"""Checks at the start of a command that turn a doomed run into an immediate, actionable error.

The settings themselves are checked by the app's system checks (`embeddings.checks`); these
look at the database the run is about to use, and whether the embedding endpoint answers.
"""

import socket
import urllib.request
from urllib.parse import urlsplit

from django.db import OperationalError, connection

from embeddings.app_settings import EmbeddingSettings, redact_url
from embeddings.exceptions import ConfigurationError
from embeddings.models import embedding_column_type


def vector_column_dimensions() -> int | None:
    """The size `clips.embedding` really has in the database (None: no such column yet)."""
    column = embedding_column_type()
    return column[1] if column else None


def preflight(config: EmbeddingSettings) -> None:
    """Raise ConfigurationError unless the database answers and its column fits the served
    version (`config` comes from `served_settings`)."""
    try:
        connection.ensure_connection()
    except OperationalError as err:
        raise ConfigurationError(
            f"cannot reach the database ({str(err).strip()}): check DATABASE_URL, "
            "or unset it to use the embedded PostgreSQL"
        ) from None
    column = embedding_column_type()
    if column is None:
        raise ConfigurationError("table clips has no embedding column: run `manage.py migrate`")
    storage, actual = column
    if config.version_id is None:  # no version yet: the column is not of the settings' size
        raise ConfigurationError(
            f"clips.embedding holds {actual}-dimensional {storage} vectors but "
            f"EMBEDDING_DIMENSIONS={config.dimensions}: set EMBEDDING_DIMENSIONS={actual}, or "
            f"run `manage.py resize_embeddings --dimensions {config.dimensions}` (a switch: "
            "search keeps answering while the new vectors are made)"
        )
    if config.source == "clips" and column != (config.storage, config.dimensions):
        raise ConfigurationError(
            f"clips.embedding is {storage}({actual}) but the served version is "
            f"{config.storage}({config.dimensions}): run `manage.py switch_embeddings --status` "
            "and re-run the switch it shows to finish it"
        )


ENDPOINT_TIMEOUT_SECONDS = 5.0
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


def check_endpoint(config: EmbeddingSettings) -> None:
    """Raise ConfigurationError, naming OPENAI_BASE_URL, unless something answers at its host
    and port: a wrong host or port is said at once, not after every request spent its retries.
    Only the connection is tried (no request, no key sent); nothing is checked for the local
    model, without a key (the provider says that), or through an HTTP proxy (which is what
    the client connects to)."""
    if config.provider != "openai" or not config.api_key:
        return
    url = config.base_url or OPENAI_DEFAULT_BASE_URL
    parts = urlsplit(url)
    host = parts.hostname
    if host is None or _through_proxy(parts.scheme, host):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=ENDPOINT_TIMEOUT_SECONDS).close()
    except OSError as err:
        reason = (
            f"no answer in {ENDPOINT_TIMEOUT_SECONDS:.0f} s"
            if isinstance(err, TimeoutError)
            else "unknown host name"
            if isinstance(err, socket.gaierror)
            else (err.strerror or type(err).__name__).lower()
        )
        setting = f"OPENAI_BASE_URL={redact_url(url)}" if config.base_url else "api.openai.com"
        fix = (
            "check OPENAI_BASE_URL (its host and port) and that the server is running"
            if config.base_url
            else "check the network, or set OPENAI_BASE_URL to an OpenAI-compatible server"
        )
        raise ConfigurationError(
            f"cannot reach the embedding endpoint {setting} ({host}:{port}: {reason}): {fix}"
        ) from None


def _through_proxy(scheme: str, host: str) -> bool:
    proxies = urllib.request.getproxies()
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host)
