"""Rate limits: a token bucket per API key (merchant API) and per service name (credits API),
and one per client address for failed authentications (API keys on the merchant API, request
signatures on the credits API; one bucket per API).

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second;
a request takes one token or is refused with 429 ``RATE_LIMITED`` and a
``Retry-After`` of the seconds until a token is back.

With ``REDIS_URL`` the buckets live in Redis, shared by every process and
node: one Lua script reads, refills, takes and writes a bucket in a single
round trip (EVALSHA), on Redis's own clock so app nodes need not agree on the
time. Without Redis each process keeps its own buckets. When Redis fails
(down, slow past ``RATE_LIMIT_REDIS_TIMEOUT``) the limiter fails open: it logs
once, counts in the process for ``RATE_LIMIT_REDIS_RETRY_SECONDS`` and then
tries Redis again, so check and track keep answering.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle

from billing.client_address import client_address

logger = logging.getLogger("billing.ratelimit")

# KEYS[1] the bucket; ARGV rate (tokens/s), burst. Returns {allowed 0|1, wait in ms}.
# The bucket is a hash {ms: last refill in ms, tokens}; it expires once it would be full again.
_TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'ms', 'tokens')
local last = tonumber(state[1])
local tokens = tonumber(state[2])
if last == nil or tokens == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
end
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'ms', now, 'tokens', tostring(tokens))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {allowed, wait}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    wait_seconds: float  # until the next token, when refused


class LocalBuckets:
    """Token buckets in this process (no Redis, or Redis failing). ``clock`` (seconds,
    monotonic) is there for tests that let time pass."""

    MAX_BUCKETS = 100_000

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (clock time, tokens)

    def take(self, key: str, *, rate: float, burst: int) -> Decision:
        now = self.clock()
        with self._lock:
            last, tokens = self._buckets.get(key, (now, float(burst)))
            tokens = min(float(burst), tokens + (now - last) * rate)
            if tokens >= 1:
                self._buckets[key] = (now, tokens - 1)
                decision = Decision(True, 0.0)
            else:
                self._buckets[key] = (now, tokens)
                decision = Decision(False, (1 - tokens) / rate)
            if len(self._buckets) > self.MAX_BUCKETS:
                self._forget_full(now, rate, burst)
        return decision

    def _forget_full(self, now: float, rate: float, burst: int) -> None:
        """Drop buckets that have refilled: forgetting one changes nothing."""
        self._buckets = {
            k: (t, n) for k, (t, n) in self._buckets.items() if n + (now - t) * rate < burst
        }

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


class RedisBuckets:
    """Token buckets in Redis, one round trip per request; None when Redis failed."""

    def __init__(self, url: str, *, timeout: float):
        self.url, self.timeout = url, timeout
        self._pid = None
        self._script = None

    def _client_script(self):
        if self._script is None or self._pid != os.getpid():  # a fresh pool after a fork
            import redis

            client = redis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                health_check_interval=30,
            )
            self._script, self._pid = client.register_script(_TOKEN_BUCKET_LUA), os.getpid()
        return self._script

    def take(self, key: str, *, rate: float, burst: int) -> Decision:
        allowed, wait_ms = self._client_script()(keys=[key], args=[repr(float(rate)), int(burst)])
        return Decision(bool(allowed), int(wait_ms) / 1000)


class RateLimiter:
    """Redis buckets when configured, in-process ones otherwise or while Redis fails."""

    def __init__(self):
        self.local = LocalBuckets()
        self._redis: RedisBuckets | None = None
        self._redis_url: str | None = None
        self._redis_down_until = 0.0
        self._failing = False

    def _redis_for(self, url: str) -> RedisBuckets:
        if self._redis is None or self._redis_url != url:
            self._redis = RedisBuckets(url, timeout=settings.RATE_LIMIT_REDIS_TIMEOUT)
            self._redis_url = url
        return self._redis

    def take(self, key: str, *, rate: float, burst: int) -> Decision:
        url = settings.REDIS_URL
        if url and time.monotonic() >= self._redis_down_until:
            import redis

            try:
                decision = self._redis_for(url).take(settings.RATE_LIMIT_KEY_PREFIX + key, rate=rate, burst=burst)
            except redis.RedisError as exc:
                self._redis_down_until = time.monotonic() + settings.RATE_LIMIT_REDIS_RETRY_SECONDS
                if not self._failing:  # once per outage, not once per request
                    self._failing = True
                    logger.warning(
                        "rate limiter: Redis failed (%s); counting in this process and retrying Redis every %s s",
                        exc.__class__.__name__, settings.RATE_LIMIT_REDIS_RETRY_SECONDS,
                    )
            else:
                if self._failing:
                    self._failing = False
                    logger.warning("rate limiter: Redis answers again")
                return decision
        return self.local.take(key, rate=rate, burst=burst)


limiter = RateLimiter()


class _BucketThrottle(BaseThrottle):
    """A DRF throttle over ``limiter``; the exception handler turns a refusal into
    429 RATE_LIMITED with Retry-After."""

    scope = ""

    def bucket_key(self, request) -> str | None:
        raise NotImplementedError

    def limits(self) -> tuple[float, int]:
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        self._wait = None
        if not settings.RATE_LIMIT_ENABLED:
            return True
        key = self.bucket_key(request)
        if key is None:
            return True
        rate, burst = self.limits()
        decision = limiter.take(f"{self.scope}:{key}", rate=rate, burst=burst)
        if not decision.allowed:
            self._wait = decision.wait_seconds
        return decision.allowed

    def wait(self) -> float | None:
        # The handler sends int(wait) + 1: whole seconds, never 0.
        return None if self._wait is None else max(0.0, math.ceil(self._wait) - 1.0)


class ApiKeyRateThrottle(_BucketThrottle):
    """Per API key on the merchant API (RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST)."""

    scope = "key"

    def bucket_key(self, request):
        key = getattr(request, "auth", None)
        return getattr(key, "pk", None)

    def limits(self):
        return settings.RATE_LIMIT_PER_SECOND, settings.RATE_LIMIT_BURST


class ServiceRateThrottle(_BucketThrottle):
    """Per X-Service-Name of a signed request on the credits API
    (CREDITS_RATE_LIMIT_PER_SECOND, CREDITS_RATE_LIMIT_BURST)."""

    scope = "svc"

    def bucket_key(self, request):
        return getattr(request.user, "name", None)

    def limits(self):
        return settings.CREDITS_RATE_LIMIT_PER_SECOND, settings.CREDITS_RATE_LIMIT_BURST


def _address_bucket(address: str) -> str:
    """IPv6 clients are counted per /64 (one host usually holds the whole /64)."""
    if ":" in address:
        try:
            return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
        except ValueError:
            pass
    return address


def count_auth_failure(request, *, scope: str = "authfail") -> None:
    """Count a failed authentication against the client's address (one bucket round trip):
    a 401 on the merchant API (scope ``authfail``) or a refused signature on the credits
    API (``svcauthfail``); each API has its own bucket per address.

    Called only once authentication has failed, so a valid key or signature never pays for
    it. Past ``AUTH_FAILURE_LIMIT_PER_MINUTE`` failures in a minute, raises ``Throttled``
    (429 RATE_LIMITED with Retry-After) instead of letting the 401 through; the bucket
    refills at the limit's pace, so guessing goes on at most that fast.
    """
    limit = settings.AUTH_FAILURE_LIMIT_PER_MINUTE
    if not settings.RATE_LIMIT_ENABLED or limit <= 0:
        return
    decision = limiter.take(f"{scope}:{_address_bucket(client_address(request))}", rate=limit / 60, burst=limit)
    if not decision.allowed:
        # The handler sends int(wait) + 1: whole seconds, never 0.
        raise exceptions.Throttled(wait=max(0.0, math.ceil(decision.wait_seconds) - 1.0))
