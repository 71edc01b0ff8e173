"""What other libraries log comes out as desksync's own lines do: one format, one secret filter."""

from __future__ import annotations

import io
import json
import logging
import warnings

from etl.core import log


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_library_records_and_warnings_are_json_lines_without_secrets() -> None:
    stream = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        log.configure("info", json=True, stream=stream)
        try:
            logging.getLogger("kombu.connection").warning("Cannot connect to redis://:s3cret-pass@10.0.0.5:6379/0")
            logging.getLogger("httpx").info("HTTP Request: GET ...")  # a library's chatter stays out
            warnings.warn("You're running the worker with superuser privileges", UserWarning, stacklevel=1)
            try:
                raise ConnectionError("postgresql://desksync:pg-pass@db/mirror refused")
            except ConnectionError:
                logging.getLogger("celery.worker").exception("consumer failed")
        finally:
            log.configure("warning", json=True)
    lines = _lines(stream)
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("kombu.connection", "warning"), ("py.warnings", "warning"), ("celery.worker", "error")]
    assert all(line["event"] == "library_message" for line in lines)
    assert "superuser privileges" in str(lines[1]["message"])
    text = stream.getvalue()
    assert "s3cret-pass" not in text and "pg-pass" not in text
    assert "redis://:***@10.0.0.5:6379/0" in text and "ConnectionError" in str(lines[2]["exception"])
