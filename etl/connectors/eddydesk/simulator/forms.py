"""Request bodies as EddyDesk reads them (form fields with brackets, seed 003), and its refusals."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

Record = dict[str, Any]


BRACKETS = re.compile(r"^(\w+)((?:\[[^\]]*\])*)$")


# A refusal: its details (titled "Bad request"), or (title, details) where the docs print both.
Problem = str | tuple[str, str]


class Refused(Exception):
    """e-411 errors of one request."""

    def __init__(self, details: list[Problem]) -> None:
        self.details = details


def required(name: str) -> tuple[str, str]:
    """A missing required field, as the user-create example prints it."""
    return f"Required {{{name}}} field", f"Required field {{{name}}} is missing or empty"


def deleted(details: str) -> Record:
    """The docs' answer to a DELETE: HTTP 200 with an s-204 "error"."""
    return {"errors": [{"code": "s-204", "title": "No content", "details": details}]}


def as_html(text: str) -> str:
    """Reply text as the helpdesk stores it: plain text in a paragraph, HTML as sent."""
    return text if text.lstrip().startswith("<") else f"<p>{text}</p>"


def parse_form(body: bytes) -> Record:
    """application/x-www-form-urlencoded with PHP-style brackets: a[0]=1&a[1]=2, f[6]=x, f[7][1]=y."""
    out: Record = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        match = BRACKETS.match(key)
        if not match:
            out[key] = value
            continue
        name, rest = match.groups()
        parts = re.findall(r"\[([^\]]*)\]", rest)
        if not parts:
            out[name] = value
            continue
        node = out.setdefault(name, {})
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1] or str(len(node))] = value
    return out


def number_of(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value))
    except ValueError:
        return None


def values_of(value: Any) -> list[Any]:
    """An array member as the form ({"0": 1, "1": 2}) or JSON ([1, 2]) sends it."""
    if isinstance(value, dict):
        return [value[k] for k in sorted(value, key=lambda k: int(k) if str(k).isdigit() else 0)]
    if isinstance(value, list):
        return value
    return [] if value in (None, "") else [value]
