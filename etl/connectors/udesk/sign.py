"""Udesk request signing (seed 000, "Authentication Method"; seed 001's sign_version=v2 examples).

Every Udesk request carries `email`, `timestamp` (epoch seconds, valid five minutes) and `sign`
as query parameters, computed fresh for each request, retries included:

    v1 (seed 000, ServiceGo seed 004, KM seed 002):
        sign = sha1("email&api_token&timestamp")                      lowercase hex, 40 digits
    v1 with sha256 (ServiceGo accounts created after mid-2021):
        sign = sha256("email&api_token&timestamp")                    lowercase hex, 64 digits
    v2 (knowledge open API, seed 001):
        nonce = a fresh random UUID (the server refuses one reused within 15 minutes)
        sign  = sha256("email&api_token&timestamp&nonce&v2")          lowercase hex, 64 digits
        sent with nonce=<uuid>&sign_version=v2

The signature is added by an httpx `Auth` flow, so it is computed when the request is really
sent: a retried request gets a new timestamp (and nonce), never an expired one.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Generator
from typing import Any, Literal

import httpx

from etl.core.http.ratelimit import RateLimiter
from etl.core.http.retry import Backoff
from etl.core.http.session import EnvelopeCheck, ErrorParser, Session, new_http_client

SignVersion = Literal["sha1", "sha256", "v2"]


def sign_v1(email: str, api_token: str, timestamp: int, hash_name: Literal["sha1", "sha256"] = "sha1") -> str:
    text = f"{email}&{api_token}&{timestamp}".encode()
    return hashlib.new(hash_name, text).hexdigest()


def sign_v2(email: str, api_token: str, timestamp: int, nonce: str) -> str:
    return hashlib.sha256(f"{email}&{api_token}&{timestamp}&{nonce}&v2".encode()).hexdigest()


def sign_params(
    email: str,
    api_token: str,
    version: SignVersion,
    *,
    now: Callable[[], float] = time.time,
    new_nonce: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> dict[str, str]:
    """The query parameters that authenticate one request."""
    timestamp = int(now())
    if version == "v2":
        nonce = new_nonce()
        return {
            "email": email,
            "timestamp": str(timestamp),
            "nonce": nonce,
            "sign_version": "v2",
            "sign": sign_v2(email, api_token, timestamp, nonce),
        }
    return {"email": email, "timestamp": str(timestamp), "sign": sign_v1(email, api_token, timestamp, version)}


class UdeskSignAuth(httpx.Auth):
    """Signs each request as it is sent (httpx calls `auth_flow` once per request sent)."""

    def __init__(self, email: str, api_token: str, version: SignVersion,
                 now: Callable[[], float] = time.time) -> None:
        self._email = email
        self._token = api_token
        self._version = version
        self._now = now

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        params = sign_params(self._email, self._token, self._version, now=self._now)
        request.url = request.url.copy_merge_params(params)
        yield request


def new_limiter(system: str, per_minute: int, window_seconds: float, budget: str = "main") -> RateLimiter:
    """No block length is documented for Udesk: a refusal waits out the window."""
    return RateLimiter(budget, per_minute, window_seconds, window_seconds, system)


def signed_session(
    system: str,
    base_url: str,
    email: str,
    api_token: str,
    version: SignVersion,
    *,
    per_minute: int,
    window_seconds: float,
    retry: Any,
    timeout: float,
    envelope: EnvelopeCheck,
    parse_error: ErrorParser,
    budget: str = "main",
    transport: httpx.BaseTransport | None = None,
    limiter: RateLimiter | None = None,
) -> Session:
    """A Udesk account's session: one pool, signed requests, one limiter (60/min by default).

    No block length is documented for Udesk; a refusal (HTTP 429) waits out the window.
    """
    limiter = limiter or new_limiter(system, per_minute, window_seconds, budget)
    http = new_http_client(base_url + "/", timeout, 4, auth=UdeskSignAuth(email, api_token, version),
                           headers={"Accept": "application/json"}, transport=transport)
    backoff = Backoff(retry.attempts, retry.backoff_seconds, retry.max_backoff_seconds)
    return Session(system, http, {budget: limiter}, backoff, parse_error, envelope=envelope)
