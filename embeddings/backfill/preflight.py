"""Checks at the start of a command that turn a doomed run into an immediate, actionable error.

The settings themselves are checked by the app's system checks (`embeddings.checks`); these
look at the database the run is about to use, and whether the embedding endpoint answers.
"""

import json
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from django.db import OperationalError, connection

from embeddings.app_settings import EmbeddingSettings, embedding_settings, redact_url
from embeddings.exceptions import ConfigurationError, ProviderConfigurationError
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
    Then `GET {base}/models` (see `check_models`). Nothing is checked for the local model or
    without a key (the provider says that); the connection is not tried through an HTTP proxy
    (which is what the client connects to)."""
    if config.provider != "openai" or not config.api_key:
        return
    url = config.base_url or OPENAI_DEFAULT_BASE_URL
    parts = urlsplit(url)
    host = parts.hostname
    if host is None:
        return
    if _through_proxy(parts.scheme, host):
        check_models(config, url)
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
    check_models(config, url)


def check_models(config: EmbeddingSettings, url: str) -> None:
    """`GET {url}/models` tells a wrong base URL and an unknown model apart before any work:

    * 404 there but a list at the root (or under /v1): the base URL is wrong, and the message
      gives the one that answers (Infinity serves at the root; vLLM, Ollama, LiteLLM, TEI and
      OpenAI under /v1);
    * a list without the served model: the model name is wrong, and the message lists what
      the server serves.

    A server without `/models` (404 at both) is asked with an empty request instead (see
    `_check_embeddings_route`); one answering anything else (401, 5xx, not JSON) is not refused
    for that: the run's first request says what is wrong."""
    base = url.rstrip("/")
    status, served = _models_at(base, config.api_key)
    if status == 200 and served is not None:
        _check_model(config, base, served)
        return
    if status != 404:
        return
    other = base[: -len("/v1")] if base.endswith("/v1") else base + "/v1"
    other_status, other_served = _models_at(other, config.api_key)
    if other_status != 200 or other_served is None:
        _check_embeddings_route(config, base, other)
        return
    unknown = ""
    if not _serves(other_served, config.model):
        unknown = f"; and it does not serve model {config.model} (it serves: " + (
            _listing(other_served) + ")"
        )
    raise ConfigurationError(_wrong_base_url(base, other, "/models") + unknown)


def _check_embeddings_route(config: EmbeddingSettings, base: str, other: str) -> None:
    """With no `/models` at either URL, the embeddings route itself tells which one is right:
    a request with nothing to embed is answered 400/422 where the route exists and 404 where it
    does not, and no server bills it. The other URL is asked first, so a right base URL costs
    one request only when the server answers at both."""
    if not _answers_embeddings(other, config) or _answers_embeddings(base, config):
        return
    raise ConfigurationError(_wrong_base_url(base, other, "/embeddings"))


def _answers_embeddings(base: str, config: EmbeddingSettings) -> bool:
    request = urllib.request.Request(
        base + "/embeddings",
        data=json.dumps({"model": config.model, "input": []}).encode(),
        headers={"Authorization": f"Bearer {config.api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=ENDPOINT_TIMEOUT_SECONDS):
            return True
    except urllib.error.HTTPError as err:
        return err.code != 404
    except (OSError, ValueError):
        return False


def _wrong_base_url(base: str, other: str, path: str) -> str:
    where = "at the root" if other == base[: -len("/v1")] else "under /v1"
    return (
        f"OPENAI_BASE_URL={redact_url(base)} answers 404 at {redact_url(base)}{path}: "
        f"this server answers {where}: set OPENAI_BASE_URL={redact_url(other)}"
    )


def _models_at(base: str, api_key: str | None) -> tuple[int | None, list[str] | None]:
    """The status of `GET {base}/models` and the model ids it lists (None: no list)."""
    request = urllib.request.Request(
        base + "/models", headers={"Authorization": f"Bearer {api_key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=ENDPOINT_TIMEOUT_SECONDS) as answer:
            status, raw = answer.status, answer.read(4_000_000)
    except urllib.error.HTTPError as err:
        return err.code, None
    except (OSError, ValueError):
        return None, None
    try:
        data = json.loads(raw)["data"]
        return status, [str(item["id"]) for item in data]
    except (ValueError, KeyError, TypeError):
        return status, None


def _serves(served: list[str], model: str) -> bool:
    """Whether a `/models` list covers `model`: an empty list or a wildcard route (LiteLLM)
    says nothing, and Ollama lists `name:latest` for `name`."""
    if not served or any("*" in name for name in served):
        return True
    return any(name == model or name.split(":", 1)[0] == model for name in served)


def _listing(served: list[str], most: int = 10) -> str:
    shown = ", ".join(served[:most])
    return shown + (f" and {len(served) - most} more" if len(served) > most else "")


def _check_model(config: EmbeddingSettings, base: str, served: list[str]) -> None:
    if _serves(served, config.model):
        return
    configured = embedding_settings().model
    if configured == config.model:
        fix = "set EMBEDDING_MODEL to the name the server serves"
    else:  # the database serves another model than the settings name
        fix = (
            f"the database serves {config.model} (EMBEDDING_MODEL={configured} is not served "
            "yet): run `manage.py switch_embeddings --model NAME` with a name it serves"
        )
    raise ProviderConfigurationError(
        f"the embedding server at OPENAI_BASE_URL={redact_url(base)} does not serve model "
        f"{config.model} (it serves: {_listing(served)}): {fix}"
    )


def _through_proxy(scheme: str, host: str) -> bool:
    proxies = urllib.request.getproxies()
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host)
