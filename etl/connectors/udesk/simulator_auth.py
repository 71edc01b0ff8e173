"""Request signing and rate limiting as the Udesk simulators check them (seeds 000, 001, 004).

Written from the docs, independently of the engine's client (simulators import nothing from it):

- `email`, `timestamp` and `sign` are required query parameters. The email must be the
  account's administrator; the timestamp must be within five minutes of the server's clock
  (either side); sign = sha1("email&api_token&timestamp"), or sha256 over the same text for
  accounts set to sha256 (ServiceGo accounts created after mid-2021).
- sign_version=v2 (the knowledge open API's examples): `nonce` is required, the sign is
  sha256("email&api_token&timestamp&nonce&v2"), and a nonce already used within 15 minutes is
  refused.
- A refusal names its reason ("timestamp expired", "sign mismatch", ...); each simulator wraps it
  in its own envelope with HTTP 401 (seed 000 lists 401 Unauthorized; the body shape of a
  refused signature is not documented, so this is the simulators' reading).
- Rate limit: none is documented in the seeds; the vendor's public docs give 60 requests per
  minute per account. When a limit is set, the request over it is refused with HTTP 429 (the
  answer is this simulator's choice) and nothing is blocked beyond the minute.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

VALID_SECONDS = 5 * 60
NONCE_SECONDS = 15 * 60


class SignRefused(Exception):
    pass


@dataclass
class Account:
    email: str
    api_token: str
    hash_name: str = "sha1"  # sha1 | sha256, for unversioned signs


@dataclass
class Signer:
    account: Account
    allow_v2: bool = False
    clock_skew: float = 0.0  # tests move the server clock to expire signatures
    _nonces: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, params: Mapping[str, str]) -> None:
        email, timestamp, sign = params.get("email"), params.get("timestamp"), params.get("sign")
        if not email or not timestamp or not sign:
            raise SignRefused("email, timestamp and sign are required")
        if email != self.account.email:
            raise SignRefused(f"unknown administrator email {email}")
        try:
            stamp = int(timestamp)
        except ValueError:
            raise SignRefused("timestamp must be seconds since 1970-01-01") from None
        now = time.time() + self.clock_skew
        if abs(now - stamp) > VALID_SECONDS:
            raise SignRefused("timestamp expired (valid five minutes)")
        version = params.get("sign_version")
        if version == "v2":
            if not self.allow_v2:
                raise SignRefused("sign_version v2 is not supported here")
            nonce = params.get("nonce")
            if not nonce:
                raise SignRefused("nonce is required with sign_version v2")
            text = f"{email}&{self.account.api_token}&{timestamp}&{nonce}&v2"
            expected = hashlib.sha256(text.encode()).hexdigest()
        elif version:
            raise SignRefused(f"unknown sign_version {version}")
        else:
            nonce = None
            expected = hashlib.new(self.account.hash_name, f"{email}&{self.account.api_token}&{timestamp}".encode()).hexdigest()
        if sign != expected:
            raise SignRefused("sign mismatch")
        if nonce is not None:
            with self._lock:
                for old, seen in list(self._nonces.items()):
                    if seen < now - NONCE_SECONDS:
                        del self._nonces[old]
                if nonce in self._nonces:
                    raise SignRefused("nonce already used")
                self._nonces[nonce] = now


@dataclass
class MinuteLimit:
    per_minute: int | None = None
    minute_seconds: float = 60.0
    window_start: float = 0.0
    used: int = 0
    rejections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self) -> bool:
        if self.per_minute is None:
            return True
        with self._lock:
            now = time.time()
            start = now - (now % self.minute_seconds)
            if start != self.window_start:
                self.window_start, self.used = start, 0
            if self.used >= self.per_minute:
                self.rejections += 1
                return False
            self.used += 1
            return True
