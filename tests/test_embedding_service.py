"""The embedding service as a user meets it: texts in, the right vectors out, at the least cost.

Everything is real: the OpenAI client talks HTTP to tests/support/openai_server.py, the cache
is django-redis (or whatever the `embeddings` alias is), the limiter runs its Lua script in
Redis.
Vectors are checked against `expected_vector`, so a text given another text's vector fails.
"""

import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import redis
from django_redis.cache import RedisCache

from embeddings.exceptions import FailureKind, FatalProviderError, exit_code
from embeddings.providers.openai import OpenAIProvider
from embeddings.service.cache import EmbeddingCache
from embeddings.service.embedding_service import (
    EmbeddingService,
    EmbedResult,
    RequestLimits,
)
from embeddings.service.factory import build_embedding_service
from embeddings.service.rate_limiter import (
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    build_rate_limiter,
)
from tests.support.openai_server import (
    FakeOpenAIServer,
    Faults,
    expected_vector,
)
from tests.support.private_redis import PrivateRedis
from tests.support.waiting import wait_for

SOURCE = "api.openai.com/v1"
MODEL = "text-embedding-3-small"
DIMS = 64
# Recognisable, so a leak into a message or a log record is easy to find.
API_KEY = "sk-test.LEAKCHECK-4f9a1c7e2b"
UNLIMITED = {"requests_per_minute": 1_000_000, "tokens_per_minute": 1_000_000_000}
LIMITS = RequestLimits(max_inputs=2048, max_tokens=300_000, max_tokens_per_input=8192)  # the API's


def distinct_texts(count: int, *, tag: str = "clip", chars: int = 0) -> list[str]:
    texts = [f"Title: {tag} number {i}. Broadcaster: streamer{i % 97}" for i in range(count)]
    return [text.ljust(chars, ".") for text in texts] if chars else texts


def assert_right_or_reported(texts: Sequence[str], result: EmbedResult, *, dims: int = DIMS) -> int:
    """Every position has its own text's vector or an error, never both; returns how many failed."""
    assert len(result.vectors) == len(texts)
    for position, text in enumerate(texts):
        vector = result.vectors[position]
        if vector is None:
            assert position in result.errors, f"text {position} has neither vector nor error"
        else:
            assert position not in result.errors
            np.testing.assert_array_equal(vector, expected_vector(text, dims), err_msg=text)
    return len(result.errors)


@pytest.fixture
def make_service(openai_server: FakeOpenAIServer) -> Iterator[Callable[..., EmbeddingService]]:
    """Services on the real stack, pointed at the test server, with a short retry backoff."""
    services: list[EmbeddingService] = []

    def make(
        *,
        cache: EmbeddingCache | None = None,
        limiter: RateLimiter | None = None,
        limits: RequestLimits | None = None,
        **kwargs,
    ) -> EmbeddingService:
        provider = OpenAIProvider(
            api_key=API_KEY,
            base_url=openai_server.base_url,
            model=MODEL,
            dimensions=DIMS,
            send_dimensions=True,
            timeout=10,
        )
        kwargs.setdefault("backoff_max", 0.05)
        kwargs.setdefault("concurrency", 4)
        kwargs.setdefault("max_retries", 6)
        service = EmbeddingService(
            provider,
            cache=cache,
            limiter=limiter or LocalRateLimiter(**UNLIMITED),
            limits=limits or LIMITS,
            **kwargs,
        )
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


# Test entries expire on their own: scanning a shared Redis for them would cost seconds.
CACHE_TTL = 600


@pytest.fixture
def redis_cache(redis_url: str, unique_prefix: str) -> EmbeddingCache:
    """An EmbeddingCache on a real django-redis backend, under this test's own prefix."""
    backend = RedisCache(redis_url, {"KEY_PREFIX": unique_prefix})
    return EmbeddingCache(backend, source=SOURCE, model=MODEL, dimensions=DIMS, ttl=CACHE_TTL)


