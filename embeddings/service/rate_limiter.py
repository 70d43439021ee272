"""Keep every embedding client, in every process and machine, inside the account's RPM and TPM.

Two token buckets (requests, tokens) like the API's own limiter: capacity is the per-minute
limit, refilled continuously at limit/60 per second, starting full. The `limits` library was
rejected: it cannot take in the `x-ratelimit-remaining-*` headers nor pause every client until a
429's `Retry-After`, and its fixed/moving windows allow bursts the API's buckets refuse.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from typing import Protocol

import redis

logger = logging.getLogger("embeddings.service.rate_limiter")

KEY_PREFIX = "clip-embeddings:ratelimit"
JITTER_SECONDS = 0.01  # spreads out processes that would otherwise wake at the same instant
IDLE_TTL_SECONDS = 120  # an idle bucket is full again after 60 s, so it needs no state


Buckets = tuple[float, float, float, float]  # requests, tokens, updated, paused until


def budget_key(base_url: str | None, api_key: str | None, model: str) -> str:
    """The Redis hash of one budget: one per endpoint, credential and model, as the API counts
    them (its limits are per organization and per model). Every machine of one account and
    model shares it; another model, account or Redis tenant never eats into it. The key holds
    a digest, never the API key."""
    account = "\0".join((base_url or "", api_key or "", model)).encode()
    return f"{KEY_PREFIX}:{hashlib.sha256(account).hexdigest()[:16]}"


def step(
    b: Buckets | None, now: float, op: str, x: float, y: float, rpm: int, tpm: int
) -> tuple[Buckets, float]:
    """Apply one operation at time `now`; return the new buckets and the wait (0: granted).

    `_SCRIPT` is this function line by line in Lua. acquire: x = token cost; observe:
    x, y = remaining requests, tokens (negative: header absent); pause: x = seconds; charge:
    x = tokens used beyond what acquire took (negative: a refund; never above capacity).
    """
    req, tok, updated, paused = b or (rpm, tpm, now, 0.0)
    elapsed = max(0.0, now - updated)
    req = min(rpm, req + elapsed * rpm / 60)
    tok = min(tpm, tok + elapsed * tpm / 60)
    wait = 0.0
    if op == "acquire":
        wait = max(0.0, (1 - req) * 60 / rpm, (x - tok) * 60 / tpm, paused - now)
        if wait == 0:
            req, tok = req - 1, tok - x
    elif op == "observe":
        req = min(req, x) if x >= 0 else req
        tok = min(tok, y) if y >= 0 else tok
    elif op == "pause":
        paused = max(paused, now + x)
    elif op == "charge":
        tok = min(tpm, tok - x)
    return (req, tok, now, paused), wait


# Atomic, and on the Redis clock so machines with skewed clocks agree. ARGV[6]: idle TTL.
_SCRIPT = """
local op, x, y, rpm, tpm = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'req', 'tok', 'updated', 'paused_until')
local req, tok, updated, paused = tonumber(s[1]) or rpm, tonumber(s[2]) or tpm,
  tonumber(s[3]) or now, tonumber(s[4]) or 0
local elapsed = math.max(0, now - updated)
req = math.min(rpm, req + elapsed * rpm / 60)
tok = math.min(tpm, tok + elapsed * tpm / 60)
local wait = 0
if op == 'acquire' then
  wait = math.max(0, (1 - req) * 60 / rpm, (x - tok) * 60 / tpm, paused - now)
  if wait == 0 then req, tok = req - 1, tok - x end
elseif op == 'observe' then
  if x >= 0 then req = math.min(req, x) end
  if y >= 0 then tok = math.min(tok, y) end
elseif op == 'pause' then
  paused = math.max(paused, now + x)
elseif op == 'charge' then
  tok = math.min(tpm, tok - x)
end
local f = '%.6f'
redis.call('HSET', KEYS[1], 'req', string.format(f, req), 'tok', string.format(f, tok),
  'updated', string.format(f, now), 'paused_until', string.format(f, paused))
redis.call('EXPIRE', KEYS[1], math.ceil(math.max(tonumber(ARGV[6]), paused - now + 60)))
-- the reply is rounded to microseconds: a refusal must not round to "granted"
if wait > 0 then wait = math.max(wait, 0.000001) end
return string.format(f, wait)
"""


class RateLimiter(Protocol):
    def acquire(self, tokens: int) -> float:
        """Block until 1 request and `tokens` tokens are granted; return seconds waited."""

    def observe(self, remaining_requests: int | None, remaining_tokens: int | None) -> None:
        """Lower the buckets to what the server's headers say remains; never raise them."""

    def pause(self, seconds: float) -> None:
        """After a 429: nobody acquires before now + seconds (never shortens a pause)."""

    def charge(self, tokens: int) -> None:
        """A request used `tokens` more than it acquired (fewer when negative): the token
        bucket pays the difference, so the next requests wait for it."""

    def describe(self) -> str: ...


