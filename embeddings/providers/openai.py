"""OpenAI (or any OpenAI-compatible server) as an embedding provider.

One call is one HTTP request. The client's own retries are off: retrying is the service's
job (tenacity, in one layer), so retries never multiply. Every answer is checked before it is
believed: count, `index` mapping, vector length, finite values.

The request goes through the client's documented `post` (its "undocumented endpoints" door),
its body serialized once by orjson and its answer read raw: the typed `embeddings.create`
walks each of up to 2,048 inputs through its type transform, 14% of a backfill's CPU samples
here, for a body we would send unchanged. Status errors, timeouts and connection errors are
the client's own either way.
"""

import base64
import binascii
import re
from typing import Any

import httpx2
import numpy as np
import openai
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
        self.base_url = base_url or "https://api.openai.com/v1"
        self._size_confirmed = False  # see decode_embeddings
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout
        )

    def describe(self) -> str:
        return f"OpenAI-compatible API at {self.base_url}"

    def embed(self, texts: list[str]) -> ProviderResponse:
        body = {"input": texts, "model": self.model, "encoding_format": "base64"}
        if self.send_dimensions:
            body["dimensions"] = self.dimensions
        try:
            raw = self._client.post(
                "/embeddings", cast_to=httpx2.Response, content=orjson.dumps(body)
            )
        except openai.APIStatusError as err:
            raise classify_api_error(err, sent=self._sent(), url=self.base_url) from None
        except (openai.APIConnectionError, openai.APIResponseValidationError) as err:
            raise RetryableError(f"{type(err).__name__}: {err}") from None
        vectors, tokens = self._decode(raw.content, len(texts))
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
    try:
        decoded = base64.b64decode("".join(strings), validate=True)
    except (binascii.Error, ValueError):
        return None
    vectors[order] = np.frombuffer(decoded, dtype="<f4").reshape(expected, dimensions)
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
    err: openai.APIStatusError, *, sent: str | None = None, url: str | None = None
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
