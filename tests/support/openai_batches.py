"""The Files and Batches endpoints of the fake OpenAI server, as plain state and answers.

`FakeOpenAIServer` routes `/v1/files*` and `/v1/batches*` here. A batch moves through the API's
statuses by time, never by a background thread: it is `validating` at first, `in_progress`
once `Faults.batch_seconds / 2` have passed, and finished at `batch_seconds`. Its fate
(completed, expired or cancelled, which lines fail) is drawn from the faults in force when it
is created, so a test can submit under faults and clear them before collecting. Answers come
from the same deterministic vectors as the online endpoint, built only when the output file is
read, so a 50,000-input batch holds no vectors in memory while it waits.

Simplifications, so nobody relies on them: files never expire; `completion_window` is only
checked for its value; `failed` lines (HTTP 500 in the error file) are drawn per line; an
expired or cancelled batch finishes the first `batch_partial_fraction` of its lines.
"""

from __future__ import annotations

import collections
import email.parser
import email.policy
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_FILE_REQUESTS = 50_000
MAX_EMBEDDING_BATCH_INPUTS = 50_000
OPEN = ("validating", "in_progress", "finalizing", "cancelling")
_LINE_ERRORS = {
    "failed": (
        500,
        {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        },
    ),
    "rejected": (
        400,
        {
            "message": "'$.input[{}]' is invalid.",
            "type": "invalid_request_error",
            "param": "input",
            "code": None,
        },
    ),
}


