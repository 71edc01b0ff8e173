"""The envelope ServiceGo and the KM entity API wrap every answer in: {"code": 200, "message",
"data"} (seeds 002 and 004); a code other than 200 says what went wrong."""

from __future__ import annotations

from typing import Any

from etl.core.http.retry import Action


def check_envelope(body: Any) -> tuple[Action, str | None, str] | None:
    if not isinstance(body, dict) or "code" not in body:
        return Action.RETRY, None, "answer has no envelope code"
    code = body["code"]
    if code == 200:
        return None
    message = str(body.get("message") or "no message")
    if code in (401, 403):
        return Action.AUTH, str(code), message
    if code == 429:
        return Action.BLOCKED, str(code), message
    if isinstance(code, int) and code >= 500:
        return Action.RETRY, str(code), message
    return Action.FAIL, str(code), message


def parse_error(body: Any) -> tuple[str | None, str, list[dict[str, str]]]:
    return str(body.get("code")), str(body.get("message") or "no message"), []
