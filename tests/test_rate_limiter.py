"""The rate limiter keeps a fleet inside one RPM/TPM budget, paced like the API's own buckets.

Runs against the real Redis of conftest's `redis_url` (skipped without one, except in CI) and
needs no Django: `pytest -p no:django tests/test_rate_limiter.py` works.
"""

import logging
import multiprocessing
import threading
import time
import uuid

import pytest
import redis

from embeddings.service.rate_limiter import (
    FallbackRateLimiter,
    LocalRateLimiter,
    RedisRateLimiter,
    budget_key,
    build_rate_limiter,
    step,
)

CLOSED_PORT_URL = "redis://127.0.0.1:1/0"
# Redis buckets run on the Redis server's clock, the test reads its own: they may differ so much.
CLOCK_SLACK = 0.02


@pytest.fixture(autouse=True)
def isolated_embedding_cache():
    """Overrides conftest's: the limiter uses no Django cache, so these tests need no Django."""


@pytest.fixture
def key(redis_client):
    key = f"test:clip-embeddings:ratelimit:{uuid.uuid4().hex}"
    yield key
    redis_client.delete(key)


@pytest.fixture(params=["local", "redis"])
def make_limiter(request):
    """Builds limiters of one kind; Redis ones all share the test's key."""
    if request.param == "local":
        return lambda rpm, tpm: LocalRateLimiter(requests_per_minute=rpm, tokens_per_minute=tpm)
    client, key = request.getfixturevalue("redis_client"), request.getfixturevalue("key")
    return lambda rpm, tpm: RedisRateLimiter(
        client, requests_per_minute=rpm, tokens_per_minute=tpm, key=key
    )


def test_the_full_budget_goes_at_once_then_one_request_per_60_over_rpm_seconds(make_limiter):
    limiter = make_limiter(60, 6000)
    burst = sum(limiter.acquire(100) for _ in range(60))  # all 60 requests and 6000 tokens
    assert burst < 0.2
    assert 0.9 < limiter.acquire(1) < 1.2  # one request refills in 60/60 s


def test_a_request_bigger_than_the_tpm_is_clamped_instead_of_waiting_forever(make_limiter):
    assert make_limiter(60, 6000).acquire(10**9) < 0.2


def test_after_the_burst_tokens_come_at_tpm_over_60_per_second(make_limiter):
    limiter = make_limiter(6000, 6000)
    start = time.monotonic()
    limiter.acquire(6000)
    granted = 0
    while time.monotonic() - start < 3:
        limiter.acquire(10)
        granted += 10
    expected = 100 * (time.monotonic() - start)  # total = capacity + rate x elapsed
    # Never ahead of the pace; behind it only by the last sleep's overshoot on a busy machine.
    assert 0.8 * expected <= granted <= expected + 10


def _grant_times(redis_url, key, barrier, seconds, results):
    limiter = RedisRateLimiter(
        redis.Redis.from_url(redis_url), requests_per_minute=600, tokens_per_minute=10**6, key=key
    )
    barrier.wait()
    deadline, times = time.time() + seconds, []
    while time.time() < deadline:
        limiter.acquire(1)
        times.append(time.time())
    results.put(times)


