"""A fake OpenAI embeddings server for tests and benchmarks.

Real HTTP on 127.0.0.1, so the real ``openai`` client (and its ``httpx2`` transport, which
httpx mocking libraries do not see) is exercised end to end: connection reuse, retries, header
parsing and base64 decoding all run as in production.

Vectors are deterministic (seeded from the text), so tests can check every stored vector with
:func:`expected_vector`. Faults (latency, errors, drops, wrong answers, rate limits) are
injected through :class:`Faults`, which can be swapped while the server runs, in process or
over HTTP (``/_control/*``) when the server runs in a subprocess::

    python -m tests.support.openai_server --port 0 --rpm 3000 --tpm 1000000

Deliberate simplifications, documented so nobody relies on them:

* Rate limits are two token buckets (requests, tokens): capacity = the per-minute limit,
  refilled continuously at limit/60 per second, starting full. A request rejected with 429
  consumes nothing. Requests rejected with 400 and injected 5xx errors do consume budget (the
  real API counts failed requests too); 401s, quota errors and dropped connections do not.
* Billing-style stats (``ok``, ``inputs_received``, ``tokens``, ``texts``) count every 200
  response, including those carrying an injected content fault (the real API would bill them).
* Token counts are the server's estimate, ceil(UTF-8 bytes / 4), not a tokenizer.
* ``encoding_format="float"`` costs ~0.3 s per 1M floats here (exact float reprs) and more in
  the client; benchmarks should use the client's default (base64).
* Only string inputs are embedded; token-array inputs get a 400.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import typing
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.openai_batches import BatchAPIError, BatchStats, BatchStore

EMBEDDINGS_PATH = "/v1/embeddings"
FILES_PATH = "/v1/files"
BATCHES_PATH = "/v1/batches"
MAX_INPUT_TOKENS = 8192
API_REFERENCE = "Please check the API reference: https://platform.openai.com/docs/api-reference."

# Status recorded in the request log for a connection closed without any response.
DROPPED_STATUS = 0


def estimate_tokens(text: str) -> int:
    """The server-side token estimate (UTF-8 bytes / 4, rounded up, at least 1).

    OpenAI checks per-request token limits by such an estimate, not by the tokenizer.
    """
    return max(1, -(-len(text.encode("utf-8")) // 4))


def _seed_for(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")


def expected_vector(text: str, dimensions: int) -> np.ndarray:
    """The vector the server returns for ``text``: float32, unit length, deterministic.

    Tests compare stored vectors with it, so it depends on nothing but its arguments.
    """
    vector = np.random.default_rng(_seed_for(text.encode("utf-8"))).standard_normal(dimensions)
    vector /= np.linalg.norm(vector)
    return vector.astype(np.float32)


def _vector_matrix(texts: list[str], dimensions: int) -> np.ndarray:
    """``expected_vector`` for many texts at once, as one C-contiguous float32 matrix."""
    matrix = np.empty((len(texts), dimensions), dtype=np.float64)
    for row, text in enumerate(texts):
        rng = np.random.default_rng(_seed_for(text.encode("utf-8")))
        matrix[row] = rng.standard_normal(dimensions)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix, dtype=np.float32)


@dataclass
class Faults:
    """What the server does wrong. All off by default; ``*_rate`` fields are probabilities
    drawn per request from ``random.Random(seed)``."""

    latency_ms: float = 0
    error_5xx_rate: float = 0
    drop_rate: float = 0
    shuffle: bool = False
    short_rate: float = 0
    wrong_dimensions_rate: float = 0
    nan_rate: float = 0
    wrong_index_rate: float = 0
    malformed_json_rate: float = 0
    html_error_rate: float = 0
    bad_input_marker: str | None = None
    insufficient_quota: bool = False
    unauthorized: bool = False
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    retry_after_header: bool = True
    max_inputs: int = 2048
    max_request_tokens: int = 300_000
    ignore_dimensions: bool = False
    native_dimensions: int = 1536
    # Modes of servers that are not OpenAI: the path the API answers under ("" = at the root,
    # as Infinity does); the models `GET {prefix}/models` lists, comma-separated (None: no
    # such endpoint, 404; when set, embeddings for any other model are a 404
    # model_not_found); `usage.prompt_tokens` in characters (as Infinity reports it).
    prefix: str = "/v1"
    served_models: str | None = None
    usage_in_characters: bool = False
    # The Batch API (tests/support/openai_batches.py): seconds a batch takes; per-line and
    # per-batch faults; what share of its lines an expired or cancelled batch finished.
    batch_seconds: float = 0.0
    batch_failed_line_rate: float = 0
    batch_expire_rate: float = 0
    batch_cancel_rate: float = 0
    batch_partial_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name.endswith("_rate") and not 0 <= getattr(self, f.name) <= 1:
                raise ValueError(f"{f.name} must be within [0, 1]")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        if self.batch_seconds < 0 or not 0 <= self.batch_partial_fraction <= 1:
            raise ValueError("batch_seconds must be >= 0, batch_partial_fraction within [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ServerStats:
    """A snapshot of what the server saw; safe to keep while the server goes on."""

    requests: int = 0
    ok: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    dropped: int = 0
    faulted: int = 0
    connections: int = 0
    inputs_received: int = 0
    tokens: int = 0
    texts: collections.Counter[str] = field(default_factory=collections.Counter)
    # (time.monotonic() at arrival, n_inputs, tokens, status); status 0 = dropped.
    request_log: list[tuple[float, int, int, int]] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Texts answered more than once (a client that re-requests done work shows here)."""
        return sum(1 for count in self.texts.values() if count > 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form used by ``GET /_control/stats``."""
        return {
            "requests": self.requests,
            "ok": self.ok,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "rate_limited": self.rate_limited,
            "dropped": self.dropped,
            "faulted": self.faulted,
            "connections": self.connections,
            "inputs_received": self.inputs_received,
            "tokens": self.tokens,
            "texts": {
                "distinct": len(self.texts),
                "duplicates": self.duplicates,
                "total": sum(self.texts.values()),
            },
            "request_log": [list(entry) for entry in self.request_log],
        }


def paced_tokens_per_second(request_log: Iterable[Sequence[float]], tpm: int) -> float:
    """Tokens/s answered beyond the first TPM tokens, from a `request_log`: the buckets start
    full, so the first TPM tokens are free of the pace and the rest came at this rate from
    the first answered request to the last. It counts a slow start against the client, never
    for it: the server's bucket guarantees the result is at most TPM/60 (plus the last
    request's own tokens)."""
    answered = sorted(
        (arrived, tokens) for arrived, _, tokens, status in request_log if status == 200
    )
    total = sum(tokens for _, tokens in answered)
    return (total - tpm) / (answered[-1][0] - answered[0][0])


def format_duration(seconds: float) -> str:
    """Format like the ``x-ratelimit-reset-*`` headers: ``12ms``, ``1s``, ``2.4s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    sec_text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{sec_text}"
    if minutes:
        return f"{minutes}m{sec_text}"
    return sec_text


class _Bucket:
    """A token bucket refilled continuously, like the real per-minute limits."""

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.level = float(limit)
        self.rate = limit / 60.0
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(float(self.limit), self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, cost: float) -> float:
        return 0.0 if self.level >= cost else (cost - self.level) / self.rate

    def headers(self, kind: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{kind}": str(self.limit),
            f"x-ratelimit-remaining-{kind}": str(max(0, int(self.level))),
            f"x-ratelimit-reset-{kind}": format_duration((self.limit - self.level) / self.rate),
        }


@dataclass
class _LimitDecision:
    allowed: bool
    headers: dict[str, str]
    kind: str = ""
    wait: float = 0.0
    too_large: bool = False


class _RateLimiter:
    """Requests and tokens buckets; rebuilt full whenever the configured limit changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def _bucket(self, kind: str, limit: int | None, now: float) -> _Bucket | None:
        if limit is None:
            self._buckets.pop(kind, None)
            return None
        bucket = self._buckets.get(kind)
        if bucket is None or bucket.limit != limit:
            bucket = self._buckets[kind] = _Bucket(limit, now)
        bucket.refill(now)
        return bucket

    def acquire(self, faults: Faults, tokens: int) -> _LimitDecision:
        now = time.monotonic()
        with self._lock:
            pairs = [
                (kind, bucket, cost)
                for kind, limit, cost in (
                    ("requests", faults.requests_per_minute, 1),
                    ("tokens", faults.tokens_per_minute, tokens),
                )
                if (bucket := self._bucket(kind, limit, now)) is not None
            ]
            decision = _LimitDecision(allowed=True, headers={})
            for kind, bucket, cost in pairs:
                if cost > bucket.limit:
                    decision = _LimitDecision(False, {}, kind, math.inf, too_large=True)
                    break
                wait = bucket.wait_for(cost)
                if wait > decision.wait:
                    decision = _LimitDecision(False, {}, kind, wait)
            if decision.allowed:
                for _, bucket, cost in pairs:
                    bucket.level -= cost
            for kind, bucket, _ in pairs:
                decision.headers.update(bucket.headers(kind))
            return decision


class _HTTPError(Exception):
    """An error answer in OpenAI's JSON shape, raised from deep inside request handling."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.headers = headers or {}


def _invalid_input(path: str = "$.input") -> _HTTPError:
    return _HTTPError(400, f"'{path}' is invalid. {API_REFERENCE}", param="input")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # many clients connecting at once must not hit SYN retries
    owner: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (or ``stop()`` cutting them off) is normal here, not news."""
        if self.owner.verbose or not isinstance(sys.exc_info()[1], ConnectionError | OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Serves ``POST /v1/embeddings`` and the ``/_control`` endpoints."""

    protocol_version = "HTTP/1.1"  # keep-alive, so the client reuses its connections
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Server
    server_version = "FakeOpenAI/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.verbose:
            super().log_message(format, *args)

    def setup(self) -> None:
        super().setup()
        self.server.owner._connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._connection_closed(self.connection)

    # -- plumbing -----------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _not_found(self) -> None:
        message = f"Invalid URL ({self.command} {self.path})"
        self._send_json(404, _HTTPError(404, message).body)

    # -- routing ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._read_body()
        path = self.path.split("?", 1)[0]
        faults = self.server.owner.faults
        if path == faults.prefix + "/models" and faults.served_models is not None:
            models = [name for name in faults.served_models.split(",") if name]
            data = [{"id": name, "object": "model", "owned_by": "test"} for name in models]
            self._send_json(200, {"object": "list", "data": data})
        elif path == "/_control/stats":
            self._send_json(200, self.server.owner.stats.to_dict())
        elif path == "/_control/faults":
            self._send_json(200, self.server.owner.faults.to_dict())
        elif path == "/_control/batch_stats":
            self._send_json(200, self.server.owner.batch_stats.to_dict())
        elif path.startswith((FILES_PATH, BATCHES_PATH)):
            self._batch_api("GET", path, b"")
        else:
            self._not_found()

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == self.server.owner.faults.prefix + "/embeddings":
            with self.server.owner._serving_one():
                self._embeddings()
            return
        body = self._read_body()
        owner = self.server.owner
        if path.startswith((FILES_PATH, BATCHES_PATH)):
            self._batch_api("POST", path, body)
            return
        if path == "/_control/faults":
            try:
                owner.faults = Faults(**json.loads(body or b"{}"))
            except (TypeError, ValueError) as exc:
                self._send_json(400, {"error": {"message": str(exc)}})
                return
            self._send_json(200, owner.faults.to_dict())
        elif path == "/_control/reset":
            owner.reset_stats()
            owner.reset_limits()
            self._send_json(200, {"reset": True})
        else:
            self._not_found()

    # -- files and batches --------------------------------------------------------------------

    def _batch_api(self, method: str, path: str, body: bytes) -> None:
        store, faults = self.server.owner.batches, self.server.owner.faults
        parts = path.strip("/").split("/")[1:]  # ["files", id, "content"], ["batches", ...]
        try:
            auth = self.headers.get("Authorization", "")
            if faults.unauthorized or not auth.startswith("Bearer ") or not auth[7:].strip():
                raise BatchAPIError(401, "Incorrect API key provided.")
            if method == "POST" and parts == ["files"]:
                answer = store.upload(self.headers.get("Content-Type", ""), body)
            elif method == "GET" and len(parts) == 3 and parts[::2] == ["files", "content"]:
                self._send_chunked(store.content(parts[1]))
                return
            elif method == "GET" and len(parts) == 2 and parts[0] == "files":
                answer = store.file(parts[1])
            elif method == "POST" and parts == ["batches"]:
                answer = store.create(json.loads(body or b"{}"))
            elif method == "GET" and parts == ["batches"]:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                after = query.get("after", [None])[0]
                answer = store.list(after, int(query.get("limit", ["20"])[0]))
            elif method == "GET" and len(parts) == 2 and parts[0] == "batches":
                answer = store.retrieve(parts[1])
            elif method == "POST" and len(parts) == 3 and parts[::2] == ["batches", "cancel"]:
                answer = store.cancel(parts[1])
            else:
                self._not_found()
                return
        except BatchAPIError as exc:
            self._send_json(exc.status, _HTTPError(exc.status, str(exc), param=exc.param).body)
            return
        except ValueError as exc:
            self._send_json(400, _HTTPError(400, f"bad request: {exc}").body)
            return
        self._send_json(200, answer)

    def _send_chunked(self, chunks: Iterator[bytes]) -> None:
        """A file's content as it is built: no 200 MB output held whole in memory."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            if chunk:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    # -- embeddings ---------------------------------------------------------------------------

    def _embeddings(self) -> None:
        owner = self.server.owner
        arrived = time.monotonic()
        faults = owner.faults  # one consistent view, even if replaced meanwhile
        body = self._read_body()
        owner._wait_while_held()
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        drop, error_5xx, html_error, malformed = owner._draw(
            faults.drop_rate,
            faults.error_5xx_rate,
            faults.html_error_rate,
            faults.malformed_json_rate,
        )
        if drop:
            self.close_connection = True
            owner._record(arrived, DROPPED_STATUS, [], 0)
            return
        texts: list[str] = []
        tokens = 0
        try:
            auth = self.headers.get("Authorization", "")
            if faults.unauthorized or not auth.startswith("Bearer ") or not auth[7:].strip():
                raise _HTTPError(
                    401,
                    "Incorrect API key provided. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                )
            if faults.insufficient_quota:
                raise _HTTPError(
                    429,
                    "You exceeded your current quota, please check your plan and billing details.",
                    type_="insufficient_quota",
                    code="insufficient_quota",
                )
            request, texts = self._parse(body)
            tokens_each = [estimate_tokens(text) for text in texts]
            tokens = sum(tokens_each)
            limit = owner._limiter.acquire(faults, tokens)
            if not limit.allowed:
                raise self._rate_limit_error(faults, limit, request.get("model"), tokens)
            self._validate(faults, request, texts, tokens_each)
            if faults.served_models is not None and request["model"] not in (
                faults.served_models.split(",")
            ):
                raise _HTTPError(
                    404,
                    f"The model `{request['model']}` does not exist or you do not have access "
                    "to it.",
                    code="model_not_found",
                )
            if error_5xx:
                raise _HTTPError(
                    500,
                    "The server had an error while processing your request. Sorry about that!",
                    type_="server_error",
                    headers=limit.headers,
                )
            if html_error:
                owner._record(arrived, 502, texts, tokens, billed=False)
                self._send(502, _HTML_502, content_type="text/html; charset=utf-8")
                return
            reported = sum(len(text) for text in texts) if faults.usage_in_characters else tokens
            payload, faulted = owner.answer(faults, request, texts, reported, malformed)
        except _HTTPError as exc:
            owner._record(arrived, exc.status, texts, tokens, billed=False)
            self._send_json(exc.status, exc.body, exc.headers)
            return
        owner._record(arrived, 200, texts, tokens, billed=True, faulted=faulted)
        headers = {
            "openai-model": str(request.get("model")),
            "openai-processing-ms": str(int((time.monotonic() - arrived) * 1000)),
            "x-request-id": f"req_{owner._next_request_id()}",
            **limit.headers,
        }
        self._send(200, payload, headers)

    @staticmethod
    def _parse(body: bytes) -> tuple[dict[str, Any], list[str]]:
        try:
            request = json.loads(body)
        except ValueError:
            raise _HTTPError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
            ) from None
        if not isinstance(request, dict):
            raise _HTTPError(400, f"Invalid type for request body. {API_REFERENCE}")
        if "input" not in request:
            raise _HTTPError(400, "'input' is a required property", param="input")
        raw = request["input"]
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts:
            raise _invalid_input()
        if not all(isinstance(text, str) for text in texts):
            # Token arrays are valid for OpenAI but this fake only embeds strings.
            raise _invalid_input()
        return request, texts

    @staticmethod
    def _rate_limit_error(
        faults: Faults, limit: _LimitDecision, model: object, tokens: int
    ) -> _HTTPError:
        if limit.kind == "requests":
            per_minute, used = faults.requests_per_minute, 1
            label = "requests per min (RPM)"
        else:
            per_minute, used = faults.tokens_per_minute, tokens
            label = "tokens per min (TPM)"
        if limit.too_large:
            message = (
                f"Request too large for {model} on {label}: Limit {per_minute}, "
                f"Requested {used}. The input or output tokens must be reduced in order to run "
                "successfully."
            )
            return _HTTPError(429, message, limit.kind, code="rate_limit_exceeded")
        headers = dict(limit.headers)
        if faults.retry_after_header:
            headers["retry-after"] = str(max(1, math.ceil(limit.wait)))
            headers["retry-after-ms"] = str(max(1, math.ceil(limit.wait * 1000)))
        message = (
            f"Rate limit reached for {model} on {label}: Limit {per_minute}, "
            f"Requested {used}. Please try again in {format_duration(limit.wait)}."
        )
        return _HTTPError(429, message, limit.kind, code="rate_limit_exceeded", headers=headers)

    @staticmethod
    def _validate(
        faults: Faults, request: dict[str, Any], texts: list[str], tokens_each: list[int]
    ) -> None:
        if not request.get("model") or not isinstance(request["model"], str):
            raise _HTTPError(400, "you must provide a model parameter", param="model")
        if len(texts) > faults.max_inputs:
            raise _HTTPError(
                400,
                f"Invalid 'input': array too long. Expected an array with maximum length "
                f"{faults.max_inputs}, but got an array with length {len(texts)} instead.",
                param="input",
                code="array_above_max_length",
            )
        for text in texts:
            if not text.strip():
                raise _invalid_input()
        if faults.bad_input_marker is not None:
            for index, text in enumerate(texts):
                if faults.bad_input_marker in text:
                    raise _invalid_input(f"$.input[{index}]")
        for count in tokens_each:
            if count > MAX_INPUT_TOKENS:
                raise _HTTPError(
                    400,
                    f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however "
                    f"you requested {count} tokens ({count} in your prompt; 0 for the "
                    "completion). Please reduce your prompt; or completion length.",
                    param="input",
                )
        total = sum(tokens_each)
        if total > faults.max_request_tokens:
            raise _HTTPError(
                400,
                f"Requested {total} tokens, max {faults.max_request_tokens} tokens per request",
                type_="max_tokens_per_request",
                code="max_tokens_per_request",
            )
        encoding = request.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise _HTTPError(
                400,
                f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.",
                param="encoding_format",
                code="invalid_value",
            )
        dimensions = request.get("dimensions")
        if dimensions is None or faults.ignore_dimensions:
            return
        valid = isinstance(dimensions, int) and not isinstance(dimensions, bool)
        if not valid or not 1 <= dimensions <= faults.native_dimensions:
            raise _HTTPError(
                400,
                f"Invalid 'dimensions': expected an integer from 1 to "
                f"{faults.native_dimensions}, got {dimensions!r}.",
                param="dimensions",
            )


def _embeddings_body(
    owner: FakeOpenAIServer,
    faults: Faults,
    request: dict[str, Any],
    texts: list[str],
    tokens: int,
    malformed: bool,
) -> tuple[bytes, bool]:
    """Build the 200 body, applying the content faults. Returns (body, faulted)."""
    dimensions = request.get("dimensions")
    if dimensions is None or faults.ignore_dimensions:
        dimensions = faults.native_dimensions
    n = len(texts)
    matrix = _vector_matrix(texts, dimensions)
    vectors: list[np.ndarray] = list(matrix)
    order = list(range(n))
    faulted = malformed
    with owner._rng_lock:
        rng = owner._rng
        if faults.wrong_dimensions_rate and rng.random() < faults.wrong_dimensions_rate:
            row = rng.randrange(n)
            vectors[row] = expected_vector(texts[row], dimensions - 1 or 2)
            faulted = True
        if faults.nan_rate and rng.random() < faults.nan_rate:
            row = rng.randrange(n)
            vectors[row] = vectors[row].copy()
            vectors[row][rng.randrange(len(vectors[row]))] = np.nan
            faulted = True
        if faults.wrong_index_rate and rng.random() < faults.wrong_index_rate:
            if n >= 2:
                a, b = rng.sample(range(n), 2)
                vectors[a], vectors[b] = vectors[b], vectors[a]
            else:
                vectors[0] = expected_vector(texts[0] + "\x00wrong", dimensions)
            faulted = True
        if faults.short_rate and rng.random() < faults.short_rate:
            order.pop(rng.randrange(n))
            faulted = True
        if faults.shuffle:
            rng.shuffle(order)
    if request.get("encoding_format", "float") == "base64":
        little_endian = [vector.astype("<f4", copy=False) for vector in vectors]
        encoded = ['"' + base64.b64encode(little_endian[i]).decode() + '"' for i in order]
    else:
        encoded = [json.dumps(vectors[i].tolist()) for i in order]
    items = ",".join(
        f'{{"object":"embedding","index":{i},"embedding":{vector}}}'
        for i, vector in zip(order, encoded, strict=True)
    )
    body = (
        f'{{"object":"list","data":[{items}],"model":{json.dumps(request["model"])},'
        f'"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}'
    ).encode()
    if malformed:
        body = body[: max(1, len(body) // 2)]
    return body, faulted


_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class FakeOpenAIServer:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint on a background thread.

    Use as a context manager or call ``start()`` / ``stop()``. Point the client at
    ``base_url``; change ``faults`` at any time.
    """

    def __init__(
        self,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        self._faults = faults or Faults()
        self.host = host
        self.port = port
        self.verbose = verbose
        self._rng_lock = threading.Lock()
        self._rng = random.Random(self._faults.seed)
        self._stats_lock = threading.Lock()
        self._stats = ServerStats()
        self._limiter = _RateLimiter()
        self._request_ids = 0
        self._sockets: set[socket.socket] = set()
        self._open = threading.Event()  # cleared while `holding()`: answers wait
        self._open.set()
        self._waiting = 0
        self._serving = 0
        self._hold_timeout = 60.0
        self.batches = BatchStore(
            self._batch_answer, lambda rate: self._draw(rate)[0], lambda: self.faults
        )
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        """Bind and serve on a daemon thread; ``port=0`` picks a free port."""
        if self._httpd is not None:
            return self
        httpd = _Server((self.host, self.port), _Handler)
        httpd.owner = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-openai-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections, so pooled clients see it too."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._stats_lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What to pass as the client's ``base_url``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def url(self) -> str:
        """The server root, where ``/_control`` lives."""
        return f"http://{self.host}:{self.port}"

    # -- configuration ------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        if not isinstance(faults, Faults):
            raise TypeError("faults must be a Faults instance")
        with self._rng_lock:
            # Reseed on every change, so a run after set_faults() draws the same sequence.
            self._rng = random.Random(faults.seed)
            self._faults = faults

    def set_faults(self, **fields: Any) -> Faults:
        """Replace all faults (fields not given fall back to their defaults)."""
        self.faults = Faults(**fields)
        return self.faults

    def update_faults(self, **fields: Any) -> Faults:
        """Change some faults and keep the rest."""
        self.faults = dataclasses.replace(self._faults, **fields)
        return self.faults

    def reset_limits(self) -> None:
        """Refill the rate-limit buckets."""
        self._limiter.reset()

    @contextlib.contextmanager
    def holding(self, timeout: float = 60.0) -> Iterator[None]:
        """Embeddings requests that arrive inside the block get no answer until it ends (or
        `timeout` passes): a test can then know that a request is in flight, not guess it
        from latency. `waiting` counts the requests held."""
        self._open.clear()
        self._hold_timeout = timeout
        try:
            yield
        finally:
            self._open.set()

    @property
    def waiting(self) -> int:
        with self._stats_lock:
            return self._waiting

    @property
    def serving(self) -> int:
        """Embeddings requests read and not yet answered (held ones included)."""
        with self._stats_lock:
            return self._serving

    @contextlib.contextmanager
    def _serving_one(self) -> Iterator[None]:
        with self._stats_lock:
            self._serving += 1
        try:
            yield
        finally:
            with self._stats_lock:
                self._serving -= 1

    def _wait_while_held(self) -> None:
        if self._open.is_set():
            return
        with self._stats_lock:
            self._waiting += 1
        try:
            self._open.wait(self._hold_timeout)
        finally:
            with self._stats_lock:
                self._waiting -= 1

    # -- stats --------------------------------------------------------------------------------

    @property
    def stats(self) -> ServerStats:
        """A consistent copy of the counters."""
        with self._stats_lock:
            s = self._stats
            return dataclasses.replace(
                s,
                status_counts=dict(s.status_counts),
                texts=collections.Counter(s.texts),
                request_log=list(s.request_log),
            )

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._stats = ServerStats()
        self.batches.reset_stats()

    @property
    def batch_stats(self) -> BatchStats:
        """What the Batch API was sent and answered (the online endpoint's are `stats`)."""
        return self.batches.stats

    # -- answers ------------------------------------------------------------------------------

    def answer(
        self,
        faults: Faults,
        request: dict[str, Any],
        texts: list[str],
        tokens: int,
        malformed: bool,
    ) -> tuple[bytes, bool]:
        """An embeddings response body for `texts` with the content faults applied."""
        return _embeddings_body(self, faults, request, texts, tokens, malformed)

    def _batch_answer(self, request: dict[str, Any], texts: list[str]) -> bytes:
        """A batch line's body: the online answer, content faults included."""
        tokens = sum(estimate_tokens(text) for text in texts)
        return self.answer(self.faults, request, texts, tokens, False)[0]

    # -- used by the handler ------------------------------------------------------------------

    def _draw(self, *rates: float) -> list[bool]:
        """Draw only for rates that are set, so an unused fault does not shift the others."""
        if not any(rates):
            return [False] * len(rates)
        with self._rng_lock:
            return [bool(rate) and self._rng.random() < rate for rate in rates]

    def _next_request_id(self) -> int:
        with self._stats_lock:
            self._request_ids += 1
            return self._request_ids

    def _connection_opened(self, sock: socket.socket) -> None:
        with self._stats_lock:
            self._sockets.add(sock)
            self._stats.connections += 1

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._stats_lock:
            self._sockets.discard(sock)

    def _record(
        self,
        arrived: float,
        status: int,
        texts: list[str],
        tokens: int,
        billed: bool = False,
        faulted: bool = False,
    ) -> None:
        with self._stats_lock:
            s = self._stats
            s.requests += 1
            s.request_log.append((arrived, len(texts), tokens, status))
            if status == DROPPED_STATUS:
                s.dropped += 1
                return
            s.status_counts[status] = s.status_counts.get(status, 0) + 1
            if status == 429:
                s.rate_limited += 1
            if billed:
                s.ok += 1
                s.faulted += faulted
                s.inputs_received += len(texts)
                s.tokens += tokens
                s.texts.update(texts)


# -- command line -----------------------------------------------------------------------------


def _fault_options() -> Iterator[tuple[str, Any, Any]]:
    """(field name, argparse type, default) for every Faults field."""
    hints = typing.get_type_hints(Faults)
    for f in dataclasses.fields(Faults):
        hint = hints[f.name]
        base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
        yield f.name, base, f.default


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.openai_server",
        description="Fake OpenAI embeddings server. Prints its base URL as the first line.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    for name, type_, default in _fault_options():
        flags = ["--" + name.replace("_", "-")]
        if name == "requests_per_minute":
            flags.append("--rpm")
        elif name == "tokens_per_minute":
            flags.append("--tpm")
        if type_ is bool:
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction)
        else:
            parser.add_argument(*flags, dest=name, type=type_, help=f"default {default}")
    parser.set_defaults(**{name: default for name, _, default in _fault_options()})
    return parser.parse_args(argv)


def start_subprocess(*args: str) -> tuple[subprocess.Popen, str]:
    """Run this server as `python -m tests.support.openai_server --port 0 ARGS` in the
    background, so it shares no GIL with what it serves; return the process and its base URL
    (its first line). The caller ends it with `terminate()`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.openai_server", "--port", "0", *args],
        cwd=Path(__file__).resolve().parents[2],  # the repository, where `tests` imports
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http"):
        process.kill()
        process.wait()
        raise RuntimeError(f"the test server did not start (said {base_url!r})")
    return process, base_url


def main(argv: list[str] | None = None) -> int:
    """Serve in the foreground until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    faults = Faults(**{name: getattr(args, name) for name, _, _ in _fault_options()})
    stop = threading.Event()
    server = FakeOpenAIServer(faults, host=args.host, port=args.port, verbose=args.verbose)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        print(server.base_url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
