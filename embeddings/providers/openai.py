"""OpenAI (or any OpenAI-compatible server) as an embedding provider.

One call is one HTTP request. Retrying is the service's job (tenacity, in one layer), so
retries never multiply. Every answer is checked before it is believed: count, `index`
mapping, vector length, finite values.

The request is a plain POST on httpx2 (the transport the `openai` package itself uses), its
body serialized once by orjson and its answer read raw, as the API reference documents them
(https://platform.openai.com/docs/api-reference/embeddings/create). The `openai` package is
not imported here: its types took 0.5-1 s to import and more to tear down at exit, a sixth
of a 20,000-clip backfill's wall time, for a client whose typed path we never used (its
`embeddings.create` walks each of up to 2,048 inputs through a type transform, 14% of a
backfill's CPU samples). Errors keep the client's shape (`ApiStatusError`), so
`classify_api_error` judges the Batch API client's `openai.APIStatusError` the same way.
"""

import base64
import binascii
import os
import re
import threading
from typing import Any, Protocol

import httpx2
import numpy as np
import orjson

from embeddings.app_settings import redact_url
from embeddings.exceptions import (
    FatalProviderError,
    InputRejected,
    ProviderConfigurationError,
    ProviderError,
    RetryableError,
)
from embeddings.providers.base import ProviderResponse

INPUT_INDEX = re.compile(r"\$\.input\[(\d+)\]")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DECODE_SLICE = 256  # vectors joined and decoded at once (see _decode_at_once)
# Answers read and decoded at once, whatever the requests in flight: an answer of 2,048 vectors
# is ~8 MB of body and ~8 MB of parsed strings while it is decoded. Four at once were the peaks
# a 100,000-clip run's RSS grew by; decoding takes ~50 ms, so two slots hold requests back
# only when the process is busy decoding anyway.
DECODING_AT_ONCE = 2
# Optional headers the `openai` client sends from these variables (its README, "Organization
# and project"): https://github.com/openai/openai-python#readme
OPTIONAL_HEADERS = {"OPENAI_ORG_ID": "OpenAI-Organization", "OPENAI_PROJECT_ID": "OpenAI-Project"}


class StatusError(Protocol):
    """What `classify_api_error` reads of an answer that is not a 200: `ApiStatusError`, or
    the `openai` client's own `APIStatusError` (the Batch API client)."""

    status_code: int
    message: str
    response: httpx2.Response


