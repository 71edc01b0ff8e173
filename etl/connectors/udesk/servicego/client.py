"""Udesk ServiceGo records API (seed 004): envelopes, scroll and scroll-search pages.

Quirks handled here, once:
- Every answer is {"code", "message", "visible", "paging", "data"}; a code other than 200 is a
  failure even inside HTTP 200. Codes 401/403 are refused credentials, 429 the rate limit,
  5xx retried, anything else (400 validation, 404) reported with the remote's message and
  never retried.
- /v1/datas and /v1/datas/search serve only the first 10,000 hits, so extraction never uses
  them: full records come from POST /v1/datas/scrollSearch, ids from GET /v1/datas/scroll.
- Scrolling: the next scrollId is the largest id of the page; `next_scroll_id` refuses a page
  that does not move forward, so a misbehaving server cannot loop us forever.
- The server's clock (the HTTP Date header) is kept with each page: incremental windows are
  measured on the clock that stamps updateTime, not ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from etl.connectors.udesk.envelope import check_envelope, parse_error
from etl.connectors.udesk.servicego.settings import Condition, ServiceGoConnection
from etl.connectors.udesk.sign import new_limiter, signed_session
from etl.core.errors import MalformedResponse
from etl.core.http.ratelimit import RateLimiter
from etl.core.http.session import OneSessionClient, Session

SYSTEM = "servicego"
SCROLL_SEARCH = "v1/datas/scrollSearch"
SCROLL = "v1/datas/scroll"


@dataclass(frozen=True)
class ScrollPage:
    records: list[dict[str, Any]]
    total: int  # records matching the filter and conditions (all of them, not only after scrollId)
    server_time: datetime | None  # from the Date header
    content: bytes = b""  # the answer as received: its "data" are the records


def _server_time(headers: httpx.Headers) -> datetime | None:
    value = headers.get("date")
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def parse_scroll_page(body: Any, path: str) -> list[dict[str, Any]]:
    data = body.get("data")
    if data is None:
        return []
    if not isinstance(data, list):
        raise MalformedResponse(SYSTEM, f"'data' is a {type(data).__name__}, expected an array", path=path)
    for record in data:
        if not isinstance(record, dict) or not isinstance(record.get("id"), int):
            raise MalformedResponse(SYSTEM, f"a record has no integer 'id': {str(record)[:80]}", path=path)
    return data


def next_scroll_id(records: list[dict[str, Any]], previous: int, path: str) -> int:
    """Seed 004: the next scrollId is the largest id of the previous page."""
    largest = max(r["id"] for r in records)
    if largest <= previous:
        raise MalformedResponse(SYSTEM, f"scroll did not advance (largest id {largest} after scrollId {previous})",
                                path=path)
    return int(largest)


def conditions_body(conditions: tuple[Condition, ...]) -> list[dict[str, str]]:
    return [{"fieldApiName": c.field, "operator": c.operator, "value": c.value} for c in conditions]


class ServiceGoClient(OneSessionClient):
    def __init__(self, session: Session, page_size: int = 100) -> None:
        super().__init__(session)
        self.page_size = page_size

    def _total(self, body: Any, path: str) -> int:
        paging = body.get("paging")
        if not isinstance(paging, dict) or not isinstance(paging.get("total"), int):
            raise MalformedResponse(SYSTEM, "answer has no paging.total", path=path)
        return int(paging["total"])

    def scroll_search(self, obj: str, scroll_id: int, *, filter_id: int | None = None,
                      conditions: list[dict[str, str]] | None = None, judge_strategy: int = 1,
                      custom_judge_logic: str | None = None, page_size: int | None = None) -> ScrollPage:
        body: dict[str, Any] = {"objectApiName": obj, "scrollId": scroll_id, "pageSize": page_size or self.page_size}
        if filter_id is not None:
            body["filterId"] = filter_id
        if conditions:
            body["conditionList"] = conditions
            body["judgeStrategy"] = judge_strategy
            if judge_strategy == 3:
                body["customJudgeLogic"] = custom_judge_logic
        response = self.session.request_json("POST", SCROLL_SEARCH, json=body)
        return ScrollPage(parse_scroll_page(response.body, SCROLL_SEARCH), self._total(response.body, SCROLL_SEARCH),
                          _server_time(response.headers), response.content)

    def scroll(self, obj: str, scroll_id: int, *, filter_id: int | None = None) -> ScrollPage:
        params: dict[str, Any] = {"objectApiName": obj, "scrollId": scroll_id, "pageSize": self.page_size}
        if filter_id is not None:
            params["filterId"] = filter_id
        response = self.session.request_json("GET", SCROLL, params=params)
        return ScrollPage(parse_scroll_page(response.body, SCROLL), self._total(response.body, SCROLL),
                          _server_time(response.headers))

    def related(self, parent_obj: str, parent_id: int, obj: str, filter_id: int | None = None) -> list[dict[str, Any]]:
        """Every record of `obj` related to one parent record (GET v1/data/relatedDatas, paged)."""
        path = "v1/data/relatedDatas"
        records: list[dict[str, Any]] = []
        page = 1
        while True:
            params: dict[str, Any] = {"dataId": parent_id, "objectApiName": obj, "parentObjectApiName": parent_obj,
                                      "pageNum": page, "pageSize": self.page_size}
            if filter_id is not None:
                params["filterId"] = filter_id
            body = self.session.request_json("GET", path, params=params).body
            data = parse_scroll_page(body, path)
            records.extend(data)
            if not data or len(records) >= self._total(body, path):
                return records
            page += 1

    def relations(self, major_id: int, ui_id: int) -> list[dict[str, Any]]:
        """A record's relations (GET v1/selfObjectRelationData, paged; its paging is inside data)."""
        path = "v1/selfObjectRelationData"
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.session.request_json("GET", path, params={
                "majorDataId": major_id, "uiId": ui_id, "pageNum": page, "pageSize": self.page_size}).body
            data = body.get("data")
            if not isinstance(data, dict) or not isinstance(data.get("fieldDataList", []), list):
                raise MalformedResponse(SYSTEM, "answer has no data.fieldDataList", path=path)
            chunk = data.get("fieldDataList") or []
            rows.extend(chunk)
            total = data.get("total")
            if not chunk or not isinstance(total, int) or len(rows) >= total:
                return rows
            page += 1



def new_limiters(conn: ServiceGoConnection) -> dict[str, RateLimiter]:
    return {"main": new_limiter(SYSTEM, conn.rate_limit.per_minute, conn.rate_limit.window_seconds)}


def connect(name: str, conn: ServiceGoConnection, transport: httpx.BaseTransport | None = None,
            limiters: dict[str, RateLimiter] | None = None) -> ServiceGoClient:
    limiter = (limiters or new_limiters(conn))["main"]
    session = signed_session(
        SYSTEM, conn.base_url, conn.email, conn.api_token(name), conn.sign_hash,
        per_minute=conn.rate_limit.per_minute, window_seconds=conn.rate_limit.window_seconds, retry=conn.retry,
        timeout=conn.timeout_seconds, envelope=check_envelope, parse_error=parse_error, transport=transport,
        limiter=limiter,
    )
    return ServiceGoClient(session, conn.page_size)