class BatchAPIError(Exception):
    """An error answer (status, message, param) for the handler to send in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass
class StoredFile:
    id: str
    purpose: str
    filename: str
    content: bytes | None  # None: an output file, built from its batch when read
    created_at: int
    batch: Batch | None = None
    kind: str = ""  # "output" or "error" for files a batch made

    def to_dict(self) -> dict[str, Any]:
        size = len(self.content) if self.content is not None else 0
        return {
            "id": self.id,
            "object": "file",
            "bytes": size,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass
class Line:
    custom_id: str
    body: dict[str, Any]
    # "ok", "failed" (HTTP 500), "rejected" (HTTP 400: an input holds the server's
    # `bad_input_marker`) or "unfinished", decided when the batch finishes.
    outcome: str = ""
    rejected: int = 0  # the refused input's index
    fails: bool = False  # drawn at creation from `batch_failed_line_rate`


@dataclass
class Batch:
    id: str
    input_file_id: str
    metadata: dict[str, str] | None
    created_at: int
    started: float
    lines: list[Line]
    status: str = "validating"
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    finished_at: int | None = None
    cancel_requested: bool = False
    fate: str = "completed"
    partial_fraction: float = 0.5
    seconds: float = 0.0
    marker: str | None = None

    def counts(self) -> dict[str, int]:
        done = sum(line.outcome == "ok" for line in self.lines)
        failed = sum(line.outcome == "failed" for line in self.lines)
        return {"total": len(self.lines), "completed": done, "failed": failed}

    def to_dict(self) -> dict[str, Any]:
        stamp = {
            "completed": "completed_at",
            "expired": "expired_at",
            "cancelled": "cancelled_at",
            "failed": "failed_at",
        }
        data: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": "/v1/embeddings",
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 24 * 3600,
            "request_counts": self.counts(),
            "metadata": self.metadata,
        }
        if self.status in stamp:
            data[stamp[self.status]] = self.finished_at
        return data


@dataclass
class BatchStats:
    """What the Batch API was sent: texts of every created batch, texts it answered."""

    files: int = 0
    batches: int = 0
    lines: int = 0
    texts: collections.Counter[str] = field(default_factory=collections.Counter)
    answered: collections.Counter[str] = field(default_factory=collections.Counter)

    def copy(self) -> BatchStats:
        return BatchStats(
            self.files,
            self.batches,
            self.lines,
            collections.Counter(self.texts),
            collections.Counter(self.answered),
        )

    @property
    def duplicates(self) -> int:
        """Texts sent in more than one batch line (resubmissions show here)."""
        return sum(1 for count in self.texts.values() if count > 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "batches": self.batches,
            "lines": self.lines,
            "texts": {"total": sum(self.texts.values()), "duplicates": self.duplicates},
            "answered": sum(self.answered.values()),
        }


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart/form-data body: name -> (filename, bytes)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BatchAPIError(400, "expected a multipart/form-data body")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class BatchStore:
    """Files and batches of one fake server. `answer` builds an embeddings response body
    (bytes) for (request body, texts) the way the online endpoint does; `draw` is the
    server's seeded coin; `faults` the server's faults now."""

    def __init__(
        self,
        answer: Callable[[dict[str, Any], list[str]], bytes],
        draw: Callable[[float], bool],
        faults: Callable[[], Any],
    ) -> None:
        self._answer = answer
        self._draw = draw
        self._faults = faults
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._batches: dict[str, Batch] = {}
        self._ids = 0
        self._stats = BatchStats()

    @property
    def stats(self) -> BatchStats:
        with self._lock:
            return self._stats.copy()

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = BatchStats()

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids:06d}"

    # -- files --------------------------------------------------------------------------------

    def upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        fields = parse_multipart(content_type, body)
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if purpose != "batch":
            raise BatchAPIError(400, f"this server only takes purpose=batch, not {purpose!r}")
        if "file" not in fields:
            raise BatchAPIError(400, "'file' is a required property", param="file")
        filename, content = fields["file"]
        if len(content) > MAX_FILE_BYTES:
            raise BatchAPIError(400, f"file is larger than {MAX_FILE_BYTES} bytes")
        with self._lock:
            stored = StoredFile(
                self._next_id("file"), purpose, filename or "upload", content, int(time.time())
            )
            self._files[stored.id] = stored
            self._stats.files += 1
        return stored.to_dict()

    def file(self, file_id: str) -> dict[str, Any]:
        return self._file(file_id).to_dict()

    def content(self, file_id: str) -> Iterator[bytes]:
        """The file's bytes, in chunks; a batch's output is built line by line as it goes."""
        stored = self._file(file_id)
        if stored.content is not None:
            yield stored.content
            return
        assert stored.batch is not None
        for line in stored.batch.lines:
            if stored.kind == "output" and line.outcome == "ok":
                yield self._output_line(stored.batch, line)
            elif stored.kind == "error" and line.outcome in ("failed", "rejected", "unfinished"):
                yield self._error_line(stored.batch, line)

    def _file(self, file_id: str) -> StoredFile:
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            raise BatchAPIError(404, f"No such File object: {file_id}", param="id")
        return stored

    # -- batches ------------------------------------------------------------------------------

    def create(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("endpoint") != "/v1/embeddings":
            raise BatchAPIError(400, "this server only batches /v1/embeddings", param="endpoint")
        if request.get("completion_window") != "24h":
            raise BatchAPIError(400, "completion_window must be 24h", param="completion_window")
        metadata = request.get("metadata")
        stored = self._file(str(request.get("input_file_id")))
        if stored.content is None or stored.purpose != "batch":
            raise BatchAPIError(400, "the input file must be uploaded with purpose=batch")
        batch = Batch(
            id="",
            input_file_id=stored.id,
            metadata=metadata,
            created_at=int(time.time()),
            started=time.monotonic(),
            lines=[],
        )
        batch.errors = self._validate(stored.content, batch)
        faults = self._faults()
        batch.seconds = faults.batch_seconds
        batch.partial_fraction = faults.batch_partial_fraction
        batch.marker = faults.bad_input_marker
        if self._draw(faults.batch_expire_rate):
            batch.fate = "expired"
        elif self._draw(faults.batch_cancel_rate):
            batch.fate = "cancelled"
        for line in batch.lines:
            line.fails = self._draw(faults.batch_failed_line_rate)
        if batch.errors:
            batch.status = "failed"
            batch.finished_at = batch.created_at
        with self._lock:
            batch.id = self._next_id("batch")
            self._batches[batch.id] = batch
            self._stats.batches += 1
            if not batch.errors:
                self._stats.lines += len(batch.lines)
                for line in batch.lines:
                    self._stats.texts.update(line.body["input"])
        return batch.to_dict()

    @staticmethod
    def _validate(content: bytes, batch: Batch) -> list[dict[str, Any]]:
        """Read the input file into `batch.lines`; the API's validation errors, if any."""
        errors = []
        seen: set[str] = set()
        inputs = 0
        for number, raw in enumerate(content.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                custom_id, body = line["custom_id"], line["body"]
                texts = body["input"]
            except (ValueError, KeyError, TypeError):
                errors.append({"code": "invalid_json_line", "line": number, "message": "bad"})
                continue
            if line.get("method") != "POST" or line.get("url") != "/v1/embeddings":
                errors.append({"code": "invalid_url", "line": number, "message": "url must match"})
            if custom_id in seen:
                errors.append({"code": "duplicate_custom_id", "line": number, "message": custom_id})
            seen.add(custom_id)
            texts = [texts] if isinstance(texts, str) else texts
            body = {**body, "input": texts}
            inputs += len(texts)
            batch.lines.append(Line(custom_id, body))
        if len(batch.lines) > MAX_FILE_REQUESTS:
            errors.append({"code": "too_many_requests", "message": "over 50,000 requests"})
        if inputs > MAX_EMBEDDING_BATCH_INPUTS:
            errors.append(
                {
                    "code": "too_many_inputs",
                    "message": f"embeddings batches take at most {MAX_EMBEDDING_BATCH_INPUTS} "
                    f"inputs, this one has {inputs}",
                }
            )
        return errors

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch = self._batch(batch_id)
        with self._lock:
            self._advance(batch)
        return batch.to_dict()

    def cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self._batch(batch_id)
        with self._lock:
            self._advance(batch)
            if batch.status in ("validating", "in_progress", "finalizing"):
                batch.cancel_requested = True
                batch.status = "cancelling"
        return batch.to_dict()

    def list(self, after: str | None, limit: int) -> dict[str, Any]:
        with self._lock:
            newest_first = sorted(self._batches.values(), key=lambda b: b.id, reverse=True)
            if after:
                newest_first = [b for b in newest_first if b.id < after]
            page = newest_first[:limit]
            for batch in page:
                self._advance(batch)
        data = [batch.to_dict() for batch in page]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(newest_first) > len(page),
        }

    def _batch(self, batch_id: str) -> Batch:
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise BatchAPIError(404, f"No batch found with id '{batch_id}'.", param="id")
        return batch

    def _advance(self, batch: Batch) -> None:
        """Move a batch on by the time passed since it was created (under the lock)."""
        if batch.status not in OPEN:
            return
        elapsed = time.monotonic() - batch.started
        if batch.cancel_requested:
            self._finish(batch, "cancelled")
        elif elapsed >= batch.seconds:
            self._finish(batch, batch.fate)
        elif elapsed >= batch.seconds / 2:
            batch.status = "in_progress"

    def _finish(self, batch: Batch, status: str) -> None:
        done = len(batch.lines)
        if status != "completed":
            done = math.floor(len(batch.lines) * batch.partial_fraction)
        marker = batch.marker
        for position, line in enumerate(batch.lines):
            if position >= done:
                line.outcome = "unfinished"
            elif marker is not None and any(marker in text for text in line.body["input"]):
                line.outcome = "rejected"
                line.rejected = next(i for i, t in enumerate(line.body["input"]) if marker in t)
            elif line.fails:
                line.outcome = "failed"
            else:
                line.outcome = "ok"
                self._stats.answered.update(line.body["input"])
        batch.status = status
        batch.finished_at = int(time.time())
        outcomes = {line.outcome for line in batch.lines}
        for kind, present in (("output", "ok" in outcomes), ("error", outcomes != {"ok"})):
            if present:
                stored = StoredFile(
                    self._next_id("file"),
                    f"batch_{kind}",
                    f"{batch.id}_{kind}.jsonl",
                    None,
                    batch.finished_at,
                    batch=batch,
                    kind=kind,
                )
                self._files[stored.id] = stored
                setattr(batch, f"{kind}_file_id", stored.id)

    def _output_line(self, batch: Batch, line: Line) -> bytes:
        body = self._answer(line.body, line.body["input"])
        return b"".join(
            (
                b'{"id":"batch_req_',
                line.custom_id.encode(),
                b'","custom_id":',
                json.dumps(line.custom_id).encode(),
                b',"response":{"status_code":200,"request_id":"req_',
                batch.id.encode(),
                b'","body":',
                body,
                b'},"error":null}\n',
            )
        )

    @staticmethod
    def _error_line(batch: Batch, line: Line) -> bytes:
        if line.outcome in ("failed", "rejected"):
            status, error = _LINE_ERRORS[line.outcome]
            if line.outcome == "rejected":
                error = {**error, "message": error["message"].format(line.rejected)}
            entry = {
                "id": f"batch_req_{line.custom_id}",
                "custom_id": line.custom_id,
                "response": {"status_code": status, "request_id": "", "body": {"error": error}},
                "error": None,
            }
        else:
            code = "batch_expired" if batch.status == "expired" else "batch_cancelled"
            entry = {
                "id": f"batch_req_{line.custom_id}",
                "custom_id": line.custom_id,
                "response": None,
                "error": {"code": code, "message": "This request was not executed."},
            }
        return json.dumps(entry).encode() + b"\n"
