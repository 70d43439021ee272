"""The fake OpenAI server, exercised through the real ``openai`` client over real HTTP.

Other tests trust this server to behave like the API (and to misbehave on request), so its
contract is pinned here.
"""

from __future__ import annotations

import base64
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from tests.support.openai_server import (
    FakeOpenAIServer,
    Faults,
    estimate_tokens,
    expected_vector,
    format_duration,
    start_subprocess,
)

MODEL = "text-embedding-3-small"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def server(shared_server: FakeOpenAIServer) -> FakeOpenAIServer:
    """The module's server with faults, stats and rate-limit buckets reset."""
    shared_server.set_faults()
    shared_server.reset_stats()
    shared_server.reset_limits()
    return shared_server


@pytest.fixture
def client(server: FakeOpenAIServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="test", base_url=server.base_url, max_retries=0) as c:
        yield c


def as_matrix(response: Any) -> dict[int, np.ndarray]:
    return {item.index: np.asarray(item.embedding, dtype=np.float32) for item in response.data}


def http(
    url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- vectors --------------------------------------------------------------------------------------


def test_expected_vector_is_deterministic_unit_float32() -> None:
    a = expected_vector("hello", 16)
    assert a.dtype == np.float32 and a.shape == (16,)
    assert np.array_equal(a, expected_vector("hello", 16))
    assert not np.array_equal(a, expected_vector("hello!", 16))
    assert math.isclose(float(np.linalg.norm(a)), 1.0, rel_tol=1e-6)
    assert estimate_tokens("") == 1 and estimate_tokens("abcde") == 2
    assert estimate_tokens("é" * 4) == 2  # UTF-8 bytes, not characters


@pytest.mark.parametrize("encoding", [None, "float"])
def test_vectors_match_expected_and_honour_dimensions(
    client: openai.OpenAI, encoding: str | None
) -> None:
    texts = ["first clip", "second clip ünïcode", "third"]
    extra = {} if encoding is None else {"encoding_format": encoding}
    response = client.embeddings.create(input=texts, model=MODEL, dimensions=64, **extra)
    vectors = as_matrix(response)
    assert sorted(vectors) == [0, 1, 2]
    for i, text in enumerate(texts):
        assert np.array_equal(vectors[i], expected_vector(text, 64))
    tokens = sum(estimate_tokens(t) for t in texts)
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    assert response.model == MODEL


def test_explicit_base64_returns_little_endian_float32(client: openai.OpenAI) -> None:
    response = client.embeddings.create(
        input="one", model=MODEL, dimensions=32, encoding_format="base64"
    )
    raw = response.data[0].embedding
    assert isinstance(raw, str)
    vector = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert np.array_equal(vector, expected_vector("one", 32))


def test_native_dimensions_without_dimensions_or_when_ignored(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    response = client.embeddings.create(input="x", model=MODEL)
    assert len(response.data[0].embedding) == 1536
    server.set_faults(ignore_dimensions=True, native_dimensions=48)
    response = client.embeddings.create(input="x", model=MODEL, dimensions=8)
    assert np.array_equal(as_matrix(response)[0], expected_vector("x", 48))


def test_keep_alive_reuses_one_connection(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    before = server.stats.connections
    for i in range(5):
        client.embeddings.create(input=f"t{i}", model=MODEL, dimensions=4)
    assert server.stats.connections - before <= 1


def test_a_full_size_request_is_answered_whole(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    texts = [f"clip number {i}" for i in range(2048)]
    response = client.embeddings.create(input=texts, model=MODEL, dimensions=768)
    assert len(response.data) == 2048
    assert np.array_equal(as_matrix(response)[2047], expected_vector(texts[2047], 768))


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "   \n\t", ["ok", ""], ["ok", "  "], []])
def test_blank_input_is_400(client: openai.OpenAI, bad: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(input=bad, model=MODEL)
    assert "'$.input' is invalid" in info.value.message


def test_bad_input_marker_names_the_index(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_faults(bad_input_marker="<POISON>")
    texts = ["a", "b", "c", "x <POISON> y", "e"]
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(input=texts, model=MODEL)
    assert "'$.input[3]' is invalid" in info.value.message
    assert info.value.param == "input" and info.value.type == "invalid_request_error"
    client.embeddings.create(input=texts[:3] + texts[4:], model=MODEL, dimensions=4)
    assert server.stats.status_counts == {400: 1, 200: 1}


def test_request_limits_are_400(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_faults(max_inputs=3, max_request_tokens=10)
    with pytest.raises(openai.BadRequestError, match="maximum length 3"):
        client.embeddings.create(input=["a"] * 4, model=MODEL)
    with pytest.raises(openai.BadRequestError, match="max 10 tokens per request"):
        client.embeddings.create(input=["a" * 40, "b"], model=MODEL)
    server.set_faults()
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192"):
        client.embeddings.create(input="a" * (4 * 8192 + 1), model=MODEL)
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(input="a", model=MODEL, dimensions=4096)
    assert server.stats.ok == 0 and server.stats.texts == {}


def test_authentication(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    status, body = http(server.base_url + "/embeddings", {"input": "a", "model": MODEL})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    server.set_faults(unauthorized=True)
    with pytest.raises(openai.AuthenticationError) as info:
        client.embeddings.create(input="a", model=MODEL)
    assert info.value.code == "invalid_api_key"


def test_insufficient_quota(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_faults(insufficient_quota=True)
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(input="a", model=MODEL)
    assert info.value.code == "insufficient_quota"
    assert server.stats.rate_limited == 1


# -- rate limits ----------------------------------------------------------------------------------


def test_requests_per_minute_limit(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_faults(requests_per_minute=2)
    raw = client.embeddings.with_raw_response.create(input="a", model=MODEL, dimensions=4)
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.headers["x-ratelimit-reset-requests"] == "30s"
    assert "x-ratelimit-limit-tokens" not in raw.headers
    client.embeddings.create(input="b", model=MODEL, dimensions=4)
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(input="c", model=MODEL, dimensions=4)
    err = info.value
    assert err.code == "rate_limit_exceeded" and err.type == "requests"
    headers = err.response.headers
    assert headers["retry-after"] == "30"  # one request refills in 60 s / 2
    assert 29_000 < int(headers["retry-after-ms"]) <= 30_000
    assert headers["x-ratelimit-remaining-requests"] == "0"
    stats = server.stats
    assert stats.rate_limited == 1 and stats.ok == 2 and stats.texts["c"] == 0


def test_tokens_per_minute_limit_refills(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_faults(tokens_per_minute=600)  # 10 tokens a second, bucket of 600
    raw = client.embeddings.with_raw_response.create(input="a" * 2396, model=MODEL, dimensions=4)
    assert raw.headers["x-ratelimit-remaining-tokens"] == "1"
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(input="b" * 12, model=MODEL, dimensions=4)  # 3 tokens
    headers = info.value.response.headers
    assert info.value.type == "tokens"
    assert headers["retry-after"] == "1"
    wait_ms = int(headers["retry-after-ms"])
    assert 100 <= wait_ms <= 200
    # The rejected request consumed nothing, so waiting as told is enough.
    time.sleep(wait_ms / 1000 + 0.02)
    client.embeddings.create(input="b" * 12, model=MODEL, dimensions=4)
    # A request bigger than the whole bucket can never pass.
    with pytest.raises(openai.RateLimitError, match="Request too large") as info:
        client.embeddings.create(input="c" * 2404, model=MODEL, dimensions=4)
    assert "retry-after" not in info.value.response.headers


def test_retry_after_header_can_be_turned_off(
    server: FakeOpenAIServer, client: openai.OpenAI
) -> None:
    server.set_faults(requests_per_minute=1, retry_after_header=False)
    client.embeddings.create(input="a", model=MODEL, dimensions=4)
    with pytest.raises(openai.RateLimitError) as info:
        client.embeddings.create(input="a", model=MODEL, dimensions=4)
    assert "retry-after" not in info.value.response.headers
    assert "x-ratelimit-reset-requests" in info.value.response.headers


def test_format_duration() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(0.0111) == "12ms"
    assert format_duration(1) == "1s"
    assert format_duration(2.4) == "2.4s"
    assert format_duration(360) == "6m0s"


# -- faults ---------------------------------------------------------------------------------------


def test_shuffle_keeps_indices_right(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_faults(shuffle=True)
    texts = [f"text {i}" for i in range(20)]
    response = client.embeddings.create(input=texts, model=MODEL, dimensions=8)
    indices = [item.index for item in response.data]
    assert indices != sorted(indices) and sorted(indices) == list(range(20))
    for i, vector in as_matrix(response).items():
        assert np.array_equal(vector, expected_vector(texts[i], 8))


def test_short_answer(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_faults(short_rate=1)
    texts = ["a", "b", "c", "d"]
    response = client.embeddings.create(input=texts, model=MODEL, dimensions=8)
    vectors = as_matrix(response)
    assert len(vectors) == 3
    for i, vector in vectors.items():
        assert np.array_equal(vector, expected_vector(texts[i], 8))
    assert server.stats.faulted == 1


def test_wrong_answers(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    texts = ["a", "b", "c"]

    def mismatches(**faults: Any) -> list[np.ndarray]:
        server.set_faults(**faults)
        vectors = as_matrix(client.embeddings.create(input=texts, model=MODEL, dimensions=8))
        assert sorted(vectors) == [0, 1, 2]
        return [
            v
            for i, v in vectors.items()
            if v.shape != (8,) or not np.array_equal(v, expected_vector(texts[i], 8))
        ]

    wrong = mismatches(wrong_dimensions_rate=1)
    assert len(wrong) == 1 and wrong[0].shape == (7,)
    wrong = mismatches(nan_rate=1)
    assert len(wrong) == 1 and np.isnan(wrong[0]).sum() == 1
    wrong = mismatches(wrong_index_rate=1)
    assert len(wrong) == 2 and all(np.isfinite(v).all() and v.shape == (8,) for v in wrong)
    assert mismatches() == []


def test_drop_is_a_connection_error(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_faults(drop_rate=1)
    with pytest.raises(openai.APIConnectionError):
        client.embeddings.create(input="a", model=MODEL)
    server.set_faults()
    client.embeddings.create(input="a", model=MODEL, dimensions=4)
    stats = server.stats
    assert stats.dropped == 1 and stats.ok == 1 and stats.requests == 2
    assert [entry[3] for entry in stats.request_log] == [0, 200]


def test_server_errors(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_faults(error_5xx_rate=1)
    with pytest.raises(openai.InternalServerError) as info:
        client.embeddings.create(input="a", model=MODEL)
    assert info.value.status_code == 500
    server.set_faults(html_error_rate=1)
    with pytest.raises(openai.InternalServerError) as info:
        client.embeddings.create(input="a", model=MODEL)
    assert info.value.status_code == 502 and "Bad Gateway" in str(info.value.body)
    server.set_faults(malformed_json_rate=1)
    # The client does not wrap a truncated 200 body: json's ValueError escapes as is.
    with pytest.raises(ValueError):
        client.embeddings.create(input="a", model=MODEL)
    assert server.stats.status_counts == {500: 1, 502: 1, 200: 1}


def test_latency_and_fault_rates(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    server.set_faults(latency_ms=50)
    started = time.perf_counter()
    client.embeddings.create(input="a", model=MODEL, dimensions=4)
    assert time.perf_counter() - started >= 0.05
    server.set_faults(error_5xx_rate=0.5, seed=7)
    failures = 0
    for _ in range(40):
        try:
            client.embeddings.create(input="a", model=MODEL, dimensions=4)
        except openai.InternalServerError:
            failures += 1
    assert 8 <= failures <= 32


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError):
        Faults(drop_rate=1.5)
    with pytest.raises(ValueError):
        Faults(requests_per_minute=0)


# -- stats and control ----------------------------------------------------------------------------


def test_stats_count_texts(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    client.embeddings.create(input=["a", "b"], model=MODEL, dimensions=4)
    client.embeddings.create(input=["b", "c"], model=MODEL, dimensions=4)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(input=["d", ""], model=MODEL)
    stats = server.stats
    assert stats.requests == 3 and stats.ok == 2
    assert stats.inputs_received == 4 and stats.tokens == 4
    assert stats.texts == {"a": 1, "b": 2, "c": 1}
    assert stats.duplicates == 1
    assert [entry[1:] for entry in stats.request_log] == [(2, 2, 200), (2, 2, 200), (2, 2, 400)]
    server.reset_stats()
    assert server.stats.requests == 0 and not server.stats.texts


def test_control_endpoints_in_process(server: FakeOpenAIServer, client: openai.OpenAI) -> None:
    root = server.base_url.removesuffix("/v1")
    status, faults = http(root + "/_control/faults", {"bad_input_marker": "!!"})
    assert status == 200 and faults["bad_input_marker"] == "!!"
    assert server.faults == Faults(bad_input_marker="!!")
    assert http(root + "/_control/faults", {"no_such_fault": 1})[0] == 400
    client.embeddings.create(input=["a", "a b"], model=MODEL, dimensions=4)
    client.embeddings.create(input=["a"], model=MODEL, dimensions=4)
    status, stats = http(root + "/_control/stats")
    assert status == 200
    assert stats["texts"] == {"distinct": 2, "duplicates": 1, "total": 3}
    assert stats["status_counts"] == {"200": 2} and stats["requests"] == 2
    assert http(root + "/_control/reset", {})[0] == 200
    assert http(root + "/_control/stats")[1]["requests"] == 0


def test_stop_cuts_pooled_connections() -> None:
    server = FakeOpenAIServer().start()
    with openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0) as c:
        c.embeddings.create(input="a", model=MODEL, dimensions=4)
        server.stop()
        with pytest.raises(openai.APIConnectionError):
            c.embeddings.create(input="a", model=MODEL, dimensions=4)


def test_subprocess_mode() -> None:
    process, base_url = start_subprocess("--rpm", "100")
    try:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        root = base_url.removesuffix("/v1")
        assert http(root + "/_control/faults")[1]["requests_per_minute"] == 100
        with openai.OpenAI(api_key="k", base_url=base_url, max_retries=0) as c:
            response = c.embeddings.create(input=["x", "y"], model=MODEL, dimensions=8)
            assert np.array_equal(as_matrix(response)[1], expected_vector("y", 8))
            http(root + "/_control/faults", {"short_rate": 1})
            assert len(c.embeddings.create(input=["x", "y"], model=MODEL).data) == 1
        stats = http(root + "/_control/stats")[1]
        assert stats["ok"] == 2 and stats["texts"]["duplicates"] == 2
        assert http(root + "/_control/reset", {})[1] == {"reset": True}
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


# -- the Batch API: Files + Batches ----------------------------------------------------------


def batch_file(client: openai.OpenAI, requests: dict[str, list[str]], dimensions: int = 8) -> str:
    lines = [
        json.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {
                    "model": MODEL,
                    "input": texts,
                    "dimensions": dimensions,
                    "encoding_format": "base64",
                },
            }
        )
        for custom_id, texts in requests.items()
    ]
    upload = client.files.create(file=("in.jsonl", "\n".join(lines).encode()), purpose="batch")
    return upload.id


def output_lines(client: openai.OpenAI, file_id: str) -> dict[str, dict]:
    with client.files.with_streaming_response.content(file_id) as response:
        return {(line := json.loads(raw))["custom_id"]: line for raw in response.iter_lines()}


def new_batch(client: openai.OpenAI, file_id: str, **extra: Any):
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h", **extra
    )


def test_a_batch_answers_each_line_with_the_online_vectors_and_calls_no_online_endpoint(
    server, client
):
    server.update_faults(batch_seconds=0.2)
    requests = {f"req-{i}": [f"text {i} a", f"text {i} b"] for i in range(5)}
    batch = new_batch(client, batch_file(client, requests), metadata={"row": "7"})

    assert batch.status == "validating"
    assert batch.metadata == {"row": "7"}
    deadline = time.monotonic() + 10
    while (batch := client.batches.retrieve(batch.id)).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert batch.request_counts.completed == 5 and batch.error_file_id is None
    lines = output_lines(client, batch.output_file_id)
    assert set(lines) == set(requests)
    for custom_id, texts in requests.items():
        body = lines[custom_id]["response"]["body"]
        for item in body["data"]:
            vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
            np.testing.assert_array_equal(vector, expected_vector(texts[item["index"]], 8))
    assert server.stats.requests == 0
    assert server.batch_stats.texts == {text: 1 for texts in requests.values() for text in texts}
    assert [b.id for b in client.batches.list(limit=5)] == [batch.id]


def test_failed_lines_and_an_expired_batch_land_in_the_error_file(server, client):
    requests = {f"req-{i}": [f"text {i}"] for i in range(10)}
    file_id = batch_file(client, requests)
    server.update_faults(batch_failed_line_rate=1.0)
    failed = client.batches.retrieve(new_batch(client, file_id).id)
    server.set_faults(batch_expire_rate=1.0, batch_partial_fraction=0.3)
    expired = client.batches.retrieve(new_batch(client, file_id).id)

    assert failed.status == "completed" and failed.request_counts.failed == 10
    statuses = {
        line["response"]["status_code"]
        for line in output_lines(client, failed.error_file_id).values()
    }
    assert statuses == {500}
    assert expired.status == "expired"
    assert len(output_lines(client, expired.output_file_id)) == 3
    codes = [line["error"]["code"] for line in output_lines(client, expired.error_file_id).values()]
    assert codes == ["batch_expired"] * 7


def test_a_cancelled_batch_keeps_what_it_finished_and_too_many_inputs_fail_validation(
    server, client
):
    server.update_faults(batch_seconds=60)
    batch = new_batch(client, batch_file(client, {f"r{i}": [f"t{i}"] for i in range(4)}))

    assert client.batches.cancel(batch.id).status == "cancelling"
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled"
    assert len(output_lines(client, cancelled.output_file_id)) == 2

    too_big = {f"r{i}": [f"t{i}-{j}" for j in range(2048)] for i in range(25)}
    refused = new_batch(client, batch_file(client, too_big))
    assert refused.status == "failed"
    assert "at most 50000 inputs" in refused.errors.data[0].message