def test_two_processes_on_one_key_share_one_budget(redis_url, key):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [
        ctx.Process(target=_grant_times, args=(redis_url, key, barrier, 2.0, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    per_process = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    times = sorted(t for grants in per_process for t in grants)
    allowed = 600 + 10 * (times[-1] - times[0])  # capacity + 10 requests/s
    assert all(per_process), "both processes must have competed for the budget"
    assert allowed - 3 <= len(times) <= allowed + 1


def test_a_pause_holds_every_limiter_on_the_key_and_is_never_shortened(redis_client, key):
    first, second = (
        RedisRateLimiter(redis_client, requests_per_minute=600, tokens_per_minute=6000, key=key)
        for _ in range(2)
    )
    first.pause(1.0)
    first.pause(0.1)
    assert 0.9 < second.acquire(1) < 5  # later than 1 s only by a busy machine's scheduling


def test_observe_lowers_the_buckets_but_never_raises_them(make_limiter):
    # Bounds from below only, each from a moment before the observe that forces the wait:
    # time that passes between two statements on a busy machine can only add to them.
    limiter = make_limiter(600, 60000)  # 10 requests/s, 1,000 tokens/s
    observed = time.monotonic()
    limiter.observe(remaining_requests=0, remaining_tokens=None)
    limiter.acquire(1)
    assert time.monotonic() - observed >= 0.1 - CLOCK_SLACK  # 1 request refilled
    limiter.observe(remaining_requests=600, remaining_tokens=None)  # more than we hold: ignored
    limiter.acquire(1)
    assert time.monotonic() - observed >= 0.2 - CLOCK_SLACK  # and another one
    observed = time.monotonic()
    limiter.observe(remaining_requests=None, remaining_tokens=0)
    limiter.acquire(500)
    assert time.monotonic() - observed >= 0.5 - CLOCK_SLACK  # 500 tokens refilled
    limiter.observe(remaining_requests=None, remaining_tokens=60000)  # ignored
    limiter.acquire(500)
    assert time.monotonic() - observed >= 1.0 - CLOCK_SLACK


def test_with_redis_down_it_paces_per_process_and_warns_once(caplog):
    caplog.set_level(logging.INFO, logger="embeddings.service.rate_limiter")
    limiter = build_rate_limiter(
        redis_url=CLOSED_PORT_URL, requests_per_minute=600, tokens_per_minute=60000, key="down"
    )
    limiter.retry_after = 0.05  # so the test also sees Redis retried, and failing again
    assert sum(limiter.acquire(1) for _ in range(600)) < 0.5
    assert 0.08 < limiter.acquire(1) < 0.25
    limiter.observe(remaining_requests=1, remaining_tokens=1)
    limiter.pause(0.01)
    assert "per-process" in limiter.describe()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Connection" in warnings[0].getMessage()
    assert "per-process pacing" in warnings[0].getMessage()


def test_when_redis_comes_back_it_is_shared_again_and_says_so_once(redis_client, key, caplog):
    caplog.set_level(logging.INFO, logger="embeddings.service.rate_limiter")
    limits = {"requests_per_minute": 600, "tokens_per_minute": 60000}
    down = redis.Redis.from_url(CLOSED_PORT_URL, socket_timeout=1, socket_connect_timeout=1)
    limiter = FallbackRateLimiter(
        RedisRateLimiter(down, key="down", **limits), LocalRateLimiter(**limits), retry_after=0.05
    )
    limiter.acquire(1)
    limiter.shared = RedisRateLimiter(redis_client, key=key, **limits)  # Redis is back
    time.sleep(0.06)
    limiter.acquire(1)
    limiter.acquire(1)
    assert limiter.describe() == "Redis (shared)"
    assert float(redis_client.hget(key, "req")) < 599.5
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1
    assert "reachable again" in infos[0].getMessage()


# A grant schedule exercising every operation: rpm 600 (10/s), tpm 6000 (100/s).
SEQUENCE = [
    ("acquire", 5950),
    ("acquire", 100),  # 50 tokens short: 0.5 s
    ("acquire", 80),  # 80 short: 0.8 s
    ("pause", 0.3),
    ("acquire", 10),  # the pause, not the 0.1 s token wait, decides
    ("observe", 0),  # no requests left
    ("acquire", 20),  # one request: 0.1 s
]
EXPECTED_GRANTS = [0.0, 0.5, 1.3, 1.6, 1.7]


def _simulate(rpm, tpm):
    now, buckets, grants = 0.0, None, []
    for op, n in SEQUENCE:
        buckets, wait = step(buckets, now, op, n, -1, rpm, tpm)
        while wait > 0:  # sleep exactly the wait, as acquire() does without its jitter
            now += max(wait, 1e-9)
            buckets, wait = step(buckets, now, op, n, -1, rpm, tpm)
        if op == "acquire":
            grants.append(now)
    return grants


def _run(limiter, grants):
    start = time.monotonic()
    for op, n in SEQUENCE:
        if op == "acquire":
            limiter.acquire(n)
            grants.append(time.monotonic() - start)
        elif op == "observe":
            limiter.observe(remaining_requests=n, remaining_tokens=None)
        else:
            getattr(limiter, op)(n)


def test_local_and_redis_follow_the_same_schedule_as_the_pure_algorithm(redis_client, key):
    assert _simulate(600, 6000) == pytest.approx(EXPECTED_GRANTS, abs=1e-6)
    limits = {"requests_per_minute": 600, "tokens_per_minute": 6000}
    local_grants, redis_grants = [], []
    runs = [
        threading.Thread(target=_run, args=(LocalRateLimiter(**limits), local_grants)),
        threading.Thread(
            target=_run, args=(RedisRateLimiter(redis_client, key=key, **limits), redis_grants)
        ),
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    # Never earlier than the algorithm allows; later only by scheduling noise on a busy box.
    for grants in (local_grants, redis_grants):
        for got, expected in zip(grants, EXPECTED_GRANTS, strict=True):
            assert expected - CLOCK_SLACK <= got <= expected + 2.0, grants


def test_one_budget_per_endpoint_credential_and_model_and_no_key_in_its_name():
    key = budget_key("https://api.openai.com/v1", "sk-secret-1", "text-embedding-3-small")
    assert key == budget_key("https://api.openai.com/v1", "sk-secret-1", "text-embedding-3-small")
    others = {
        budget_key("https://api.openai.com/v1", "sk-secret-2", "text-embedding-3-small"),
        budget_key("https://api.openai.com/v1", "sk-secret-1", "text-embedding-3-large"),
        budget_key("http://127.0.0.1:8000/v1", "sk-secret-1", "text-embedding-3-small"),
    }
    assert key not in others and len(others) == 3
    assert "secret" not in key