class ApiStatusError(Exception):
    """An answer other than 200, with the fields the `openai` client's APIStatusError has:
    `message` as it words it ("Error code: 400 - ..."), `code` and `param` of the body's
    `error` object."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self.status_code = response.status_code
        try:
            body = orjson.loads(response.content)
        except ValueError:
            body = None
        error = body.get("error", body) if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        said = error.get("message")
        self.message = f"Error code: {self.status_code}" + (
            f" - {said}" if isinstance(said, str) and said else ""
        )
        self.code = error.get("code")
        self.param = error.get("param")
        super().__init__(self.message)


class OpenAIProvider:
    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        model: str,
        dimensions: int,
        send_dimensions: bool,
        timeout: float,
    ) -> None:
        if not api_key:
            raise ProviderConfigurationError(
                "OPENAI_API_KEY is not set: put it in .env or the environment "
                "(any non-empty value works for servers that need no key)."
            )
        self.model = model
        self.dimensions = dimensions
        self.send_dimensions = send_dimensions
        self.base_url = base_url or DEFAULT_BASE_URL
        self._size_confirmed = False  # see decode_embeddings
        self._decoding = threading.BoundedSemaphore(DECODING_AT_ONCE)
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        headers |= {
            name: os.environ[var] for var, name in OPTIONAL_HEADERS.items() if var in os.environ
        }
        # One pooled client for every thread: keep-alive connections, as many as requests fly.
        # A plain-http endpoint (a local server) never uses TLS and redirects are not followed,
        # so its client skips loading the CA bundle (50-80 ms of every run's start-up).
        self._client = httpx2.Client(
            base_url=self.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx2.Timeout(timeout),
            verify=not self.base_url.startswith("http://"),
        )

    def describe(self) -> str:
        return f"OpenAI-compatible API at {self.base_url}"

    def embed(self, texts: list[str]) -> ProviderResponse:
        body = {"input": texts, "model": self.model, "encoding_format": "base64"}
        if self.send_dimensions:
            body["dimensions"] = self.dimensions
        try:
            # The answer waits in the socket until a decoding slot is free (DECODING_AT_ONCE).
            request = self._client.stream("POST", "embeddings", content=orjson.dumps(body))
            with request as raw, self._decoding:
                raw.read()
                if raw.status_code != 200:
                    error = ApiStatusError(raw)
                    raise classify_api_error(error, sent=self._sent(), url=self.base_url) from None
                vectors, tokens = self._decode(raw.content, len(texts))
        except httpx2.TransportError as err:  # refused, reset, timed out
            raise RetryableError(f"{type(err).__name__}: {err}") from None
        return ProviderResponse(
            vectors=vectors,
            prompt_tokens=tokens,
            remaining_requests=_header_int(raw.headers, "x-ratelimit-remaining-requests"),
            remaining_tokens=_header_int(raw.headers, "x-ratelimit-remaining-tokens"),
        )

    def _sent(self) -> str:
        """What a request says of the model and its size: the served version's values, which
        an error must name (not the settings', which may differ until a switch serves them)."""
        sent = f"model={self.model}, dimensions={self.dimensions}"
        return sent if self.send_dimensions else f"{sent} (not sent: EMBEDDING_SEND_DIMENSIONS)"

    def _decode(self, content: bytes, expected: int) -> tuple[np.ndarray, int]:
        try:
            body = orjson.loads(content)
        except ValueError as err:
            raise RetryableError(f"malformed response from the embeddings API: {err}") from None
        vectors, tokens = decode_embeddings(
            body,
            expected,
            self.dimensions,
            size_confirmed=self._size_confirmed,
            sent=self._sent(),
        )
        self._size_confirmed = True
        return vectors, tokens


def decode_embeddings(
    body: Any,
    expected: int,
    dimensions: int,
    *,
    size_confirmed: bool = False,
    sent: str | None = None,
) -> tuple[np.ndarray, int]:
    """The vectors of an embeddings response body, in input order, and its prompt tokens;
    checked before they are believed (online answers and Batch API lines alike)."""
    try:
        items = body["data"]
        tokens = int((body.get("usage") or {}).get("prompt_tokens") or 0)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise RetryableError(f"malformed response from the embeddings API: {err}") from None
    if len(items) != expected:
        raise RetryableError(f"asked for {expected} embeddings, got {len(items)}")
    vectors = np.empty((expected, dimensions), dtype=np.float32)
    lengths = _decode_at_once(items, vectors) or _decode_one_by_one(items, vectors)
    if lengths != {dimensions}:
        # Once the API has answered with the configured size, a one-vector answer of another
        # size is a glitch to retry; before that it is as telling as a whole wrong response.
        if len(lengths) == 1 and (expected > 1 or not size_confirmed):
            asked = f" (the request had {sent})" if sent else ""
            raise ProviderConfigurationError(
                f"the API returned {lengths.pop()}-dimensional vectors but the served "
                f"version has {dimensions} dimensions{asked}: serve the model's size "
                "(`manage.py switch_embeddings --dimensions N`, or EMBEDDING_DIMENSIONS=N on a "
                "new database), or use a model that accepts `dimensions` "
                "(EMBEDDING_SEND_DIMENSIONS)"
            )
        raise RetryableError(f"response has vectors of {sorted(lengths)} dimensions")
    if not np.isfinite(vectors).all():
        raise RetryableError("response contains NaN or infinite values")
    return vectors, tokens


def _decode_at_once(items: list, vectors: np.ndarray) -> set[int] | None:
    """Every vector as unpadded base64 of the expected size, each index once: one decode for
    them all (a decode per vector was 10% of a backfill's CPU samples). None: anything else,
    left to `_decode_one_by_one`, which names what is wrong."""
    expected, dimensions = vectors.shape
    if (4 * dimensions) % 3:
        return None  # padded: the strings cannot be joined
    chars = 4 * dimensions // 3 * 4
    order: list[int] = []
    strings: list[str] = []
    for item in items:
        index, embedding = item.get("index"), item.get("embedding")
        if type(index) is not int or type(embedding) is not str or len(embedding) != chars:
            return None
        order.append(index)
        strings.append(embedding)
    if sorted(order) != list(range(expected)):
        return None
    # In slices: one join and decode of all 2,048 made two transient 6-8 MB copies per request
    # in each embedder thread at once, the peaks a long run's RSS grew by.
    for start in range(0, expected, DECODE_SLICE):
        rows = order[start : start + DECODE_SLICE]
        try:
            decoded = base64.b64decode(
                "".join(strings[start : start + DECODE_SLICE]), validate=True
            )
        except (binascii.Error, ValueError):
            return None
        vectors[rows] = np.frombuffer(decoded, dtype="<f4").reshape(len(rows), dimensions)
    return {dimensions}


def _decode_one_by_one(items: list, vectors: np.ndarray) -> set[int]:
    """Fill `vectors` item by item; return the vector sizes seen."""
    expected, dimensions = vectors.shape
    seen = np.zeros(expected, dtype=bool)
    lengths = set()
    for item in items:
        index = item.get("index")
        if not isinstance(index, int) or not 0 <= index < expected or seen[index]:
            raise RetryableError(f"response item has a bad or repeated index: {index!r}")
        vector = _to_array(item.get("embedding"))
        lengths.add(vector.size)
        if vector.size == dimensions:
            vectors[index] = vector
        seen[index] = True
    return lengths


def _to_array(embedding: object) -> np.ndarray:
    if isinstance(embedding, str):
        try:
            return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
        except (binascii.Error, ValueError):
            raise RetryableError("response carries an undecodable base64 vector") from None
    if isinstance(embedding, list):
        try:
            return np.asarray(embedding, dtype=np.float32)
        except (TypeError, ValueError):
            raise RetryableError("response carries a non-numeric vector") from None
    raise RetryableError(f"response carries no vector ({type(embedding).__name__})")


def _header_int(headers, name: str) -> int | None:
    try:
        return int(headers.get(name))
    except (TypeError, ValueError):
        return None


def _retry_after(headers) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms` wins over `retry-after`."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers.get(name)) / scale
        except (TypeError, ValueError):
            continue
    return None


def classify_api_error(
    err: StatusError, *, sent: str | None = None, url: str | None = None
) -> ProviderError:
    """The error class the service decides by, for any API answer that is not a 200. `sent`
    (the model and size the request carried) and `url` (the base URL) go into the messages
    of configuration errors, so they name what was really sent."""
    status = err.status_code
    code = getattr(err, "code", None)
    message = getattr(err, "message", None) or str(err)
    if status == 429 and code == "insufficient_quota":
        return FatalProviderError(
            "the OpenAI account has no quota left (429 insufficient_quota): check billing; "
            "retrying cannot help"
        )
    if status == 429:
        return RetryableError(
            f"rate limited (429): {message}",
            retry_after=_retry_after(err.response.headers),
            rate_limited=True,
        )
    if status in (408, 409) or status >= 500:
        return RetryableError(
            f"server error {status}: {message[:200]}",
            retry_after=_retry_after(err.response.headers),
        )
    if status == 401:
        return ProviderConfigurationError(
            "the API rejected the key (401): check OPENAI_API_KEY (and OPENAI_BASE_URL)"
        )
    if status == 403:
        return ProviderConfigurationError(f"access denied (403): {message}")
    asked = f" (the request had {sent})" if sent else ""
    if status == 404:
        where = f" at {redact_url(url)}/embeddings" if url else ""
        return ProviderConfigurationError(
            f"not found (404){where}{asked}: check EMBEDDING_MODEL and OPENAI_BASE_URL (some "
            f"servers answer at the root, others under /v1) ({message})"
        )
    if status == 400:
        match = INPUT_INDEX.search(message)
        if match or getattr(err, "param", None) == "input":
            return InputRejected(message, index=int(match.group(1)) if match else None)
        return ProviderConfigurationError(f"the API refused the request (400){asked}: {message}")
    return ProviderConfigurationError(f"unexpected API error {status}: {message}")
