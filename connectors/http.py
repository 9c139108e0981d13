"""The one HTTP client every API connector uses: error mapping, Retry-After, backoff with jitter, budget.

Connectors never call ``httpx`` directly; they call :meth:`SourceHttp.request`, which

* maps answers onto the error tree of :mod:`connectors.base` (401/403 → AuthError, 404 → NotFound,
  429 → RateLimited with the server's Retry-After, 5xx → ServerError, timeouts and refused or reset
  connections → SourceTimeout, a body that is not the JSON promised → BadResponse);
* retries retryable errors up to ``max_retries`` times, sleeping what Retry-After says (capped by
  ``max_retry_after``) or an exponential backoff with full jitter;
* spends a per-source request budget (a token bucket of ``requests_per_minute``), so a fleet never
  exceeds the plan limit it was configured with, e.g. Zendesk's 10/min on incremental exports.

The ``httpx.Client`` is injected (base URL, auth, transport), so tests talk to local servers over
real sockets and production code passes nothing special. ``sleep`` and ``clock`` are injectable too,
so a test can check a Retry-After was honoured without waiting for it.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from connectors.base import (
    AuthError,
    BadResponse,
    ConnectorError,
    NotFound,
    PermanentError,
    RateLimited,
    RetryableError,
    ServerError,
    SourceTimeout,
)


@dataclass
class RetryPolicy:
    max_retries: int = 4
    backoff_base: float = 0.5  # seconds; attempt n sleeps uniform(0, base * 2**n), capped below
    backoff_cap: float = 30.0
    max_retry_after: float = 120.0  # a Retry-After longer than this is raised, not slept through


@dataclass
class RequestBudget:
    """Token bucket: ``requests_per_minute`` tokens, refilled continuously. ``None`` means unlimited."""

    requests_per_minute: float | None = None
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False, default=0.0)
    _stamp: float = field(init=False, default=0.0)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._tokens = self.requests_per_minute or 0.0
        self._stamp = self.clock()

    def wait_time(self) -> float:
        """Take one token; return how long to sleep first (0 when a token was available)."""
        if not self.requests_per_minute:
            return 0.0
        with self._lock:
            now = self.clock()
            rate = self.requests_per_minute / 60.0
            self._tokens = min(self.requests_per_minute, self._tokens + (now - self._stamp) * rate)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / rate


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date. None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_for_response(response: httpx.Response, source: str) -> ConnectorError | None:
    """The error an HTTP answer stands for, or None when it is a success."""
    status = response.status_code
    if status < 400:
        return None
    detail = _short_body(response)
    where = f"{response.request.method} {response.request.url.path}"
    if status == 429:
        return RateLimited(
            f"rate limited on {where}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            source=source,
        )
    if status in (401, 403):
        return AuthError(
            f"{status} on {where}: credentials refused or lacking permission{detail}",
            source=source,
            status=status,
        )
    if status == 404:
        return NotFound(f"404 on {where}{detail}", source=source, status=status)
    if status >= 500:
        # 503 with Retry-After is how several APIs signal maintenance; keep the hint.
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is not None:
            return RateLimited(
                f"{status} on {where}{detail}", retry_after=retry_after, source=source, status=status
            )
        return ServerError(f"{status} on {where}{detail}", source=source, status=status)
    return PermanentError(f"{status} on {where}{detail}", source=source, status=status)


def decode_json(response: httpx.Response, source: str) -> Any:
    """The body as JSON (None for 204 or an empty body), or BadResponse naming the endpoint."""
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise BadResponse(
            f"{response.request.method} {response.request.url.path}: malformed JSON ({exc})", source=source
        ) from exc


def _short_body(response: httpx.Response) -> str:
    try:
        text = response.text.strip()
    except Exception:  # undecodable body: the status says enough
        return ""
    return f": {text[:200]}" if text else ""


class SourceHttp:
    """Requests for one source, with the retry policy and request budget of that source."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        source: str,
        retry: RetryPolicy | None = None,
        budget: RequestBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.source = source
        self.retry = retry or RetryPolicy()
        self.budget = budget or RequestBudget()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.requests_sent = 0

    def request(self, method: str, url: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """Send with retries; return a 2xx/3xx response or raise from the error tree.

        ``retry=False`` is for non-idempotent writes whose caller deduplicates itself (it re-reads the
        source before posting again), so this layer never blindly re-sends a POST that may have landed.
        """
        attempt = 0
        while True:
            try:
                return self._send_once(method, url, **kwargs)
            except RetryableError as exc:
                if not retry or attempt >= self.retry.max_retries:
                    raise
                self.sleep(self._delay(exc, attempt))
                attempt += 1

    def json(self, method: str, url: str, *, retry: bool = True, **kwargs: Any) -> Any:
        return decode_json(self.request(method, url, retry=retry, **kwargs), self.source)

    def _send_once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        wait = self.budget.wait_time()
        if wait > 0:
            self.sleep(wait)
        self.requests_sent += 1
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise SourceTimeout(
                f"{method} {url}: timed out ({type(exc).__name__})", source=self.source
            ) from exc
        except httpx.TransportError as exc:
            raise SourceTimeout(f"{method} {url}: {type(exc).__name__}: {exc}", source=self.source) from exc
        error = error_for_response(response, self.source)
        if error is not None:
            raise error
        return response

    def _delay(self, exc: RetryableError, attempt: int) -> float:
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            if exc.retry_after > self.retry.max_retry_after:
                raise exc
            return exc.retry_after
        ceiling = min(self.retry.backoff_cap, self.retry.backoff_base * (2**attempt))
        return self.rng.uniform(0, ceiling)