# -- 1. few requests, nothing sent twice, a second pass is free ----------------------------------


@pytest.fixture(params=["redis", "configured"])
def configured_cache(request, settings, unique_prefix: str) -> str:
    """The `embeddings` alias on django-redis, or as the settings have it (diskcache off CI)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        settings.REDIS_URL = url
        backend = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url}
        settings.CACHES = {
            "default": backend,
            "embeddings": {**backend, "KEY_PREFIX": unique_prefix},
        }
    return request.param


def test_10000_texts_go_in_at_most_10_requests_and_a_second_pass_makes_none(
    configured_cache, embedding_config, openai_server
):
    config = embedding_config(EMBEDDING_DIMENSIONS=DIMS, EMBEDDING_CACHE_TTL=CACHE_TTL)
    service = build_embedding_service(config)
    texts = distinct_texts(10_000)

    first = service.embed(texts)

    assert assert_right_or_reported(texts, first) == 0
    sent = openai_server.stats
    assert sent.requests <= 10
    assert sent.duplicates == 0
    assert sent.inputs_received == 10_000
    assert first.stats.cache_misses == 10_000

    second = service.embed(texts)

    assert openai_server.stats.requests == sent.requests
    assert second.stats.cache_hits == 10_000
    assert second.stats.requests == 0
    assert assert_right_or_reported(texts, second) == 0
    service.close()


def test_a_text_repeated_in_the_input_is_sent_once_and_every_copy_gets_its_vector(
    make_service, redis_cache, openai_server
):
    unique = distinct_texts(300)
    texts = [unique[i % 300] for i in range(900)]  # every text three times

    result = make_service(cache=redis_cache).embed(texts)

    assert assert_right_or_reported(texts, result) == 0
    assert openai_server.stats.inputs_received == 300
    assert openai_server.stats.duplicates == 0


def test_a_text_another_call_is_sending_is_waited_for_not_sent_again(make_service, openai_server):
    service = make_service()
    shared = distinct_texts(50, tag="shared")
    theirs = shared[:30] + distinct_texts(20, tag="own")
    with ThreadPoolExecutor(2) as pool:
        with openai_server.holding():
            first = pool.submit(service.embed, shared)
            wait_for(lambda: openai_server.waiting == 1)
            second = pool.submit(service.embed, theirs)
            wait_for(lambda: openai_server.waiting == 2)  # the second call's own 20 texts
        first_result, second_result = first.result(), second.result()

    assert assert_right_or_reported(shared, first_result) == 0
    assert assert_right_or_reported(theirs, second_result) == 0
    assert openai_server.stats.inputs_received == 70
    assert openai_server.stats.duplicates == 0
    assert (second_result.stats.shared, second_result.stats.cache_misses) == (30, 50)


def test_a_call_waiting_for_another_calls_texts_fails_as_that_call_fails(
    make_service, openai_server
):
    service = make_service()
    texts = distinct_texts(10)
    openai_server.set_faults(unauthorized=True)
    with ThreadPoolExecutor(2) as pool:
        with openai_server.holding():
            first = pool.submit(service.embed, texts)
            wait_for(lambda: openai_server.waiting == 1)
            second = pool.submit(service.embed, texts[:5])
            wait_for(lambda: service.in_flight.borrowed == 5)
        for call in (first, second):
            with pytest.raises(FatalProviderError):
                call.result()
    assert openai_server.stats.requests == 1


def test_only_what_the_cache_lacks_is_sent(make_service, redis_cache, openai_server):
    service = make_service(cache=redis_cache)
    service.embed(distinct_texts(100))
    texts = distinct_texts(150)

    result = service.embed(texts)

    assert assert_right_or_reported(texts, result) == 0
    assert (result.stats.cache_hits, result.stats.cache_misses) == (100, 50)
    assert openai_server.stats.inputs_received == 150
    assert openai_server.stats.duplicates == 0


# -- 2. a flaky server never mixes vectors up ----------------------------------------------------


def test_with_errors_drops_shuffles_and_short_answers_every_text_gets_its_own_vector(
    make_service, redis_cache, openai_server
):
    openai_server.faults = Faults(
        error_5xx_rate=0.1, drop_rate=0.05, shuffle=True, short_rate=0.2, seed=16
    )
    texts = distinct_texts(3000)
    service = make_service(cache=redis_cache, limits=replace(LIMITS, max_inputs=50), max_retries=8)

    result = service.embed(texts)

    failed = assert_right_or_reported(texts, result)
    assert failed <= 50, result.errors  # 8 retries: a request failing 9 times in a row is rare
    seen = openai_server.stats
    assert seen.status_counts.get(500, 0) and seen.dropped and seen.faulted, "faults injected"
    assert result.stats.retries >= seen.status_counts[500] + seen.dropped
    cached = redis_cache.get_many(texts)
    assert len(cached) == len(texts) - failed
    for text, vector in cached.items():
        np.testing.assert_array_equal(vector, expected_vector(text, DIMS))


# -- 3. inside the account's RPM/TPM ------------------------------------------------------------


RPM, TPM = 600, 60_000  # 10 requests/s and 1,000 tokens/s once the full bucket is spent
TEXT_CHARS = 400  # 100 tokens by the bytes/4 estimate


def test_a_long_run_at_the_token_limit_gets_almost_no_429s(
    make_service, openai_server, redis_url, redis_client, unique_prefix
):
    openai_server.faults = Faults(requests_per_minute=RPM, tokens_per_minute=TPM)
    key = f"{unique_prefix}:ratelimit"
    limiter = build_rate_limiter(
        redis_url=redis_url, requests_per_minute=RPM, tokens_per_minute=TPM, key=key
    )
    texts = distinct_texts(TPM // 100 + 6_000 // 100, chars=TEXT_CHARS)  # the bucket + ~6 s
    service = make_service(limiter=limiter, limits=replace(LIMITS, max_inputs=5))

    result = service.embed(texts)
    redis_client.delete(key)

    assert assert_right_or_reported(texts, result) == 0
    seen = openai_server.stats
    assert seen.rate_limited <= 0.02 * seen.requests, seen.status_counts
    # The server's buckets cap the pace, so the client's part is to stay out of 429s. How
    # close to the TPM a run gets depends on the CPU it is given: `make bench` measures it
    # (shared_budget: >= 90% for 1, 4 and 8 processes).


def test_a_tpm_below_one_full_request_still_gets_everything_embedded(
    embedding_config, openai_server
):
    """Default packing allows 300,000-token requests; a 60,000 TPM account can never send one."""
    openai_server.faults = Faults(tokens_per_minute=TPM)
    config = embedding_config(
        EMBEDDING_DIMENSIONS=DIMS, EMBEDDING_TOKENS_PER_MINUTE=TPM, REDIS_URL=None
    )
    service = build_embedding_service(config)
    texts = distinct_texts(TPM // 100 + 10, chars=TEXT_CHARS)  # a full bucket and 1 s more

    result = service.embed(texts, use_cache=False)

    assert assert_right_or_reported(texts, result) == 0
    assert openai_server.stats.rate_limited == 0
    service.close()


def _embed_in_child(base_url, redis_url, key, texts, barrier, results) -> None:
    limiter = RedisRateLimiter(
        redis.Redis.from_url(redis_url), requests_per_minute=RPM, tokens_per_minute=TPM, key=key
    )
    provider = OpenAIProvider(
        api_key=API_KEY,
        base_url=base_url,
        model=MODEL,
        dimensions=DIMS,
        send_dimensions=True,
        timeout=10,
    )
    service = EmbeddingService(
        provider,
        cache=None,
        limiter=limiter,
        limits=replace(LIMITS, max_inputs=4),
        concurrency=4,
        max_retries=6,
        backoff_max=0.05,
    )
    barrier.wait()
    result = service.embed(texts)
    service.close()
    results.put((os.getpid(), sum(v is not None for v in result.vectors), len(result.errors)))


def test_two_processes_sharing_redis_stay_inside_one_budget(
    openai_server, redis_url, unique_prefix
):
    key = f"{unique_prefix}:ratelimit"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    per_process = TPM // 100 // 2 + 2_500 // 100  # together: the bucket + ~5 s of refill
    workers = [
        ctx.Process(
            target=_embed_in_child,
            args=(
                openai_server.base_url,
                redis_url,
                key,
                distinct_texts(per_process, tag=f"process {n}", chars=TEXT_CHARS),
                barrier,
                results,
            ),
        )
        for n in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
        redis.Redis.from_url(redis_url).delete(key)

    assert [(ok, errors) for _, ok, errors in outcomes] == [(per_process, 0)] * 2
    log = sorted(openai_server.stats.request_log)  # (arrival, inputs, tokens, status)
    assert openai_server.stats.duplicates == 0
    rate = TPM / 60
    for i, (start, *_) in enumerate(log):
        tokens = 0
        for end, _, cost, _ in log[i:]:
            tokens += cost
            allowed = TPM + rate * (end - start)
            assert tokens <= 1.05 * allowed, f"{tokens} tokens in {end - start:.2f} s"
    assert len(log) <= 1.05 * (RPM + RPM / 60 * (log[-1][0] - log[0][0]))


# -- 4. Redis down: slower, never failed ---------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path) -> Iterator[PrivateRedis]:
    own = PrivateRedis(tmp_path)
    yield own
    own.kill()


def _service_on(own: PrivateRedis, make_service, unique_prefix: str) -> EmbeddingService:
    timeouts = {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1}
    backend = RedisCache(own.url, {"KEY_PREFIX": unique_prefix, "OPTIONS": timeouts})
    cache = EmbeddingCache(backend, source=SOURCE, model=MODEL, dimensions=DIMS, ttl=CACHE_TTL)
    limiter = build_rate_limiter(redis_url=own.url, **UNLIMITED, key=f"{unique_prefix}:ratelimit")
    return make_service(cache=cache, limiter=limiter, limits=replace(LIMITS, max_inputs=25))


def _warnings_by_logger(caplog) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for record in caplog.records:
        if record.levelno >= logging.WARNING:
            found.setdefault(record.name, []).append(record.getMessage())
    return found


def test_redis_killed_before_the_run_costs_the_cache_but_fails_nothing(
    own_redis, make_service, unique_prefix, openai_server, caplog
):
    caplog.set_level(logging.INFO, logger="embeddings")
    service = _service_on(own_redis, make_service, unique_prefix)
    texts = distinct_texts(500)
    own_redis.kill()

    first = service.embed(texts)
    second = service.embed(texts)

    assert assert_right_or_reported(texts, first) == 0
    assert assert_right_or_reported(texts, second) == 0
    assert openai_server.stats.inputs_received == 1000  # no cache: the second run pays again
    warnings = _warnings_by_logger(caplog)
    assert sorted(warnings) == ["embeddings.service.cache", "embeddings.service.rate_limiter"]
    for messages in warnings.values():
        assert len(messages) == 1, messages
        assert "Connection" in messages[0]  # the cause, not just "something failed"


@pytest.mark.parametrize("stop", ["kill", "freeze"])
def test_redis_stopped_mid_run_the_run_completes_and_says_why_once(
    stop, own_redis, make_service, unique_prefix, openai_server, caplog
):
    caplog.set_level(logging.INFO, logger="embeddings")
    openai_server.faults = Faults(latency_ms=40)
    service = _service_on(own_redis, make_service, unique_prefix)
    texts = distinct_texts(1000)  # 40 requests of 25, 4 at a time: ~0.4 s

    def stop_after_a_few_requests() -> None:
        deadline = time.monotonic() + 10
        while openai_server.stats.requests < 8 and time.monotonic() < deadline:
            time.sleep(0.005)
        getattr(own_redis, stop)()

    stopper = threading.Thread(target=stop_after_a_few_requests)
    stopper.start()
    start = time.monotonic()
    result = service.embed(texts)
    elapsed = time.monotonic() - start
    stopper.join()

    assert assert_right_or_reported(texts, result) == 0
    assert openai_server.stats.duplicates == 0
    assert elapsed < 15  # a hung Redis costs its socket timeouts once, not per request
    warnings = _warnings_by_logger(caplog)
    assert len(warnings.get("embeddings.service.rate_limiter", [])) == 1, warnings
    assert len(warnings.get("embeddings.service.cache", [])) == 1, warnings  # the write-back failed
    assert set(warnings) <= {"embeddings.service.cache", "embeddings.service.rate_limiter"}


# -- 5. inputs the API would refuse ------------------------------------------------------------


def test_an_over_long_text_is_truncated_and_embedded_as_truncated(make_service, openai_server):
    long_ascii = "word " * 10_000  # 50,000 bytes: 12,500 tokens by the bytes/4 estimate
    long_accents = "a" + "é" * 20_000  # the 32,768-byte cut falls inside an "é"
    texts = ["short one", long_ascii, long_accents]

    result = make_service().embed(texts)

    assert result.stats.truncated == 2
    assert not result.errors
    cut_ascii, cut_accents = long_ascii[: 8192 * 4], "a" + "é" * 16_383
    assert set(openai_server.stats.texts) == {"short one", cut_ascii, cut_accents}
    assert openai_server.stats.status_counts == {200: 1}
    assert assert_right_or_reported(["short one", cut_ascii, cut_accents], result) == 0


def test_a_blank_text_is_reported_and_never_sent(make_service, openai_server):
    texts = ["first", "", "   \n\t", "last"]

    result = make_service().embed(texts)

    assert set(result.errors) == {1, 2}
    assert result.errors[1].kind is result.errors[2].kind is FailureKind.BLANK
    assert result.vectors[1] is None and result.vectors[2] is None
    assert assert_right_or_reported(texts, result) == 2
    assert set(openai_server.stats.texts) == {"first", "last"}
    assert openai_server.stats.status_counts == {200: 1}  # no 400 for a blank input


def test_an_input_the_api_refuses_fails_alone(make_service, openai_server):
    openai_server.faults = Faults(bad_input_marker="POISON")
    texts = distinct_texts(200)
    texts[137] = "a POISON title"

    result = make_service().embed(texts)

    assert list(result.errors) == [137]
    assert "rejected" in str(result.errors[137])
    assert assert_right_or_reported(texts, result) == 1
    assert openai_server.stats.status_counts.get(400, 0) <= 2


# -- 6. errors a user can act on, never showing the key -----------------------------------------


def _assert_no_key_anywhere(err: BaseException, caplog) -> None:
    assert API_KEY not in "".join(traceback.format_exception(err))
    assert API_KEY not in repr(err)
    assert caplog.records, "the client stack's debug logs must have been captured"
    for record in caplog.records:
        assert API_KEY not in record.getMessage(), record.name
    assert API_KEY not in caplog.text


@pytest.fixture
def verbose_logs(caplog):
    """Everything the client stack logs, down to DEBUG, so a leaked key would show."""
    for name in ("", "embeddings", "openai", "httpx2", "httpcore2"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.mark.parametrize(
    ("faults", "names", "code"),
    [
        (Faults(unauthorized=True), "OPENAI_API_KEY", 2),
        (Faults(insufficient_quota=True), "billing", 1),
        (Faults(ignore_dimensions=True), "EMBEDDING_DIMENSIONS", 2),
    ],
    ids=["bad-key", "no-quota", "wrong-size"],
)
def test_a_fatal_error_stops_at_once_says_what_to_fix_and_hides_the_key(
    faults, names, code, make_service, redis_cache, openai_server, verbose_logs
):
    openai_server.faults = faults
    texts = distinct_texts(20)

    with pytest.raises(FatalProviderError, match=names) as err:
        make_service(cache=redis_cache).embed(texts)

    assert exit_code(err.value) == code
    assert openai_server.stats.requests == 1  # not retried: retrying cannot help
    assert redis_cache.get_many(texts) == {}
    _assert_no_key_anywhere(err.value, verbose_logs)


def test_retried_errors_never_show_the_key_in_logs(make_service, openai_server, verbose_logs):
    openai_server.faults = Faults(error_5xx_rate=0.5, drop_rate=0.2, seed=3)
    texts = distinct_texts(40)

    result = make_service(limits=replace(LIMITS, max_inputs=10), max_retries=2).embed(texts)

    assert openai_server.stats.requests > 4, "some requests must have been retried"
    assert any("retrying" in r.getMessage() for r in verbose_logs.records)
    for failure in result.errors.values():
        assert API_KEY not in str(failure)
    for record in verbose_logs.records:
        assert API_KEY not in record.getMessage(), record.name


def test_a_missing_key_names_the_setting():
    with pytest.raises(FatalProviderError, match="OPENAI_API_KEY"):
        OpenAIProvider(
            api_key="", base_url=None, model=MODEL, dimensions=DIMS, send_dimensions=True, timeout=1
        )


# -- 7. broken answers are retried, never stored ------------------------------------------------


def broken_answers(seed: int) -> Faults:
    """A third of the answers broken. Seeds are picked for a fault sequence with every kind of
    fault and no freak streak: 9 failures running would be the seed's doing, not the service's."""
    return Faults(
        malformed_json_rate=0.1,
        html_error_rate=0.05,
        nan_rate=0.15,
        wrong_dimensions_rate=0.15,
        seed=seed,
    )


def _assert_cache_holds_only_right_vectors(cache: EmbeddingCache, texts, failed: int) -> None:
    cached = cache.get_many(texts)
    assert len(cached) == len(texts) - failed
    for text, vector in cached.items():
        np.testing.assert_array_equal(vector, expected_vector(text, DIMS))


def _retry_reasons(caplog) -> str:
    return "\n".join(
        r.getMessage() for r in caplog.records if r.name == "embeddings.service.embedding_service"
    )


def test_malformed_nan_and_wrong_size_answers_are_retried_and_never_stored(
    make_service, redis_cache, openai_server, caplog
):
    caplog.set_level(logging.INFO, logger="embeddings.service.embedding_service")
    openai_server.faults = broken_answers(seed=21)
    texts = distinct_texts(800)
    service = make_service(cache=redis_cache, limits=replace(LIMITS, max_inputs=20), max_retries=8)

    result = service.embed(texts)

    failed = assert_right_or_reported(texts, result)
    assert failed <= 20, sorted(set(result.errors.values()))
    retried = _retry_reasons(caplog)
    for reason in ("malformed", "NaN", "[63, 64] dimensions", "502"):
        assert reason in retried, f"no {reason} answer was retried"
    assert result.stats.retries >= openai_server.stats.faulted - failed
    _assert_cache_holds_only_right_vectors(redis_cache, texts, failed)


def test_a_one_text_request_answered_at_the_wrong_size_is_retried_not_fatal(
    make_service, redis_cache, openai_server, caplog
):
    """Small incremental runs and splits around a refused input send one text per request."""
    service = make_service(cache=redis_cache, limits=replace(LIMITS, max_inputs=1), max_retries=8)
    service.embed(["the first answer confirms the configured size"])
    caplog.set_level(logging.INFO, logger="embeddings.service.embedding_service")
    openai_server.faults = broken_answers(seed=13)
    texts = distinct_texts(80)

    result = service.embed(texts)

    failed = assert_right_or_reported(texts, result)
    assert failed <= 2, sorted(set(result.errors.values()))
    assert "[63] dimensions" in _retry_reasons(caplog), "wrong-size answers must have come"
    _assert_cache_holds_only_right_vectors(redis_cache, texts, failed)
