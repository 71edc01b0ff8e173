"""structlog set-up: readable on a terminal, JSON lines otherwise; one processor strips secrets.

Every log call goes through `redact_secrets`, the single choke point that keeps api keys,
signatures, tokens and Authorization headers out of the logs, whatever the caller bound.
Libraries' own records (Celery's and kombu's, at warning and above) and Python's warnings (as
Celery's SecurityWarning when a worker runs as root) come through the same processors, as
`library_message` lines: one format on stderr, for a log collector to parse.
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
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", re.I)  # scheme://user:password@host
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
    text = _URL_PASSWORD.sub(r"\1***@", text)
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
            structlog.processors.format_exc_info,  # first, so that a traceback's text is scrubbed too
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _forward_standard_logging()


class _ToStructlog(logging.Handler):
    """A standard-library record, written as desksync's own lines are."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extra: dict[str, Any] = {"exc_info": record.exc_info} if record.exc_info else {}
            get_logger(logger=record.name).log(record.levelno, "library_message", message=record.getMessage(), **extra)
        except Exception:  # noqa: BLE001 - logging must never raise into the code that logs
            self.handleError(record)


def _forward_standard_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(handler, _ToStructlog) for handler in root.handlers):
        root.addHandler(_ToStructlog())
    logging.captureWarnings(False)  # installed afresh: a catch_warnings block may have put another one back
    logging.captureWarnings(True)


def get_logger(**bound: Any) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger().bind(**bound)
    return logger
