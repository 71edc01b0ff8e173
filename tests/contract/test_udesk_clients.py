"""Udesk signing and envelopes: the seeds' worked examples, and the clients against their
simulators over real HTTP (refusals reported clearly, validation errors never retried)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from etl.config import parse_config
from etl.connectors.udesk.knowledge import client as udesk_km
from etl.connectors.udesk.knowledge.settings import UdeskKnowledgeConnection
from etl.connectors.udesk.knowledge.simulator.server import KnowledgeServer
from etl.connectors.udesk.knowledge.simulator.store import Sizes as KnowledgeSizes
from etl.connectors.udesk.servicego import client as servicego
from etl.connectors.udesk.servicego.settings import ServiceGoConnection
from etl.connectors.udesk.servicego.simulator.server import ServiceGoServer
from etl.connectors.udesk.servicego.simulator.store import Sizes
from etl.connectors.udesk.sign import UdeskSignAuth, sign_params, sign_v1, sign_v2
from etl.core.errors import ApiError, AuthError
from tests.conftest import UDESK_TOKEN, UDESK_TOKEN_ENV, knowledge_settings, servicego_settings

TOKEN = "221b368d7f5f597867f525971f28ff75"


def test_seed_000_worked_example() -> None:
    assert sign_v1("email@udesk.cn", TOKEN, 1496631984) == "a32be53bb42314850715f8b9ab92542f5ed54c5e"


def test_seed_004_examples_are_signed_the_same_way() -> None:
    assert sign_v1("admin@udesk.cn", TOKEN, 1496631984).startswith("ef506d04")


def test_sha256_accounts_hash_the_same_text() -> None:
    expected = hashlib.sha256(f"admin@udesk.cn&{TOKEN}&1496631984".encode()).hexdigest()
    assert sign_v1("admin@udesk.cn", TOKEN, 1496631984, "sha256") == expected


def test_v2_vector() -> None:
    sign = sign_v2("admin@udesk.cn", TOKEN, 1494474404, "2d931510-d99f-494a-8c67-87feb05e1594")
    assert sign == "7b005466229d853ac9c479aef2a6bdcbf351f661bf9cf6a5c3a78cd7bd52ae82"


def test_every_request_is_signed_afresh() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"code": 1000})

    clock = iter([1000.0, 1001.0])
    client = httpx.Client(transport=httpx.MockTransport(handler),
                          auth=UdeskSignAuth("admin@udesk.cn", TOKEN, "v2", now=lambda: next(clock)))
    client.get("https://demo.udesk.cn/open_api_v1/knowledge_questions", params={"agent_id": 0})
    client.get("https://demo.udesk.cn/open_api_v1/knowledge_questions", params={"agent_id": 0})
    first, second = (dict(u.params) for u in seen)
    assert first["timestamp"] == "1000" and second["timestamp"] == "1001"
    assert first["nonce"] != second["nonce"] and first["sign_version"] == "v2"
    assert first["agent_id"] == "0"
    assert first["sign"] == sign_v2("admin@udesk.cn", TOKEN, 1000, first["nonce"])


def _sg_client(server: ServiceGoServer, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> servicego.ServiceGoClient:
    monkeypatch.setenv(UDESK_TOKEN_ENV, overrides.pop("token", UDESK_TOKEN))
    config = parse_config({"connections": {"sg": servicego_settings(server, **overrides)}})
    settings = config.connection("sg")
    assert isinstance(settings, ServiceGoConnection)
    return servicego.connect("sg", settings)


@pytest.mark.parametrize(
    ("setup", "overrides", "reason"),
    [
        ("expired", {}, "timestamp expired"),
        ("", {"token": "0" * 32}, "sign mismatch"),
        ("", {"email": "someone.else@udesk.cn"}, "unknown administrator email"),
    ],
)
def test_refused_signatures_are_reported_clearly(
    servicego_sim: Callable[..., ServiceGoServer], monkeypatch: pytest.MonkeyPatch,
    setup: str, overrides: dict[str, Any], reason: str,
) -> None:
    server = servicego_sim(Sizes(10, 10, 10))
    if setup == "expired":
        server.app.state.signer.clock_skew = 6 * 60  # the server's clock is six minutes ahead
    client = _sg_client(server, monkeypatch, **overrides)
    with pytest.raises(AuthError) as caught:
        client.scroll_search("contact", 0)
    message = str(caught.value)
    assert reason in message and "HTTP 401" in message and "servicego" in message
    assert "0" * 32 not in message and UDESK_TOKEN not in message
    assert server.stats["requests"] == 1  # refused credentials are not retried


def test_sha256_accounts_sign_with_sha256(servicego_sim: Callable[..., ServiceGoServer],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    server = servicego_sim(Sizes(10, 10, 10))
    server.state.hash_name = "sha256"
    server.app.state.signer.account.hash_name = "sha256"
    assert _sg_client(server, monkeypatch, sign_hash="sha256").scroll_search("contact", 0).total == 10
    with pytest.raises(AuthError, match="sign mismatch"):
        _sg_client(server, monkeypatch).scroll_search("contact", 0)


def test_a_validation_failure_inside_http_200_is_not_retried(servicego_sim: Callable[..., ServiceGoServer],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server = servicego_sim(Sizes(10, 10, 10))
    client = _sg_client(server, monkeypatch)
    with pytest.raises(ApiError) as caught:
        client.scroll_search("contact", 0, filter_id=99)
    assert caught.value.code == "400" and "filter 99 does not exist" in str(caught.value)
    with pytest.raises(ApiError, match="operator greater_than is not supported for field name"):
        client.scroll_search("contact", 0, conditions=[{"fieldApiName": "name", "operator": "greater_than", "value": "a"}])
    assert server.stats["requests"] == 2


def test_server_failures_are_retried(servicego_sim: Callable[..., ServiceGoServer],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    server = servicego_sim(Sizes(10, 10, 10))
    server.queue_faults("500", "code500")
    assert _sg_client(server, monkeypatch).scroll_search("contact", 0).total == 10
    assert server.stats["requests"] == 3


def test_the_list_endpoint_serves_only_10000_hits(servicego_sim: Callable[..., ServiceGoServer],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server = servicego_sim(Sizes(10, 10_050, 10))
    client = _sg_client(server, monkeypatch)
    answer = client.session.request_json("GET", "v1/datas", params={"objectApiName": "contact", "pageSize": 100,
                                                                    "pageNum": 100})
    assert len(answer.body["data"]) == 100
    with pytest.raises(ApiError, match="first 10000 hits"):
        client.session.request_json("GET", "v1/datas", params={"objectApiName": "contact", "pageSize": 100,
                                                               "pageNum": 101})


def test_scroll_pages_follow_the_largest_id(servicego_sim: Callable[..., ServiceGoServer],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    server = servicego_sim(Sizes(10, 250, 10))
    client = _sg_client(server, monkeypatch)
    ids: list[int] = []
    scroll_id = 0
    while True:
        page = client.scroll("contact", scroll_id)
        ids += [r["id"] for r in page.records]
        assert set(page.records[0]) == {"id", "createUser", "createTime", "updateUser", "updateTime", "owner"} \
            if page.records else True
        if len(page.records) < client.page_size:
            break
        scroll_id = servicego.next_scroll_id(page.records, scroll_id, "v1/datas/scroll")
    assert ids == server.state.ids["contact"]


def test_knowledge_failures_carry_the_documented_code(knowledge_sim: Callable[..., KnowledgeServer],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    server = knowledge_sim(KnowledgeSizes(questions=5))
    monkeypatch.setenv(UDESK_TOKEN_ENV, UDESK_TOKEN)
    settings = parse_config({"connections": {"kn": knowledge_settings(server)}}).connection("kn")
    assert isinstance(settings, UdeskKnowledgeConnection)
    client = udesk_km.connect("kn", settings)
    other_agents = next(c for c in server.state.catalogs.values() if c["agent_id"] == 12)
    with pytest.raises(ApiError) as caught:
        client.session.request_json("GET", "knowledge_questions", params={"catalog_id": other_agents["id"], "agent_id": 0})
    assert caught.value.code == "2000" and "does not exist under the agent's name" in str(caught.value)
    with pytest.raises(ApiError) as missing:
        client.session.request_json("PUT", "useful_links/999999", json={"name": "x", "agent_id": 0})
    assert missing.value.code == "2005"


def test_a_reused_nonce_is_refused(knowledge_sim: Callable[..., KnowledgeServer]) -> None:
    server = knowledge_sim(KnowledgeSizes(questions=5))
    params = {**sign_params(server.state.email, UDESK_TOKEN, "v2", new_nonce=lambda: "fixed-nonce"),
              "knowledge_type_name": "question", "agent_id": "0"}
    first = httpx.get(f"{server.url}/knowledge_catalogs", params=params)
    again = httpx.get(f"{server.url}/knowledge_catalogs", params=params)
    assert first.json()["code"] == 1000
    assert again.status_code == 401 and "nonce already used" in again.json()["message"]


def _write(client: servicego.ServiceGoClient, method: str, **kwargs: Any) -> Any:
    return client.session.request_json(method, "v1/data", retry=False, **kwargs).body


def test_servicego_records_are_created_with_lookups_by_external_unique_field(
        servicego_sim: Callable[..., ServiceGoServer], monkeypatch: pytest.MonkeyPatch) -> None:
    server = servicego_sim(Sizes(5, 5, 5))
    client = _sg_client(server, monkeypatch)
    state = server.state
    customer = state.ids["customer"][0]
    org_no = state.value("customer", customer, "sysOrganizationNo")
    created = _write(client, "POST", json={"objectApiName": "contact", "fieldDataList": [
        {"fieldApiName": "name", "fieldValue": "New contact"},
        {"fieldApiName": "externalId", "fieldValue": "EXT-NEW-1"},
        {"fieldApiName": "organization", "fieldValue": org_no, "foreignExternalFieldApiName": "sysOrganizationNo"},
        {"fieldApiName": "tags", "fieldValue": "t_vip,t_new"},
    ]})
    new_id = created["data"]["id"]
    entries = {e["fieldApiName"]: e for e in state.entries("contact", new_id)}
    assert entries["organization"]["fieldValue"] == str(customer)
    assert entries["organization"]["foreignDataName"] == state.value("customer", customer, "name")
    assert entries["tags"]["optionNameList"] == ["VIP", "New"]
    # found again by its unique field; the same value cannot be taken twice
    found = client.session.request_json("GET", "v1/data", params={
        "objectApiName": "contact", "uniqueFieldApiName": "externalId", "uniqueFieldValue": "EXT-NEW-1"}).body
    assert found["data"]["id"] == new_id
    with pytest.raises(ApiError, match="externalId: the value EXT-NEW-1 is already used"):
        _write(client, "POST", json={"objectApiName": "contact", "fieldDataList": [
            {"fieldApiName": "name", "fieldValue": "Twin"}, {"fieldApiName": "externalId", "fieldValue": "EXT-NEW-1"}]})


def test_servicego_updates_and_deletes_follow_the_documented_rules(
        servicego_sim: Callable[..., ServiceGoServer], monkeypatch: pytest.MonkeyPatch) -> None:
    server = servicego_sim(Sizes(5, 5, 5))
    client = _sg_client(server, monkeypatch)
    state = server.state
    contact = state.ids["contact"][0]
    before = state.value("contact", contact, "updateTime")
    _write(client, "PUT", json={"objectApiName": "contact", "uniqueFieldApiName": "externalId",
                                "uniqueFieldValue": state.value("contact", contact, "externalId"),
                                "fieldDataList": [{"fieldApiName": "name", "fieldValue": "Renamed"}]})
    assert state.value("contact", contact, "name") == "Renamed"
    assert state.value("contact", contact, "updateTime") >= before
    refusals = [
        ([{"fieldApiName": "organization", "fieldValue": str(state.ids["customer"][0])}],
         "foreignExternalFieldApiName is required for lookup fields"),
        ([{"fieldApiName": "updateTime", "fieldValue": "2020-01-01 00:00"}], "field updateTime is read-only"),
        ([{"fieldApiName": "tags", "fieldValue": "t_unknown"}], "'t_unknown' is not an option"),
        ([{"fieldApiName": "birthday", "fieldValue": "31.12.2000"}], "is not a date (yyyy-MM-dd)"),
        ([{"fieldApiName": "shoeSize", "fieldValue": "42"}], "field shoeSize does not exist on object contact"),
    ]
    for items, message in refusals:
        with pytest.raises(ApiError, match=re.escape(message)) as refused:
            _write(client, "PUT", json={"objectApiName": "contact", "id": contact, "fieldDataList": items})
        assert refused.value.code == "400"
    _write(client, "DELETE", params={"objectApiName": "contact", "id": contact})
    assert contact not in state.records["contact"]
    with pytest.raises(ApiError) as gone:
        _write(client, "DELETE", params={"objectApiName": "contact", "id": contact})
    assert gone.value.code == "404"


def test_km_entities_are_written_with_value_level_changes(knowledge_sim: Callable[..., KnowledgeServer],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    server = knowledge_sim(KnowledgeSizes(questions=5, entities=2))
    monkeypatch.setenv(UDESK_TOKEN_ENV, UDESK_TOKEN)
    settings = parse_config({"connections": {"kn": knowledge_settings(server)}}).connection("kn")
    assert isinstance(settings, UdeskKnowledgeConnection)
    km = udesk_km.connect("kn", settings).km
    assert km is not None
    created = km.request_json("POST", "v1/entity", json={"robotId": 83, "name": "City", "apiName": "city"}).body["data"]
    entity_id = created["id"]
    assert created["valueList"] is None
    spec = {"robotId": 83, "name": "City", "apiName": "city"}
    added = km.request_json("PUT", f"v1/entity/{entity_id}", json={**spec, "valueList": [
        {"changeType": 1, "originalValue": "Beijing", "similarValueList": ["Peking"]},
        {"changeType": 1, "originalValue": "Shanghai", "similarValueList": []}]}).body["data"]["valueList"]
    beijing = next(v for v in added if v["originalValue"] == "Beijing")
    shanghai = next(v for v in added if v["originalValue"] == "Shanghai")
    after = km.request_json("PUT", f"v1/entity/{entity_id}", json={**spec, "valueList": [
        {"changeType": 2, "id": beijing["id"], "originalValue": "Beijing", "similarValueList": ["Peking", "BJ"]},
        {"changeType": 3, "id": shanghai["id"]}]}).body["data"]["valueList"]
    assert after == [{"id": beijing["id"], "originalValue": "Beijing", "similarValueList": ["Peking", "BJ"]}]
    km.request_json("PUT", f"v1/entity/{entity_id}/status/1")
    assert server.state.entities[entity_id]["status"] == 1
    with pytest.raises(ApiError, match="apiName can only be letters"):
        km.request_json("POST", "v1/entity", json={"robotId": 83, "name": "Bad", "apiName": "bad name"})
    with pytest.raises(ApiError, match="apiName city already exists"):
        km.request_json("POST", "v1/entity", json={"robotId": 83, "name": "Again", "apiName": "city"})
    km.request_json("DELETE", f"v1/entity/{entity_id}", params={"force": 0})
    with pytest.raises(ApiError, match="Entity not exists"):
        km.request_json("GET", f"v1/entity/{entity_id}")
