"""One account's HTTP session: an httpx.Client (one pool), its rate limiters, the retry loop.

Every request of every remote system goes through `Session.request_json`, so limits, retries,
metrics and request logging are applied the same way everywhere.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from etl.core.errors import ApiError, AuthError, MalformedResponse, RemoteError, Stopped, TransientError
from etl.core.http.ratelimit import RateLimiter
from etl.core.http.retry import RETRYABLE_EXCEPTIONS, Action, Backoff, classify_status
from etl.core.http.transport import StdlibTransport
from etl.core.log import get_logger, scrub_text

# A host that refuses every connection (a wrong port, a service down) is given up on this long
# after its first refusal since an answer: each request's retries would otherwise add up, stream
# after stream (a closed port took 144 s and 110 retries). Timeouts and 5xx keep their retries.
REFUSED_GIVE_UP_SECONDS = 15.0

ErrorParser = Callable[[Any], tuple[str | None, str, list[dict[str, str]]]]
# Some APIs report failures inside HTTP 200 (Udesk: {"code": 400, "message": ...}). An envelope
# check returns None for a success, else the action and the remote's own code and message.
EnvelopeCheck = Callable[[Any], tuple[Action, str | None, str] | None]


@dataclass
class SessionMetrics:
    requests: int = 0
    retries: int = 0
    rate_limit_rejections: int = 0
    by_budget: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, budget: str) -> None:
        with self._lock:
            self.requests += 1
            self.by_budget[budget] = self.by_budget.get(budget, 0) + 1


@dataclass
class Response:
    status: int
    headers: httpx.Headers
    body: Any
    elapsed: float
    content: bytes = b""  # the body as received (a writer process can parse a page itself)


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class Session:
    def __init__(
        self,
        system: str,
        client: httpx.Client,
        limiters: Mapping[str, RateLimiter],
        backoff: Backoff,
        parse_error: ErrorParser,
        sleep: Callable[[float], None] = time.sleep,
        envelope: EnvelopeCheck | None = None,
    ) -> None:
        self.system = system
        self.client = client
        self.limiters = dict(limiters)
        self.backoff = backoff
        self.parse_error = parse_error
        self.envelope = envelope
        self.metrics = SessionMetrics()
        self._sleep = sleep
        self.log = get_logger(system=system)
        self.stop: threading.Event | None = None  # the run's: waits end as soon as it is set
        self.on_wait: Callable[[float], None] | None = None  # told the seconds of each rate-limit wait ahead
        self._waits = threading.Lock()
        self._waited_wall = 0.0  # seconds in which at least one of this session's requests waited
        self._waited_until = 0.0  # monotonic end of the waits counted so far
        self.refused_give_up_seconds = REFUSED_GIVE_UP_SECONDS
        self._refused_since: float | None = None  # monotonic time of the first refusal since an answer

    def close(self) -> None:
        self.client.close()

    @property
    def rate_limit_wait_seconds(self) -> float:
        """Wall-clock seconds this session spent waiting on its rate limits: waits of several
        threads at once count once (eight fetch threads waiting 10 s each are 10 s, not 80),
        and the limiters' waits for other sessions of the account are not this session's."""
        return self._waited_wall

    def _waited(self, seconds: float) -> None:
        if seconds <= 0:
            return
        end = time.monotonic()
        with self._waits:  # the union of [end - seconds, end] with the waits counted before
            start = max(end - seconds, self._waited_until)
            if end > start:
                self._waited_wall += end - start
            self._waited_until = max(self._waited_until, end)

    def request_json(
        self,
        method: str,
        path: str,
        *,
        budget: str = "main",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        retry: bool = True,
    ) -> Response:
        limiter = self.limiters[budget]
        attempts = self.backoff.attempts if retry else 1
        last_problem = ""
        for attempt in range(1, attempts + 1):
            last_problem = ""
            self._check_refusals(path)
            self._waited(limiter.acquire(self.stop, self.on_wait))
            self.metrics.count(budget)
            started = time.perf_counter()
            try:
                http = self.client.request(method, path, params=params, json=json, data=data)
            except RETRYABLE_EXCEPTIONS as exc:
                limiter.cancel()
                last_problem = f"{type(exc).__name__}: {scrub_text(str(exc)) or 'no detail'}"
                if isinstance(exc, httpx.ConnectError) and self._refused_since is None:
                    self._refused_since = time.monotonic()
                self._before_retry(attempt, attempts, path, last_problem)
                continue
            self._refused_since = None  # the host answers
            elapsed = time.perf_counter() - started
            limiter.release(
                _int_header(http.headers, "X-Rate-Limit"), _int_header(http.headers, "X-Rate-Limit-Remaining"), elapsed
            )
            self.log.debug("request", method=method, path=path, status=http.status_code, ms=round(elapsed * 1000, 1))
            answer = self._read(http, elapsed, path, budget, limiter)
            if isinstance(answer, Response):
                return answer
            last_problem = answer
            self._before_retry(attempt, attempts, path, last_problem)
        raise TransientError(
            self.system, f"gave up after {attempts} attempts; last problem: {last_problem}", path=path, attempts=attempts
        )

    def _read(self, http: httpx.Response, elapsed: float, path: str, budget: str,
              limiter: RateLimiter) -> Response | str:
        """An answer as the caller gets it, or what went wrong if it is worth another try;
        raises for a refusal (a block, bad credentials, the API's error)."""
        # the body as text is only needed to describe a failure: decoding it costs on big pages
        ok = 200 <= http.status_code < 300
        text = "" if ok else http.text
        action = Action.OK if ok else classify_status(http.status_code, text)
        problem = ""
        if action is Action.OK:
            try:
                body = orjson.loads(http.content)
            except orjson.JSONDecodeError as exc:
                action = Action.RETRY
                snippet = scrub_text(http.text[:80]).replace("\n", " ")
                problem = f"HTTP {http.status_code} body is not valid JSON ({exc}); it starts {snippet!r}"
            else:
                refusal = self.envelope(body) if self.envelope else None
                if refusal is None:
                    return Response(http.status_code, http.headers, body, elapsed, http.content)
                action, code, message = refusal
                if action is Action.RETRY:
                    problem = f"HTTP {http.status_code} [{code}] {message}"
                elif action is Action.AUTH:
                    raise AuthError(self.system, message or "credentials refused", http.status_code, code, path)
                elif action is not Action.BLOCKED:
                    raise ApiError(self.system, message, http.status_code, code, path)
        if action is Action.RETRY:
            return problem or f"HTTP {http.status_code}: {self._describe(text or http.text)}"
        if action is Action.BLOCKED:
            limiter_error = limiter.block()
            self.metrics.rate_limit_rejections += 1
            limiter_error.path = path
            self.log.error("rate_limit_blocked", path=path, budget=budget, blocked_for=limiter.block_seconds)
            raise limiter_error
        code, message, details = self._error_of(text)
        if action is Action.AUTH:
            raise AuthError(self.system, message or "credentials refused", http.status_code, code, path)
        raise ApiError(self.system, message, http.status_code, code, path, details=details)

    def _check_refusals(self, path: str) -> None:
        """Give up on a host that has refused every connection for refused_give_up_seconds."""
        since = self._refused_since
        if since is not None and time.monotonic() - since >= self.refused_give_up_seconds:
            raise TransientError(self.system, f"the host refuses connections (for {time.monotonic() - since:.0f} s "
                                 "now): is base_url right, and is the service up?", path=path)

    def _before_retry(self, attempt: int, attempts: int, path: str, problem: str) -> None:
        if attempt >= attempts:
            return
        self.metrics.retries += 1
        delay = self.backoff.delay(attempt)
        if self._refused_since is not None:  # no use waiting past the give-up time
            delay = min(delay, max(0.0, self._refused_since + self.refused_give_up_seconds - time.monotonic()))
        self.log.warning("request_retry", path=path, attempt=attempt, problem=problem, sleep=round(delay, 3))
        if self.stop is None:
            self._sleep(delay)
        elif self.stop.wait(delay):
            raise Stopped()

    def _error_of(self, text: str) -> tuple[str | None, str, list[dict[str, str]]]:
        try:
            return self.parse_error(orjson.loads(text))
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            return None, self._describe(text), []

    @staticmethod
    def _describe(text: str) -> str:
        snippet = " ".join(scrub_text(text[:120]).split())
        return snippet or "(empty body)"


def new_http_client(base_url: str, timeout: float, concurrency: int,
                    transport: httpx.BaseTransport | None = None, **kwargs: Any) -> httpx.Client:
    """The account's one client; its requests go through StdlibTransport unless a test gives another.

    With a proxy named in the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY) httpx's own
    transport is kept: httpx reads those variables only when it builds its transports itself,
    and StdlibTransport speaks to the origin directly."""
    if transport is None and not urllib.request.getproxies():
        transport = StdlibTransport(keepalive=concurrency + 2)
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    return httpx.Client(base_url=base_url, timeout=timeout, transport=transport, limits=limits, **kwargs)


class OneSessionClient:
    """A client over one HTTP session: what the engine needs of it (etl.core.connector.Client)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def sessions(self) -> list[Session]:
        return [self.session]

    def close(self) -> None:
        self.session.close()


__all__ = ["Session", "Response", "RemoteError", "MalformedResponse", "new_http_client", "OneSessionClient"]