class _BucketLimiter:
    """The RateLimiter methods, as operations of `step` run by `_run` somewhere."""

    rpm: int
    tpm: int

    def __init__(self, requests_per_minute: int, tokens_per_minute: int) -> None:
        # Positive limits are the settings' promise (embeddings.checks).
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute

    def _run(self, op: str, x: float = 0, y: float = 0) -> float:
        raise NotImplementedError

    def try_acquire(self, tokens: int) -> float:
        """Take 1 request + `tokens` and return 0, or take nothing and return seconds to wait."""
        # Clamped to the capacity: a bigger request could never go.
        return self._run("acquire", min(max(tokens, 0), self.tpm))

    def acquire(self, tokens: int) -> float:
        start = time.monotonic()
        while (wait := self.try_acquire(tokens)) > 0:
            time.sleep(wait + random.uniform(0, JITTER_SECONDS))
        return time.monotonic() - start

    def observe(self, remaining_requests: int | None, remaining_tokens: int | None) -> None:
        absent = -1
        req = absent if remaining_requests is None else remaining_requests
        self._run("observe", req, absent if remaining_tokens is None else remaining_tokens)

    def pause(self, seconds: float) -> None:
        self._run("pause", max(0.0, seconds))

    def charge(self, tokens: int) -> None:
        if tokens:
            self._run("charge", tokens)


class LocalRateLimiter(_BucketLimiter):
    """Per-process buckets: N processes may together spend N times the budget."""

    def __init__(self, *, requests_per_minute: int, tokens_per_minute: int) -> None:
        super().__init__(requests_per_minute, tokens_per_minute)
        self._buckets = step(None, time.monotonic(), "", 0, 0, self.rpm, self.tpm)[0]
        self._lock = threading.Lock()

    def _run(self, op: str, x: float = 0, y: float = 0) -> float:
        with self._lock:
            self._buckets, wait = step(
                self._buckets, time.monotonic(), op, x, y, self.rpm, self.tpm
            )
        return wait

    def describe(self) -> str:
        return "per-process"


class RedisRateLimiter(_BucketLimiter):
    """The same buckets, shared by every process through one Redis hash. Raises RedisError."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        requests_per_minute: int,
        tokens_per_minute: int,
        key: str,
    ) -> None:
        super().__init__(requests_per_minute, tokens_per_minute)
        self.key = key
        self._script = client.register_script(_SCRIPT)

    def _run(self, op: str, x: float = 0, y: float = 0) -> float:
        # The limits travel with every call, so changing them needs no new key.
        args = [op, x, y, self.rpm, self.tpm, IDLE_TTL_SECONDS]
        return float(self._script(keys=[self.key], args=args))

    def describe(self) -> str:
        return "Redis (shared)"


class FallbackRateLimiter(_BucketLimiter):
    """Redis while it answers, per-process pacing while not: never raises a Redis error."""

    def __init__(
        self, shared: RedisRateLimiter, local: LocalRateLimiter, *, retry_after: float = 30.0
    ) -> None:
        super().__init__(shared.rpm, shared.tpm)
        self.shared, self.local, self.retry_after = shared, local, retry_after
        self._down_until: float | None = None  # monotonic; None while Redis answers
        self._failed_at = float("-inf")  # monotonic time of the last Redis error
        self._lock = threading.Lock()

    def _run(self, op: str, x: float = 0, y: float = 0) -> float:
        if op in ("observe", "pause"):
            # Idempotent, so the local buckets always learn them too: a switch to them
            # mid-outage then starts from the server's truth.
            self.local._run(op, x, y)
        if self._down_until is not None and time.monotonic() < self._down_until:
            return self.local._run(op, x, y)
        started = time.monotonic()
        try:
            wait = self.shared._run(op, x, y)
        except redis.exceptions.RedisError as exc:
            with self._lock:
                first = self._down_until is None
                self._failed_at = time.monotonic()
                self._down_until = self._failed_at + self.retry_after
            if first:
                logger.warning(
                    "Redis rate limiter unavailable (%s: %s): falling back to per-process "
                    "pacing, retrying Redis every %.0f s",
                    type(exc).__name__,
                    exc,
                    self.retry_after,
                )
            return self.local._run(op, x, y)
        with self._lock:
            # Only a call begun after the last error proves Redis is back: one that was already
            # in flight when another thread saw it fail must not end the outage (and re-warn).
            recovered = self._down_until is not None and started > self._failed_at
            if recovered:
                self._down_until = None
        if recovered:
            logger.info("Redis rate limiter reachable again: pacing is shared again")
        return wait

    def describe(self) -> str:
        down = self._down_until is not None
        return "per-process (Redis unavailable)" if down else self.shared.describe()


class UnlimitedRateLimiter:
    """For local providers, which have no rate limit."""

    def acquire(self, tokens: int) -> float:
        return 0.0

    def describe(self) -> str:
        return "unlimited"

    def observe(self, remaining_requests: int | None, remaining_tokens: int | None) -> None: ...
    def pause(self, seconds: float) -> None: ...
    def charge(self, tokens: int) -> None: ...


def build_rate_limiter(
    *,
    redis_url: str | None,
    requests_per_minute: int,
    tokens_per_minute: int,
    key: str,
) -> RateLimiter:
    """Shared pacing when a Redis URL is given (per-process while it is down), else per process."""
    limits = {"requests_per_minute": requests_per_minute, "tokens_per_minute": tokens_per_minute}
    local = LocalRateLimiter(**limits)
    if not redis_url:
        return local
    # Short timeouts: a hung Redis must not stall embedding for longer than pacing would.
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    return FallbackRateLimiter(RedisRateLimiter(client, key=key, **limits), local)
