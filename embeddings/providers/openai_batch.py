"""OpenAI's Batch API for embeddings: request files out, checked answers back.

Half the online price, a separate limit pool (enqueued tokens per model), up to 24 hours.
This module knows the API's shapes and limits and nothing of the database: the backfill
decides which clips go in which batch (`embeddings.backfill.batch_api`). Every answer line is
checked like an online answer (`decode_embeddings`); output files are streamed line by line,
so a 200 MB output never sits whole in memory.
"""

from collections.abc import Callable, Iterator, Sequence

import openai
import orjson

from embeddings.exceptions import InputRejected, ProviderError, RetryableError
from embeddings.providers.batch_shapes import (
    COMPLETION_WINDOW,
    ENDPOINT,
    METADATA_KEY,
    LineAnswer,
    RemoteBatch,
)
from embeddings.providers.openai import INPUT_INDEX, classify_api_error, decode_embeddings


class OpenAIBatchClient:
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        dimensions: int,
        send_dimensions: bool,
        timeout: float,
    ) -> None:
        self.model = model
        self.dimensions = dimensions
        self._extra = {"dimensions": dimensions} if send_dimensions else {}
        # Uploads and downloads are far larger than an online request: 10x its timeout.
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, max_retries=2, timeout=timeout * 10
        )

    def request_line(self, custom_id: str, texts: Sequence[str]) -> bytes:
        body = {"model": self.model, "input": list(texts), "encoding_format": "base64"}
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
        line["body"].update(self._extra)
        return orjson.dumps(line) + b"\n"

    def upload(self, content: bytes, filename: str) -> str:
        upload = self._call(self._client.files.create, file=(filename, content), purpose="batch")
        return upload.id

    def create(self, input_file_id: str, row_id: int) -> RemoteBatch:
        batch = self._call(
            self._client.batches.create,
            input_file_id=input_file_id,
            endpoint=ENDPOINT,
            completion_window=COMPLETION_WINDOW,
            metadata={METADATA_KEY: str(row_id)},
        )
        return RemoteBatch.of(batch)

    def retrieve(self, batch_id: str) -> RemoteBatch:
        return RemoteBatch.of(self._call(self._client.batches.retrieve, batch_id))

    def find(self, row_id: int, *, created_after: int) -> RemoteBatch | None:
        """The batch created for our row `row_id`, if a crash left it unrecorded: the list
        runs newest first, so it stops at batches older than the row."""
        page = self._call(self._client.batches.list, limit=100)
        for listed in page.iter_pages():
            for item in listed.data:
                if item.created_at < created_after:
                    return None
                if (item.metadata or {}).get(METADATA_KEY) == str(row_id):
                    return RemoteBatch.of(item)
        return None

    def answers(self, file_id: str, inputs_of: Callable[[str], int | None]) -> Iterator[LineAnswer]:
        """The checked answers of an output or error file; `inputs_of(custom_id)` is how
        many inputs that request had (None: not ours, the line is ignored)."""
        try:
            with self._client.files.with_streaming_response.content(file_id) as response:
                for raw in response.iter_lines():
                    if raw.strip():
                        answer = self._answer(raw, inputs_of)
                        if answer is not None:
                            yield answer
        except openai.APIStatusError as err:
            raise classify_api_error(err) from None
        except openai.APIConnectionError as err:
            raise RetryableError(f"{type(err).__name__}: {err}") from None

    def _answer(self, raw: str, inputs_of: Callable[[str], int | None]) -> LineAnswer | None:
        try:
            line = orjson.loads(raw)
            custom_id = str(line["custom_id"])
        except (ValueError, KeyError, TypeError):
            return None
        expected = inputs_of(custom_id)
        if not expected:
            return None
        response = line.get("response") or {}
        status = response.get("status_code")
        if status != 200:
            return LineAnswer(custom_id, None, error=_line_error(line, status))
        try:
            vectors, tokens = decode_embeddings(response.get("body"), expected, self.dimensions)
        except ProviderError as err:
            return LineAnswer(custom_id, None, error=err)
        return LineAnswer(custom_id, vectors, tokens)

    @staticmethod
    def _call(method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except openai.APIStatusError as err:
            raise classify_api_error(err) from None
        except openai.APIConnectionError as err:
            raise RetryableError(f"{type(err).__name__}: {err}") from None


def _line_error(line: dict, status: int | None) -> ProviderError:
    """A failed line as the online path would classify its answer."""
    error = line.get("error") or {}
    if status is None:
        return RetryableError(f"not run: {error.get('code')}: {error.get('message')}")
    body = (line.get("response") or {}).get("body") or {}
    detail = (body.get("error") or {}) if isinstance(body, dict) else {}
    message = str(detail.get("message") or f"HTTP {status}")
    if status == 400 and detail.get("param") == "input":
        match = INPUT_INDEX.search(message)
        return InputRejected(message, index=int(match.group(1)) if match else None)
    return RetryableError(f"HTTP {status}: {message[:200]}")
