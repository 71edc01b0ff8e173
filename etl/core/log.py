"""structlog set-up: readable on a terminal, JSON lines otherwise; one processor strips secrets.

Every log call goes through `redact_secrets`, the single choke point that keeps api keys,
signatures, tokens and Authorization headers out of the logs, whatever the caller bound.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEYS = frozenset({"api_key", "apikey", "api_token", "token", "sign", "password", "authorization", "secret"})
_BASIC_AUTH = re.compile(r"(Basic|Bearer)\s+[A-Za-z0-9+/=._-]+")
_KEY_IN_TEXT = re.compile(r"(api_key|api_token|sign|token|password)([\"']?\s*[:=]\s*[\"']?)([^\"'&\s,}]+)", re.I)

_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Values read from the environment are masked wherever they appear in a log line."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def scrub_text(text: str) -> str:
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    text = _BASIC_AUTH.sub(r"\1 ***", text)
    return _KEY_IN_TEXT.sub(r"\1\2***", text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: ("***" if str(k).lower() in SECRET_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in SECRET_KEYS:
            event_dict[key] = "***"
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


_settings: tuple[str, bool] = ("info", True)


def current_settings() -> tuple[str, bool]:
    """The level and JSON choice last configured (a writer process logs as its parent does)."""
    return _settings


def known_secrets() -> list[str]:
    return sorted(_known_secrets)


def configure(level: str = "info", json: bool | None = None, stream: Any = None) -> None:
    global _settings
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    _settings = (level, json)
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(**bound)
    return logger
